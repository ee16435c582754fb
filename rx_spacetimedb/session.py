"""The sans-I/O session: request ids, pending requests, subscriptions and the identity handshake.

The shape of h11's ``Connection`` or websockets' ``protocol.py``: server messages go in
(``receive``), and what to do comes out as plain values (``Events``: frames to send, requests to
settle or fail with their values and errors, the cache's diffs, the new identity). No threads,
locks, asyncio or Rx in here, so every rule is tested with canned messages (tests/test_session.py).

The ``Connection`` owns the socket, the streams and the lock, and pumps one ``Session``:
``socket_opened``/``socket_closed`` as sockets come and go, ``receive`` per message, the request
methods per user call, ``end`` when the connection ends. Requests are opaque handles here: the
session reads and sets their ``id``/``sent``, the connection settles them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from rx_spacetimedb._subscriptions import LegacySet, QuerySet
from rx_spacetimedb.cache import ClientCache, TransactionDiff
from rx_spacetimedb.errors import (
    OutOfEnergy,
    ProcedureFailed,
    ProtocolError,
    QueryFailed,
    ReducerFailed,
    RequestAborted,
    SchemaError,
    SpacetimeDBError,
    SubscriptionFailed,
)
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.schema import ModuleSchema, ProcedureDef, ReducerDef, decode_json
from rx_spacetimedb.protocol.types import ProductType

__all__ = ["Events", "Handle", "OneOffResult", "Session", "TokenSource"]

_U32 = 1 << 32
# The messages that answer a request of ours (see _stray_answer).
_ANSWERS = (m.SubscribeApplied, m.SubscribeMultiApplied, m.UnsubscribeApplied, m.UnsubscribeMultiApplied,
            m.InitialSubscription, m.ProcedureResult, m.OneOffQueryResponse)
_SUBSCRIPTION_ANSWERS = (m.SubscribeApplied, m.SubscribeMultiApplied, m.UnsubscribeApplied,
                         m.UnsubscribeMultiApplied, m.InitialSubscription, m.SubscriptionError)

TokenSource = Literal["user", "file", "minted"]
"""Where the token came from: ``token=``, a credentials file, or minted by the server for us."""


class Handle(Protocol):
    """What the session needs of a request handle (``rx_spacetimedb.requests.Request`` is one)."""

    kind: str
    id: Any
    name: str
    sent: bool


H = TypeVar("H", bound=Handle)
_F = TypeVar("_F", bound=m.ClientMessage)


@dataclass(frozen=True, slots=True)
class OneOffResult:
    """The rows of a one-off query (decoded with the schema when the connection has one)."""

    table_name: str
    rows: tuple[Any, ...]
    response: m.OneOffQueryResponse


class Events(Generic[H]):
    """What one server message calls for, in the order the connection must do it.

    ``connected``: this message identified the socket (set the state, emit the identity), then
    ``send`` the frames; deliver the message stamped with ``diffs`` (unless not ``trusted``: then
    it is still seen, never folded); then ``settle`` and ``fail`` requests. ``reports`` are
    problems that do not end anything.
    """

    __slots__ = ("connected", "diffs", "fail", "reports", "reset", "save_token", "send", "settle", "trusted")

    def __init__(self) -> None:
        self.trusted = True
        self.diffs: list[TransactionDiff] = []
        self.reports: list[Exception] = []
        self.send: list[m.ClientMessage] = []
        self.settle: list[tuple[H, Any]] = []
        self.fail: list[tuple[H, Exception]] = []
        self.connected: m.IdentityToken | None = None
        self.reset = ""  # why this identity is a new one, if it is
        self.save_token: str | None = None  # a token the server minted for us, to keep


class Session(Generic[H]):
    """One connection's protocol state across its sockets (not thread-safe: the caller locks)."""

    def __init__(self, cache: ClientCache, *, schema: ModuleSchema | None, token: str | None,
                 token_source: TokenSource | None, reconnect: bool, max_queued: int) -> None:
        self.cache = cache
        self.schema = schema
        self.token = token
        self.token_source = token_source
        self.identity_token: m.IdentityToken | None = None  # of the current (or last) socket
        # Why the connection ended (a fatal error, or close()): every request then fails at once.
        self.fatal: Exception | None = None
        self._reconnect = reconnect
        self._max_queued = max_queued
        self._identity_reset = ""  # why the next IdentityToken is a new identity, if it is
        self._identified = False  # IdentityToken seen on the current socket: requests go out now
        self._lost = False  # the last socket ended and no new one is open
        self._connected_once = False
        self._next_request_id = 1
        self._next_query_id = 1
        self._queued: deque[tuple[m.ClientMessage, H | None]] = deque()
        self._reducer_calls: dict[int, H] = {}
        self._procedure_calls: dict[int, H] = {}
        self._one_offs: dict[bytes, H] = {}
        # The subscriptions, shared with the cache (their handles are ``H``): re-sent after
        # every reconnect; the cache folds the answers' effects into it.
        self._table = cache.subscriptions
        # Ids whose requests ended without their answer (timeout): a late answer is no stranger.
        self._settled: deque[str] = deque(maxlen=1024)

    @property
    def connected(self) -> bool:
        """A socket is open and identified: requests are sent at once."""
        return self._identified

    # -- sockets and the end -------------------------------------------------------------

    def socket_opened(self) -> None:
        """A new socket is open; nothing is sent on it before its ``IdentityToken``."""
        self._identified = False
        self._lost = False

    def socket_closed(self) -> list[H]:
        """The socket ended: the requests sent on it, which the next socket will never answer."""
        self._identified = False
        self._lost = True
        aborted: list[H] = []
        tables: tuple[dict[Any, H], ...] = (self._reducer_calls, self._procedure_calls, self._one_offs)
        for table in tables:
            for key, request in list(table.items()):
                if request.sent:
                    aborted.append(request)
                    del table[key]
        for query_set in list(self._table.sets.values()):
            if query_set.unsubscribing:  # gone with the socket either way
                self._table.remove(query_set.query_id)
                aborted.append(query_set.unsubscribe)
        return aborted

    def end(self, error: Exception, *, replace: bool = True) -> list[H]:
        """The connection ended with ``error`` (kept unless ``replace`` is False and one is set):
        every pending request, which the caller fails."""
        if replace or self.fatal is None:
            self.fatal = error
        self._identified = False
        taken: list[H] = []
        for table in (self._reducer_calls, self._procedure_calls, self._one_offs):
            taken.extend(table.values())
            table.clear()
        for query_set in self._table.sets.values():
            taken.append(query_set.request)
            if query_set.unsubscribe is not None:
                taken.append(query_set.unsubscribe)
        if self._table.legacy is not None:
            taken.append(self._table.legacy.request)
        self._table.clear()
        taken.extend(r for _, r in self._queued if r is not None)
        self._queued.clear()
        return taken

    def check_open(self) -> None:
        """Raise the error that ended the connection: no request waits for an answer that cannot come."""
        if self.fatal is not None:
            raise self.fatal.with_traceback(None)

    # -- tokens ----------------------------------------------------------------------------

    def forget_minted_token(self, why: str) -> bool:
        """Drop a token the server minted and now rejects (a reset dev server); False if it was
        not minted (then the rejection is fatal)."""
        if self.token_source != "minted":
            return False
        self._identity_reset = why
        self.token, self.token_source = None, None
        return True

    # -- requests --------------------------------------------------------------------------

    def new_request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id = request_id % (_U32 - 1) + 1  # u32, never 0 (0 means "no request")
        return request_id

    def new_query_id(self) -> int:
        query_id = self._next_query_id
        self._next_query_id = query_id % (_U32 - 1) + 1
        return query_id

    def submit(self, frame: m.CallReducer | m.CallProcedure | m.OneOffQuery, request: H) -> bool:
        """Take a call or one-off query: True to send ``frame`` now, False when it was queued.

        Raises:
            The error that ended the connection, or ``RequestAborted`` when it cannot be queued.
        """
        self.check_open()
        if not self._identified:
            if not self._reconnect and self._lost:
                raise RequestAborted("not connected and reconnect=False")
            if len(self._queued) >= self._max_queued:
                raise RequestAborted(f"not connected and {self._max_queued} requests are already queued")
        if isinstance(frame, m.CallReducer):
            if frame.flags == m.FULL_UPDATE:
                self._reducer_calls[frame.request_id] = request
        elif isinstance(frame, m.CallProcedure):
            self._procedure_calls[frame.request_id] = request
        else:
            self._one_offs[frame.message_id] = request
        if self._identified:
            request.sent = True
            return True
        self._queued.append((frame, request))
        return False

    def expire(self, request: H) -> None:
        """A request ended without its answer (timeout): forget it, and expect a late answer."""
        self._forget(request)
        key = request.id.hex() if isinstance(request.id, bytes) else request.id
        self._settled.append(f"{'message' if isinstance(request.id, bytes) else 'request'}_id {key}")

    def _forget(self, request: H) -> None:
        tables: tuple[dict[Any, H], ...] = (self._reducer_calls, self._procedure_calls, self._one_offs)
        for table in tables:
            if table.get(request.id) is request:
                del table[request.id]

    def unknown(self, kind: str, name: str) -> str | None:
        """Why the module has no such reducer/procedure (in the server's words), or None."""
        schema = self.schema
        if schema is None:
            return None  # the server will say, with the same words
        declared = _declared(schema, kind)
        return None if name in declared else f"no such {kind}; the module has {sorted(declared)}"

    def params(self, kind: str, name: str) -> ProductType | None:
        """The parameters of a reducer/procedure that ``unknown`` found; None without a schema."""
        schema = self.schema
        return None if schema is None else _declared(schema, kind)[name].params

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe_legacy(self, texts: tuple[str, ...], request: H) -> tuple[m.Subscribe | None, H | None]:
        """Replace the legacy set: the frame to send now (or None) and the replaced request."""
        self.check_open()
        previous = self._table.legacy
        if previous is not None:  # its answer may still be on the way: not a stranger then
            self._settled.append(f"request_id {previous.request_id}")
        self._table.set_legacy(LegacySet(texts, request.id, request))
        return self._sent(m.Subscribe(texts, request.id), request), previous.request if previous else None

    def subscribe(self, queries: tuple[str, ...], multi: bool, request: H
                  ) -> m.SubscribeSingle | m.SubscribeMulti | None:
        """Add a SubscribeSingle/SubscribeMulti under ``request.id`` (its query id); the frame to
        send now, or None (the next ``IdentityToken`` sends it; so does a ``subscribe_all`` made
        before the schema, with no ``queries`` yet)."""
        self.check_open()
        query_id = request.id
        self._table.add(QuerySet(query_id, queries, multi, request))
        if not queries:
            return None
        if multi:
            return self._sent(m.SubscribeMulti(queries, self.new_request_id(), query_id), request)
        return self._sent(m.SubscribeSingle(queries[0], self.new_request_id(), query_id), request)

    def _sent(self, frame: _F, request: H) -> _F | None:
        if not self._identified:
            return None
        request.sent = True
        return frame

    def unsubscribe(self, query_id: int, request: H) -> m.Unsubscribe | m.UnsubscribeMulti | None:
        """Drop a subscription: the frame to send now, or None when dropping it locally was the
        whole job (not on the server yet, or any more: the next resync leaves its rows out).

        Raises:
            ValueError: no live subscription has this query id.
        """
        self.check_open()
        sub = self._table.sets.get(query_id)
        if sub is None or sub.request is None:
            raise ValueError(f"query_id: no live subscription {query_id!r}")
        request_id = self.new_request_id()
        if not self._identified:
            self._table.remove(query_id)
            return None
        sub.unsubscribing, sub.unsubscribe = True, request
        request.sent = True
        return m.UnsubscribeMulti(request_id, query_id) if sub.multi else m.Unsubscribe(request_id, query_id)

    def all_tables(self) -> tuple[str, ...]:
        """``SELECT * FROM`` every public table of the schema."""
        assert self.schema is not None
        tables = [t.name for t in self.schema.tables.values() if t.public]
        if not tables:
            raise SchemaError("subscribe_all: the module has no public table")
        return tuple(f"SELECT * FROM {name}" for name in tables)

    # -- messages in -----------------------------------------------------------------------

    def receive(self, message: m.ServerMessage) -> Events[H]:
        """Take one server message: fold it into the cache, correlate it with our requests."""
        events: Events[H] = Events()
        if not self._trusted(message, events):
            events.trusted = False
            return events
        try:
            # Before the fold, which removes the answered query ids from the table.
            self._correlate(message, events)
        except Exception as err:
            events.reports.append(err)
        if self.schema is not None:
            try:
                events.diffs.append(self.cache.apply(message, name_message=False))
            except SpacetimeDBError as err:  # a row that does not decode: the cache is unchanged
                events.reports.append(err)
        elif isinstance(message, _SUBSCRIPTION_ANSWERS):
            self._table.settle(message)  # no rows to fold without a schema, but the ids still change
        if isinstance(message, m.IdentityToken):
            try:
                self._identify(message, events)
            except Exception as err:
                events.reports.append(err)
        return events

    def _trusted(self, message: m.ServerMessage, events: Events[H]) -> bool:
        """Whether a message fits this connection's state; reports those that do not (§6.4, §7.2)."""
        if isinstance(message, m.IdentityToken):
            return True
        if not self._identified:
            events.reports.append(ProtocolError(f"{type(message).__name__} arrived before IdentityToken, "
                                                "which is always the first message: ignored"))
            return False
        if isinstance(message, _ANSWERS):  # most messages (transactions) answer nothing
            stray = self._stray_answer(message)
            if stray is not None:
                events.reports.append(ProtocolError(f"{stray}: ignored"))
                return False
        return True

    def _stray_answer(self, message: m.ServerMessage) -> str | None:
        """Describe an answer to a request this connection never made (or already forgot)."""
        if isinstance(message, m.SubscribeApplied | m.SubscribeMultiApplied):
            known = message.query_id in self._table.sets
            what = f"query_id {message.query_id}"
        elif isinstance(message, m.UnsubscribeApplied | m.UnsubscribeMultiApplied):
            query_set = self._table.sets.get(message.query_id)
            known = query_set is not None and query_set.unsubscribing
            what = f"query_id {message.query_id}"
        elif isinstance(message, m.InitialSubscription):
            legacy = self._table.legacy
            known = legacy is not None and legacy.request_id == message.request_id
            what = f"request_id {message.request_id}"
        elif isinstance(message, m.ProcedureResult):
            known = message.request_id in self._procedure_calls
            what = f"request_id {message.request_id}"
        elif isinstance(message, m.OneOffQueryResponse):
            known = message.message_id in self._one_offs
            what = f"message_id {message.message_id.hex()}"
        else:
            return None
        if known or what in self._settled:
            return None
        return f"{type(message).__name__} for {what}, which this connection never sent"

    # -- the identity handshake and resubscription -------------------------------------------

    def _identify(self, token: m.IdentityToken, events: Events[H]) -> None:
        """The socket's first message: keep a minted token, re-send every subscription and the queue."""
        reconnect = self._connected_once
        self._connected_once = True
        if self.token_source != "user":
            # Anonymous: keep the minted token so reconnects keep this identity (§1.4).
            if self.token_source is None or token.token != self.token:
                self.token_source = "minted"
            self.token = token.token
            events.save_token = token.token
        events.reset, self._identity_reset = self._identity_reset, ""
        self.identity_token = token
        self._identified = True
        events.connected = token
        if reconnect:
            # Rebuild from the fresh snapshots of the same table's subscriptions, re-sent here;
            # only the net change since the drop comes out.
            self.cache.begin_resync(resend=True)
        send = events.send
        legacy = self._table.legacy
        if legacy is not None:
            legacy.request_id = legacy.request.id = self.new_request_id()
            send.append(m.Subscribe(legacy.queries, legacy.request_id))
        table = self._table.sets
        for sub in [sub for sub in table.values() if not sub.queries]:
            try:  # subscribe_all() made before the schema came: its tables now
                sub.queries = self.all_tables()
            except SchemaError as err:
                self._table.remove(sub.query_id)
                events.fail.append((sub.request, err))
        for sub in table.values():
            sub.request.sent = True
            if sub.multi:
                send.append(m.SubscribeMulti(sub.queries, self.new_request_id(), sub.query_id))
            else:
                send.append(m.SubscribeSingle(sub.queries[0], self.new_request_id(), sub.query_id))
        queued = list(self._queued)
        self._queued.clear()
        for frame, waiting in queued:
            if waiting is not None:
                error = self._unknown_call(frame)
                if error is not None:  # a call queued before the schema came, which it lacks
                    self._forget(waiting)
                    events.fail.append((waiting, error))
                    continue
                waiting.sent = True
            send.append(frame)
        if reconnect:
            finished = self.cache.end_resync_when_applied()
            if finished is not None:
                events.diffs.append(finished)

    def _unknown_call(self, frame: m.ClientMessage) -> Exception | None:
        if isinstance(frame, m.CallReducer):
            unknown = self.unknown("reducer", frame.reducer)
            return ReducerFailed(frame.reducer, unknown) if unknown else None
        if isinstance(frame, m.CallProcedure):
            unknown = self.unknown("procedure", frame.procedure)
            return ProcedureFailed(frame.procedure, unknown) if unknown else None
        return None

    # -- correlation -----------------------------------------------------------------------

    def _correlate(self, message: m.ServerMessage, events: Events[H]) -> None:
        if isinstance(message, m.TransactionUpdate):
            self._on_transaction(message, events)
        elif isinstance(message, m.ProcedureResult):
            call = self._procedure_calls.pop(message.request_id, None)
            if call is not None:
                self._procedure_outcome(call, message, events)
        elif isinstance(message, m.OneOffQueryResponse):
            query = self._one_offs.pop(message.message_id, None)
            if query is not None:
                self._one_off_outcome(query, message, events)
        elif isinstance(message, m.SubscribeApplied | m.SubscribeMultiApplied):
            sub = self._table.sets.get(message.query_id)
            if sub is not None and sub.request is not None:
                events.settle.append((sub.request, message))
        elif isinstance(message, m.UnsubscribeApplied | m.UnsubscribeMultiApplied):
            sub = self._table.sets.get(message.query_id)
            if sub is not None and sub.unsubscribe is not None:
                events.settle.append((sub.unsubscribe, message))
        elif isinstance(message, m.InitialSubscription):
            legacy = self._table.legacy
            if legacy is not None and legacy.request_id == message.request_id:
                events.settle.append((legacy.request, message))
        elif isinstance(message, m.SubscriptionError):
            self._on_subscription_error(message, events)

    def _on_transaction(self, message: m.TransactionUpdate, events: Events[H]) -> None:
        own = self.identity_token
        # Compared by value: the dataclass's __eq__ costs more, on every transaction.
        if own is None or message.caller_connection_id.value != own.connection_id.value:
            return
        call = message.reducer_call
        request = self._reducer_calls.pop(call.request_id, None) if call.request_id else None
        if request is None and call.request_id == 0 and isinstance(message.status, m.Failed):
            # A call the server could not start comes back with request_id 0 (§7.4):
            # match the oldest pending call of that reducer.
            for request_id, candidate in self._reducer_calls.items():
                if candidate.name == call.reducer_name or not call.reducer_name:
                    request = self._reducer_calls.pop(request_id)
                    break
        if request is None:
            return
        status = message.status
        if isinstance(status, m.Committed):
            events.settle.append((request, message))
        elif isinstance(status, m.Failed):
            events.fail.append((request, ReducerFailed(request.name, status.message)))
        else:
            events.fail.append((request, OutOfEnergy(f"reducer {request.name!r} ran out of energy")))

    def _procedure_outcome(self, request: H, message: m.ProcedureResult, events: Events[H]) -> None:
        status = message.status
        if isinstance(status, m.Returned):
            try:
                value = (self.schema.decode_procedure_return(request.name, status.value)
                         if self.schema is not None and request.name in self.schema.procedures
                         else decode_json(status.value))
            except SpacetimeDBError as err:
                events.fail.append((request, err))
                return
            events.settle.append((request, value))
        elif isinstance(status, m.InternalError):
            events.fail.append((request, ProcedureFailed(request.name, status.message)))
        else:
            events.fail.append((request, OutOfEnergy(f"procedure {request.name!r} ran out of energy")))

    def _one_off_outcome(self, request: H, message: m.OneOffQueryResponse, events: Events[H]) -> None:
        if message.error is not None:
            events.fail.append((request, QueryFailed(message.error)))
            return
        try:
            table = message.tables[0] if message.tables else m.OneOffTable("", ())
            schema = self.schema
            if schema is not None and table.table_name in schema.tables:
                rows = tuple(schema.decode_rows(table.table_name, table.rows))
            else:
                rows = tuple(decode_json(r) for r in table.rows)
        except SpacetimeDBError as err:
            events.fail.append((request, err))
            return
        events.settle.append((request, OneOffResult(table.table_name, rows, message)))

    def _on_subscription_error(self, message: m.SubscriptionError, events: Events[H]) -> None:
        failure = SubscriptionFailed(message.error, query_id=message.query_id, request_id=message.request_id)
        failed: list[H] = []
        table, legacy = self._table, self._table.legacy
        # Read only: the fold that follows removes what the error ended (SubscriptionTable.settle).
        if message.request_id is None:
            # Evaluating a transaction failed: the server dropped every subscription (§7.3).
            failed = [s.request for s in table.sets.values()]
            if legacy is not None:
                failed.append(legacy.request)
        elif message.query_id is not None:
            sub = table.sets.get(message.query_id)
            if sub is not None:
                # The query id is gone even when Unsubscribe answers with an error (§5.6).
                failed.append(sub.unsubscribe if sub.unsubscribing else sub.request)
        elif legacy is not None and legacy.request_id == message.request_id:
            failed.append(legacy.request)
        events.fail.extend((request, failure) for request in failed if request is not None)

    def __repr__(self) -> str:
        pending = len(self._reducer_calls) + len(self._procedure_calls) + len(self._one_offs)
        status = "ended" if self.fatal else "connected" if self._identified else "not connected"
        return (f"<Session [{status}, subscriptions: {len(self._table.sets)}, pending: {pending}, "
                f"queued: {len(self._queued)}]>")


def dedupe(queries: Sequence[str]) -> tuple[str, ...]:
    """Never send one query text twice on a connection (§7.3, §10.13)."""
    return tuple(dict.fromkeys(queries))


def _declared(schema: ModuleSchema, kind: str) -> Mapping[str, ReducerDef | ProcedureDef]:
    """The module's reducers or procedures by name (``kind``: "reducer" or "procedure")."""
    return schema.reducers if kind == "reducer" else schema.procedures
