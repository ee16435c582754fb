"""rx_spacetimedb: a reactive (ReactiveX) Python client for SpacetimeDB.

``connect(...)`` returns a ``Connection`` whose ``messages`` is a hot Observable of typed message
dataclasses that survives reconnects; requests return ``Request`` handles; operators in
``rx_spacetimedb.operators`` compose typed streams; ``rx_spacetimedb.testing`` is an embedded,
protocol-faithful SpacetimeDB for tests and demos.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rx_spacetimedb.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionClosed,
    ConnectionClosedByUser,
    ConnectionRejected,
    ConnectTimeout,
    CredentialsError,
    DatabaseNotFound,
    HandshakeError,
    OutOfEnergy,
    ProcedureFailed,
    ProtocolError,
    QueryFailed,
    ReducerFailed,
    RequestAborted,
    RequestError,
    RequestTimeout,
    SchemaError,
    SpacetimeDBError,
    SubscriptionFailed,
    TransportError,
)
from rx_spacetimedb.protocol.messages import FULL_UPDATE, NO_SUCCESS_NOTIFY
from rx_spacetimedb.protocol.schema import ModuleSchema

if TYPE_CHECKING:
    from rx_spacetimedb._options import ConnectOptions
    from rx_spacetimedb.cache import ClientCache, TableDiff, TransactionDiff
    from rx_spacetimedb.connection import Connection, ConnectionState, OneOffResult, connect
    from rx_spacetimedb.credentials import CredentialStore
    from rx_spacetimedb.operators import LiveTable, ReducerResult
    from rx_spacetimedb.requests import Request

# The I/O layers (asyncio, websockets, reactivex) load on first use, so that importing the sans-I/O
# protocol layer (``rx_spacetimedb.protocol``) pulls in none of them.
_LAZY = {
    "ClientCache": "rx_spacetimedb.cache",
    "TableDiff": "rx_spacetimedb.cache",
    "TransactionDiff": "rx_spacetimedb.cache",
    "ConnectOptions": "rx_spacetimedb._options",
    "Connection": "rx_spacetimedb.connection",
    "ConnectionState": "rx_spacetimedb.connection",
    "OneOffResult": "rx_spacetimedb.connection",
    "connect": "rx_spacetimedb.connection",
    "CredentialStore": "rx_spacetimedb.credentials",
    "LiveTable": "rx_spacetimedb.operators",
    "ReducerResult": "rx_spacetimedb.operators",
    "Request": "rx_spacetimedb.requests",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rx_spacetimedb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "FULL_UPDATE",
    "NO_SUCCESS_NOTIFY",
    "AuthenticationFailed",
    "BadRequest",
    "ClientCache",
    "ConnectOptions",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedByUser",
    "ConnectionRejected",
    "ConnectionState",
    "ConnectTimeout",
    "CredentialStore",
    "CredentialsError",
    "DatabaseNotFound",
    "HandshakeError",
    "LiveTable",
    "ModuleSchema",
    "OneOffResult",
    "OutOfEnergy",
    "ProcedureFailed",
    "ProtocolError",
    "QueryFailed",
    "ReducerFailed",
    "ReducerResult",
    "Request",
    "RequestAborted",
    "RequestError",
    "RequestTimeout",
    "SchemaError",
    "SpacetimeDBError",
    "SubscriptionFailed",
    "TableDiff",
    "TransactionDiff",
    "TransportError",
    "__version__",
    "connect",
]
