"""Every message of ``v1.json.spacetimedb`` as a frozen, slotted dataclass.

Rows stay JSON text (``QueryUpdate.inserts`` are strings): decode them with a ``ModuleSchema``
when they are needed, since most consumers read only some tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rx_spacetimedb.protocol.values import ConnectionId, EnergyQuanta, Identity, TimeDuration, Timestamp

__all__ = [
    "CallProcedure",
    "CallReducer",
    "ClientMessage",
    "Committed",
    "DatabaseUpdate",
    "Delivered",
    "Failed",
    "IdentityToken",
    "InitialSubscription",
    "InternalError",
    "OneOffQuery",
    "OneOffQueryResponse",
    "OneOffTable",
    "OutOfEnergy",
    "ProcedureOutOfEnergy",
    "ProcedureResult",
    "ProcedureStatus",
    "QueryUpdate",
    "ReducerCallInfo",
    "Returned",
    "ServerMessage",
    "Subscribe",
    "SubscribeApplied",
    "SubscribeMulti",
    "SubscribeMultiApplied",
    "SubscribeRows",
    "SubscribeSingle",
    "SubscriptionError",
    "TableUpdate",
    "TransactionUpdate",
    "TransactionUpdateLight",
    "UnknownServerMessage",
    "Unsubscribe",
    "UnsubscribeApplied",
    "UnsubscribeMulti",
    "UnsubscribeMultiApplied",
    "UpdateStatus",
    "NO_SUCCESS_NOTIFY",
    "FULL_UPDATE",
]

FULL_UPDATE = 0
"""``CallReducer.flags``: the caller always hears the outcome."""
NO_SUCCESS_NOTIFY = 1
"""``CallReducer.flags``: the caller hears only what touches its subscriptions (§7.4)."""

_slots = {"frozen": True, "slots": True}


# -- shared structures -----------------------------------------------------------------------


@dataclass(**_slots)
class QueryUpdate:
    """Rows one query lost and gained; each row is a JSON text (stored-row or untyped shape)."""

    deletes: tuple[str, ...] = ()
    inserts: tuple[str, ...] = ()


@dataclass(**_slots)
class TableUpdate:
    """All changes to one table; ``num_rows`` counts deletes + inserts over all ``updates``."""

    table_id: int
    table_name: str
    num_rows: int
    updates: tuple[QueryUpdate, ...]


@dataclass(**_slots)
class DatabaseUpdate:
    """Changes to several tables."""

    tables: tuple[TableUpdate, ...] = ()


@dataclass(**_slots)
class ReducerCallInfo:
    """Which reducer ran: its name, id, argument text (JSON) and the caller's request id."""

    reducer_name: str
    reducer_id: int
    args: str
    request_id: int


@dataclass(**_slots)
class Committed:
    """The reducer committed; ``update`` holds the changes to rows this client subscribes to."""

    update: DatabaseUpdate


@dataclass(**_slots)
class Failed:
    """The reducer returned an error (or could not start); nothing changed."""

    message: str


@dataclass(**_slots)
class OutOfEnergy:
    """The reducer ran out of energy; nothing changed."""


UpdateStatus = Committed | Failed | OutOfEnergy


@dataclass(**_slots)
class Returned:
    """The procedure returned; ``value`` is its return value as JSON text (untyped shape)."""

    value: str


@dataclass(**_slots)
class ProcedureOutOfEnergy:
    """The procedure ran out of energy."""


@dataclass(**_slots)
class InternalError:
    """The procedure could not run or raised; ``message`` says why."""

    message: str


ProcedureStatus = Returned | ProcedureOutOfEnergy | InternalError


@dataclass(**_slots)
class SubscribeRows:
    """The rows of one ``SubscribeApplied``/``UnsubscribeApplied``."""

    table_id: int
    table_name: str
    table_rows: TableUpdate


@dataclass(**_slots)
class OneOffTable:
    """The rows of a one-off query's table."""

    table_name: str
    rows: tuple[str, ...]


# -- server messages -------------------------------------------------------------------------


class Delivered:
    """Base of every server message: one slot a connection fills when it delivers the message.

    ``_delivery`` holds what the connection knew then (its schema, the net change its client cache
    computed, its own connection id: ``rx_spacetimedb.delivery``), so operators downstream of
    ``conn.messages`` need no state of their own. It is not a field: not compared, shown or pickled.
    """

    __slots__ = ("_delivery",)


@dataclass(**_slots)
class IdentityToken(Delivered):
    """Always the first message: who we are, our token and this connection's id."""

    identity: Identity
    token: str = field(repr=False)
    connection_id: ConnectionId


