"""rx_spacetimedb: a reactive (ReactiveX) Python client for SpacetimeDB.

``connect(...)`` returns a ``Connection`` whose ``messages`` is a hot Observable of typed message
dataclasses that survives reconnects; requests return ``Request`` handles; operators in
``rx_spacetimedb.operators`` compose typed streams; ``rx_spacetimedb.testing`` is an embedded,
protocol-faithful SpacetimeDB for tests and demos.
"""

from rx_spacetimedb.cache import ClientCache, TableDiff, TransactionDiff
from rx_spacetimedb.connection import Connection, ConnectionState, OneOffResult, connect
from rx_spacetimedb.credentials import CredentialStore
from rx_spacetimedb.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionClosed,
    ConnectionClosedByUser,
    ConnectionRejected,
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
from rx_spacetimedb.operators import LiveTable, ReducerResult
from rx_spacetimedb.protocol.messages import FULL_UPDATE, NO_SUCCESS_NOTIFY
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.requests import Request

__version__ = "0.1.0"

__all__ = [
    "FULL_UPDATE",
    "NO_SUCCESS_NOTIFY",
    "AuthenticationFailed",
    "BadRequest",
    "ClientCache",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedByUser",
    "ConnectionRejected",
    "ConnectionState",
    "CredentialStore",
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
