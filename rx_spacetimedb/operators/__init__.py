"""Rx operators of rx_spacetimedb: one small private module per operator, re-exported here."""

from rx_spacetimedb.operators._backoff import ExponentialBackoff, RetryAttempt, exponential_backoff
from rx_spacetimedb.operators._retry_when import retry_when

__all__ = [
    "ExponentialBackoff",
    "RetryAttempt",
    "exponential_backoff",
    "retry_when",
]