@dataclass(**_slots)
class InitialSubscription(Delivered):
    """Answer to a legacy ``Subscribe``: every row of the new subscription set."""

    database_update: DatabaseUpdate
    request_id: int
    total_host_execution_duration: TimeDuration


@dataclass(**_slots)
class TransactionUpdate(Delivered):
    """A transaction: the caller's outcome, or a change to rows this client subscribes to."""

    status: UpdateStatus
    timestamp: Timestamp
    caller_identity: Identity
    caller_connection_id: ConnectionId
    reducer_call: ReducerCallInfo
    energy_quanta_used: EnergyQuanta
    total_host_execution_duration: TimeDuration


@dataclass(**_slots)
class TransactionUpdateLight(Delivered):
    """A transaction of another client, without reducer details."""

    request_id: int
    update: DatabaseUpdate


@dataclass(**_slots)
class OneOffQueryResponse(Delivered):
    """Answer to ``OneOffQuery``: the rows, or ``error``."""

    message_id: bytes
    error: str | None
    tables: tuple[OneOffTable, ...]
    total_host_execution_duration: TimeDuration


@dataclass(**_slots)
class SubscribeApplied(Delivered):
    """Answer to ``SubscribeSingle``: every row the query matches now."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: int
    rows: SubscribeRows


@dataclass(**_slots)
class UnsubscribeApplied(Delivered):
    """Answer to ``Unsubscribe``: the rows to remove."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: int
    rows: SubscribeRows


@dataclass(**_slots)
class SubscriptionError(Delivered):
    """A subscription failed; without ``request_id`` every subscription of the connection ended."""

    total_host_execution_duration_micros: int
    request_id: int | None
    query_id: int | None
    table_id: int | None
    error: str


@dataclass(**_slots)
class SubscribeMultiApplied(Delivered):
    """Answer to ``SubscribeMulti``: rows of the queries this request added."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: int
    update: DatabaseUpdate


@dataclass(**_slots)
class UnsubscribeMultiApplied(Delivered):
    """Answer to ``UnsubscribeMulti``: rows of the queries this request released."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: int
    update: DatabaseUpdate


@dataclass(**_slots)
class ProcedureResult(Delivered):
    """Answer to ``CallProcedure``."""

    status: ProcedureStatus
    timestamp: Timestamp
    total_host_execution_duration: TimeDuration
    request_id: int


@dataclass(**_slots)
class UnknownServerMessage(Delivered):
    """A message variant this client does not know (from a newer server): tag and raw payload."""

    tag: str
    payload: Any = field(repr=False)
    raw: str | bytes = field(repr=False, compare=False)


ServerMessage = (
    IdentityToken
    | InitialSubscription
    | TransactionUpdate
    | TransactionUpdateLight
    | OneOffQueryResponse
    | SubscribeApplied
    | UnsubscribeApplied
    | SubscriptionError
    | SubscribeMultiApplied
    | UnsubscribeMultiApplied
    | ProcedureResult
    | UnknownServerMessage
)


# -- client messages -------------------------------------------------------------------------


@dataclass(**_slots)
class CallReducer:
    """Call a reducer; ``args`` is JSON text (array by position or object by name)."""

    reducer: str
    args: str
    request_id: int
    flags: int = FULL_UPDATE


@dataclass(**_slots)
class CallProcedure:
    """Call a procedure; ``args`` as for ``CallReducer``. ``flags`` must be 0."""

    procedure: str
    args: str
    request_id: int
    flags: int = 0


@dataclass(**_slots)
class Subscribe:
    """Legacy subscribe: replace the whole legacy subscription set."""

    query_strings: tuple[str, ...]
    request_id: int


@dataclass(**_slots)
class SubscribeSingle:
    """Add one query under ``query_id``."""

    query: str
    request_id: int
    query_id: int


@dataclass(**_slots)
class SubscribeMulti:
    """Add several queries under one ``query_id``."""

    query_strings: tuple[str, ...]
    request_id: int
    query_id: int


@dataclass(**_slots)
class Unsubscribe:
    """Drop a ``SubscribeSingle``."""

    request_id: int
    query_id: int


@dataclass(**_slots)
class UnsubscribeMulti:
    """Drop a ``SubscribeMulti`` (or any query id)."""

    request_id: int
    query_id: int


@dataclass(**_slots)
class OneOffQuery:
    """Run one query once; the answer carries the same ``message_id`` bytes."""

    message_id: bytes
    query_string: str


ClientMessage = (
    CallReducer | CallProcedure | Subscribe | SubscribeSingle | SubscribeMulti
    | Unsubscribe | UnsubscribeMulti | OneOffQuery
)
