"""rx_spacetimedb: a reactive (ReactiveX) Python client for SpacetimeDB."""

from rx_spacetimedb.errors import SpacetimeDBError

__all__ = ["SpacetimeDBError"]
