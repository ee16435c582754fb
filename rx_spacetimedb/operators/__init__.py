"""Rx operators of rx_spacetimedb: one small private module per operator, re-exported here."""

from rx_spacetimedb.operators._backoff import ExponentialBackoff, RetryAttempt, exponential_backoff
from rx_spacetimedb.operators._cache_diffs import cache_diffs
from rx_spacetimedb.operators._live_table import LiveTable, live_table
from rx_spacetimedb.operators._observe_on_bounded import SlowConsumer, observe_on_bounded
from rx_spacetimedb.operators._of_type import of_type
from rx_spacetimedb.operators._reducer_results import ReducerResult, ReducerStatus, reducer_results
from rx_spacetimedb.operators._retry_when import retry_when
from rx_spacetimedb.operators._simple import identity_tokens, one_off_results, subscription_errors
from rx_spacetimedb.operators._table_diffs import table_diffs
from rx_spacetimedb.operators._transactions import transactions

__all__ = [
    "ExponentialBackoff",
    "RetryAttempt",
    "exponential_backoff",
    "retry_when",
    "LiveTable",
    "ReducerResult",
    "ReducerStatus",
    "cache_diffs",
    "identity_tokens",
    "live_table",
    "SlowConsumer",
    "observe_on_bounded",
    "of_type",
    "one_off_results",
    "reducer_results",
    "subscription_errors",
    "table_diffs",
    "transactions",
]
