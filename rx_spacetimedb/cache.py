"""The client cache: a pure state machine folding server messages into the rows a client subscribes to.

No Rx and no I/O here, so every counting rule of spec §7.5 is tested with canned messages; the
connection feeds it messages and publishes the ``TransactionDiff`` each ``apply`` returns.

Rules (spec §7.3, §7.5):
    * Rows are decoded with the module schema and keyed by primary key (or by the whole row when
      the table has none); each key keeps an occurrence count, so overlapping queries neither
      duplicate nor lose rows.
    * The snapshot of one query text is counted once however many ``query_id``s hold it, because
      its deltas come once: tell the cache what you send (``note_subscribe_single``...).
    * A legacy ``InitialSubscription`` replaces what the previous legacy set contributed: it comes
      out as a diff against that, so only real changes are emitted.
    * A transaction is applied atomically; a delete and an insert of one primary key is an update.
    * Reconnects (and ``SubscriptionError`` without ``request_id``) go through a *resync*: the user
      keeps seeing the old rows while fresh snapshots build a new state, and only the net difference
      comes out at the end, never a wipe and a refill.
    * Index lookups (``UniqueIndex``, ``BTreeIndex``) fold the same diffs the user sees, so they
      always agree with ``rows()`` and never scan a table.
"""

from __future__ import annotations

import _thread
import bisect
import dataclasses
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from rx_spacetimedb._resync import AWAITING, ENDED, Event, Resync
from rx_spacetimedb._subscriptions import LegacySet, QuerySet, SubscriptionTable
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol.generated import table_indexes
from rx_spacetimedb.protocol.messages import (
    Committed,
    DatabaseUpdate,
    IdentityToken,
    InitialSubscription,
    ReducerCallInfo,
    ServerMessage,
    SubscribeApplied,
    SubscribeMultiApplied,
    SubscriptionError,
    TableUpdate,
    TransactionUpdate,
    TransactionUpdateLight,
    UnsubscribeApplied,
    UnsubscribeMultiApplied,
)
from rx_spacetimedb.protocol.sats import field_name, slot_descriptors
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.values import ConnectionId

__all__ = [
    "BTreeIndex",
    "ClientCache",
    "DiffCause",
    "SchemaSource",
    "TableDiff",
    "TransactionDiff",
    "UniqueIndex",
    "primary_key_getter",
    "resolve_schema",
]

log = logging.getLogger(__name__)

Row = TypeVar("Row")

SchemaSource: TypeAlias = ModuleSchema | Callable[[], ModuleSchema]
"""A schema, or a function returning the current one (a connection fetches it on connect)."""

DiffCause = Literal["subscribe", "unsubscribe", "transaction", "resync", "clear", "none"]
"""What produced a diff: a subscription snapshot, an unsubscribe, a transaction, the end of a resync
(net changes while away), ``clear()``, or a message that does not touch the cache."""


def resolve_schema(source: SchemaSource) -> ModuleSchema:
    """The schema itself, or the one the provider returns now."""
    return source if isinstance(source, ModuleSchema) else source()


@dataclass(frozen=True, slots=True)
class TableDiff(Generic[Row]):
    """What one message changed in one table: inserted, deleted and updated ``(old, new)`` rows.

    ``cause`` and ``message`` say where it came from (the ``TransactionUpdate`` carries the reducer).
    """

    table: str
    inserts: tuple[Row, ...] = ()
    deletes: tuple[Row, ...] = ()
    updates: tuple[tuple[Row, Row], ...] = ()
    cause: DiffCause = "transaction"
    message: ServerMessage | None = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.deletes or self.updates)

    @property
    def reducer_call(self) -> ReducerCallInfo | None:
        """The reducer behind this change, when the server said (full ``TransactionUpdate`` only)."""
        return self.message.reducer_call if isinstance(self.message, TransactionUpdate) else None

    def with_message(self, message: ServerMessage | None) -> TableDiff[Row]:
        """The same diff, from ``message`` (see ``rx_spacetimedb.delivery``)."""
        diff = _table_diff(self.table, self.inserts, self.deletes, self.updates, self.cause, message)
        assert diff is not None  # self was not empty either: the cache builds no empty TableDiff
        return diff

    def map_rows(self, convert: Callable[[Row], Any]) -> TableDiff[Any]:
        """The same diff with every row passed through ``convert`` (e.g. to a user row type)."""
        return TableDiff(
            self.table,
            tuple(convert(r) for r in self.inserts),
            tuple(convert(r) for r in self.deletes),
            tuple((convert(a), convert(b)) for a, b in self.updates),
            self.cause,
            self.message,
        )


@dataclass(frozen=True, slots=True)
class TransactionDiff:
    """Everything one message changed, over all tables, as one atomic unit."""

    tables: tuple[TableDiff[Any], ...] = ()
    cause: DiffCause = "none"
    message: ServerMessage | None = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return any(self.tables)

    def __iter__(self) -> Iterator[TableDiff[Any]]:
        return iter(self.tables)

    def table(self, name: str) -> TableDiff[Any] | None:
        """The diff of one table, or None when this message did not change it."""
        for diff in self.tables:  # a loop, not next(genexpr): this runs for every message and table stream
            if diff.table == name:
                return diff
        return None

    @property
    def reducer_call(self) -> ReducerCallInfo | None:
        """The reducer behind this change, when the server said (full ``TransactionUpdate`` only)."""
        return self.message.reducer_call if isinstance(self.message, TransactionUpdate) else None

    def with_message(self, message: ServerMessage | None) -> TransactionDiff:
        """The same diff with every table's diff, from ``message`` (see ``rx_spacetimedb.delivery``)."""
        return _transaction_diff(tuple([t.with_message(message) for t in self.tables]), self.cause, message)


_new = object.__new__
_set_table, _set_inserts, _set_deletes, _set_updates, _set_cause, _set_message = (
    slot.__set__ for slot in slot_descriptors(TableDiff))
_set_tables, _set_tx_cause, _set_tx_message = (slot.__set__ for slot in slot_descriptors(TransactionDiff))


def _table_diff(name: str, inserts: tuple[Any, ...], deletes: tuple[Any, ...],
                updates: tuple[tuple[Any, Any], ...], cause: DiffCause,
                message: ServerMessage | None) -> TableDiff[Any] | None:
    """The cache's own ``TableDiff``, or None when nothing changed.

    Stored through the slot descriptors: the frozen ``__init__`` calls ``object.__setattr__`` per
    field, twice the cost, and this runs for every message and table.
    """
    if not (inserts or deletes or updates):
        return None
    diff: TableDiff[Any] = _new(TableDiff)
    _set_table(diff, name)
    _set_inserts(diff, inserts)
    _set_deletes(diff, deletes)
    _set_updates(diff, updates)
    _set_cause(diff, cause)
    _set_message(diff, message)
    return diff


def _transaction_diff(tables: tuple[TableDiff[Any], ...], cause: DiffCause,
                      message: ServerMessage | None) -> TransactionDiff:
    """The cache's own ``TransactionDiff`` (as ``_table_diff``: once per message)."""
    diff: TransactionDiff = _new(TransactionDiff)
    _set_tables(diff, tables)
    _set_tx_cause(diff, cause)
    _set_tx_message(diff, message)
    return diff


def primary_key_getter(schema: ModuleSchema, table: str) -> Callable[[Any], Any] | None:
    """A function from a row of ``table`` to its primary-key value (a tuple for composite keys).

    None when the table has no primary key. Works on generated rows, user dataclasses and tuples
    alike, because it reads columns by position.
    """
    return _key_getter(schema, table)


def _key_getter(schema: ModuleSchema, table: str) -> _KeyGetter | None:
    columns = schema.primary_key(table)
    return _KeyGetter(columns, schema.row_product(table).names) if columns else None


class _KeyGetter:
    """Row -> primary key, with a C-level getter per row class (see ``primary_key_getter``)."""

    __slots__ = ("_columns", "_getters", "_names")

    def __init__(self, columns: tuple[int, ...], names: tuple[str, ...]) -> None:
        self._columns, self._names = columns, names
        self._getters: dict[type, Callable[[Any], Any]] = {}

    def _getter(self, cls: type) -> Callable[[Any], Any]:
        getter = self._getters.get(cls)
        if getter is None:
            if issubclass(cls, tuple):
                getter = operator.itemgetter(*self._columns)
            elif dataclasses.is_dataclass(cls):
                fields = dataclasses.fields(cls)
                getter = operator.attrgetter(*(fields[c].name for c in self._columns))
            else:
                getter = operator.attrgetter(*(field_name(self._names[c]) for c in self._columns))
            self._getters[cls] = getter
        return getter

    def __call__(self, row: Any) -> Any:
        return self._getter(type(row))(row)

    def many(self, rows: list[Any]) -> Iterable[Any]:
        """The keys of many rows; one getter for them all when they are of one class (decoded rows)."""
        if rows and len(set(map(type, rows))) == 1:
            return map(self._getter(type(rows[0])), rows)
        return map(self, rows)


# -- state -----------------------------------------------------------------------------------


class _Table:
    """Rows of one table by key, with their occurrence counts."""

    __slots__ = ("extra", "has_pk", "rows")

    def __init__(self, has_pk: bool) -> None:
        self.has_pk = has_pk
        self.rows: dict[Any, Any] = {}
        # occurrences beyond the first, only for keys held more than once (overlapping queries): a
        # key in ``rows`` and not here is held once, the usual case, which then costs no bookkeeping
        self.extra: dict[Any, int] = {}

    def count(self, key: Any) -> int:
        """How many query occurrences hold this key (0: not cached)."""
        return 1 + self.extra.get(key, 0) if key in self.rows else 0


class _State:
    """The rows of one server connection's subscriptions (which query ids hold them: the table)."""

    def __init__(self) -> None:
        self.tables: dict[str, _Table] = {}
        # table -> key -> occurrences the legacy Subscribe set contributes
        self.legacy: dict[str, dict[Any, int]] = {}
        self.has_legacy = False


# What one message does to one key: [deleted occurrences, inserted occurrences, last inserted row].
# A list, not a class: one is made per changed row, and a list literal costs a fraction of a call.
_Change = list[Any]
_DELETED, _INSERTED, _ROW = 0, 1, 2
_PerKey = dict[Any, _Change]


def _merge(per_key: _PerKey, removed: Iterable[Any], added: Iterable[tuple[Any, Any]]) -> _PerKey:
    """Count deleted keys and inserted (key, row) pairs into ``per_key``; the last row of a key wins."""
    for key in removed:
        change = per_key.get(key)
        if change is None:
            per_key[key] = [1, 0, None]
        else:
            change[_DELETED] += 1
    for key, row in added:
        change = per_key.get(key)
        if change is None:
            per_key[key] = [0, 1, row]
        else:
            change[_INSERTED] += 1
            change[_ROW] = row
    return per_key


class _Batch:
    """One table's changes in the usual shape: one query's deletes and inserts, no key twice in either.

    ``_commit`` applies it with dict and set operations when every key is held once (the usual
    case) instead of a Python step per key; otherwise it becomes a ``_PerKey`` like any other.
    """

    __slots__ = ("deleted", "inserted")

    def __init__(self, deleted: dict[Any, None], inserted: dict[Any, Any]) -> None:
        self.deleted = deleted
        self.inserted = inserted

    def per_key(self) -> _PerKey:
        return _merge({}, self.deleted, self.inserted.items())


_Changes = dict[str, "_PerKey | _Batch"]


def _commit_batch(name: str, table: _Table, batch: _Batch, cause: DiffCause, message: ServerMessage | None,
                  spec_updates: bool) -> TableDiff[Any] | None:
    """Apply a batch whose every key is held once or not at all; None when it cannot (or changed
    nothing), for the per-key fold to do it.

    Then a deleted key leaves, a new key comes in with one occurrence, and a key both deleted and
    inserted is an update: dict and set operations do it, in the order the per-key path gives.
    """
    rows, deleted, inserted = table.rows, batch.deleted, batch.inserted
    if not deleted.keys() <= rows.keys() or (table.extra and not table.extra.keys().isdisjoint(deleted)):
        return None  # a delete of a row not cached (a warning), or of one held more than once
    if deleted and inserted:
        if len(deleted) == len(inserted) and deleted.keys() == inserted.keys():  # updates only
            if not spec_updates:
                return None
            # (old, new) pairs in delete order (a comprehension: faster than zip(map, map) at any size)
            pairs = tuple([(rows[key], inserted[key]) for key in deleted])
            rows.update(inserted)
            return _table_diff(name, (), (), pairs, cause, message)
        if not spec_updates or not (inserted.keys() - deleted.keys()).isdisjoint(rows):
            return None  # a snapshot's equal row, or an insert of a key held already: count them
        updated = [(rows[key], inserted[key]) for key in deleted if key in inserted]
        gone = [rows.pop(key) for key in deleted if key not in inserted]
        new = [row for key, row in inserted.items() if key not in deleted]
        rows.update(inserted)
        return _table_diff(name, tuple(new), tuple(gone), tuple(updated), cause, message)
    if inserted:
        if not rows.keys().isdisjoint(inserted):
            return None
        rows.update(inserted)
        return _table_diff(name, tuple(inserted.values()), (), (), cause, message)
    return _table_diff(name, (), tuple([rows.pop(key) for key in deleted]), (), cause, message)


def _commit_per_key(name: str, table: _Table, per_key: _PerKey, cause: DiffCause,
                    message: ServerMessage | None,
                    spec_updates: bool) -> TableDiff[Any] | None:
    """Apply one table's changes key by key, counting occurrences (any shape of changes)."""
    rows, extra, has_pk = table.rows, table.extra, table.has_pk
    inserted: list[Any] = []
    deleted: list[Any] = []
    updated: list[tuple[Any, Any]] = []
    for key, (minus, plus, row) in per_key.items():
        old = (1 + extra.get(key, 0)) if key in rows else 0
        if minus > old:
            log.warning("%s: delete of %d occurrence(s) of %r, but the cache holds %d", name, minus, key, old)
            minus = old
        new = old - minus + plus
        if new > 1:
            extra[key] = new - 1
        elif old > 1:
            del extra[key]
        if new == 0:
            if old:
                deleted.append(rows.pop(key))
            continue
        if not old:
            rows[key] = row
            inserted.append(row)
        elif plus:
            previous = rows[key]
            rows[key] = row
            if has_pk and ((spec_updates and minus) or previous != row):
                updated.append((previous, row))
    return _table_diff(name, tuple(inserted), tuple(deleted), tuple(updated), cause, message)


_SNAPSHOTS = (SubscribeApplied, SubscribeMultiApplied, InitialSubscription)


class ClientCache:
    """Rows matched by a connection's subscriptions, folded from its server messages (spec §7.5).

    Feed every server message to ``apply`` in arrival order; each call returns the
    ``TransactionDiff`` it caused. The subscriptions sent are kept in ``subscriptions`` (a
    connection's session adds to it directly; on its own, tell the cache with ``note_*``), so
    it can count a query text's snapshot once; call ``begin_resync``/``end_resync_when_applied``
    around a reconnect (the states are in ``rx_spacetimedb._resync``). Thread-safe: one lock
    guards the fold and the lookups.

    Args:
        schema: the module schema, or a function returning it (called when rows are decoded).
        auto_resync: on an ``IdentityToken`` of a new connection while the cache holds state, call
            ``reconnected()`` (the connection re-sends the same subscriptions, spec §7.7). Pass
            False to drive ``begin_resync``/``end_resync*`` yourself.
        lock: the re-entrant lock to guard the cache with (a connection shares its own, so the
            subscription table is guarded by one lock); a new one by default.
    """

    def __init__(self, schema: SchemaSource, *, auto_resync: bool = True,
                 lock: _thread.RLock | None = None) -> None:
        self._schema_source = schema
        self._auto_resync = auto_resync
        self._connection_id: ConnectionId | None = None
        # Guards every attribute below (the fold on the I/O thread against lookups from user
        # threads and indexes) and the subscription table; a connection passes its own lock,
        # which its session holds whenever it changes the table. No user code runs under it.
        self._lock = lock if lock is not None else threading.RLock()
        self._state = _State()
        # The subscriptions sent and answered: shared with a connection's session.
        self.subscriptions = SubscriptionTable()
        self._resync = Resync()
        # While rebuilding (not LIVE): the state the user still sees (the one before).
        self._shown: _State | None = None
        self._ended_at = 0  # subscriptions.added when the server ended them (ENDED waits for more)
        self._stale: str | None = None
        self._keys: dict[tuple[ModuleSchema, str], _KeyGetter | None] = {}
        # Counts the changes of what lookups show: a seed read with snapshot() knows which diffs
        # it already holds.
        self._version = 0
        self._warned_tables: set[str] = set()
        self._indexes: dict[str, dict[tuple[int, ...], _ColumnIndex]] = {}  # table -> columns -> index

    # -- what is sent, for a cache used on its own ------------------------------------------

    def note_subscribe_single(self, query_id: int, query: str) -> None:
        """Record a ``SubscribeSingle`` being sent, so its snapshot counts once per query text."""
        with self._lock:
            self.subscriptions.add(QuerySet(query_id, (query,), multi=False))

    def note_subscribe_multi(self, query_id: int, queries: Iterable[str]) -> None:
        """Record a ``SubscribeMulti`` being sent (a text listed twice counts once, as on the server)."""
        with self._lock:
            self.subscriptions.add(QuerySet(query_id, tuple(dict.fromkeys(queries))))

    def note_subscribe(self, request_id: int, queries: Iterable[str]) -> None:
        """Record a legacy ``Subscribe`` being sent (its ``InitialSubscription`` ends a resync wait)."""
        with self._lock:
            self.subscriptions.set_legacy(LegacySet(tuple(dict.fromkeys(queries)), request_id))

    def note_unsubscribe(self, query_id: int) -> None:
        """Record an ``Unsubscribe``/``UnsubscribeMulti``: an error answer still removes the query_id.

        During a resync it also stops waiting for that query_id's snapshot.
        """
        with self._lock:
            query_set = self.subscriptions.sets.get(query_id)
            if query_set is not None:
                query_set.unsubscribing = True

    # -- reconnects ------------------------------------------------------------------------

    def begin_resync(self, *, resend: bool = False) -> None:
        """Start rebuilding from fresh snapshots while lookups keep showing the current rows.

        Call it when a new connection is up, before re-sending the subscriptions. ``resend``:
        every subscription of ``subscriptions`` is re-sent (a session's reconnect), so each is
        awaited again; otherwise everything tied to the old connection (query ids, pending
        requests, counts) is dropped, and the caller notes what it sends. Calling it again during
        a resync restarts the rebuild but keeps the rows the user saw.
        """
        with self._lock:
            if self._shown is None:
                self._shown = self._state
            self._state = _State()
            self._resync.fire(Event.BEGIN)
            if resend:
                self.subscriptions.resend()
            else:
                self.subscriptions.clear()

    def reconnected(self) -> TransactionDiff | None:
        """A new connection re-sends the same subscriptions (same query ids): resync against them.

        Begins a resync that waits for a snapshot of every query_id that was live or pending, and
        for one ``InitialSubscription`` if a legacy set was in use; returns the net diff if there
        is nothing to wait for, else None (the ``apply`` of the last answer returns it).
        """
        with self._lock:
            table = self.subscriptions
            if table.legacy is not None:
                table.legacy.request_id = None  # re-sent under a new request id: any answer will do
            elif self._state.has_legacy:
                table.set_legacy(LegacySet((), None))
            self.begin_resync(resend=True)
            return self.end_resync_when_applied()

    def end_resync(self, message: ServerMessage | None = None) -> TransactionDiff:
        """Finish a resync now: the rebuilt state becomes visible, and the net changes come out."""
        with self._lock:
            if self._shown is None:
                return TransactionDiff((), "none", message)
            return self._commit_resync(message)

    def end_resync_when_applied(self) -> TransactionDiff | None:
        """Finish the resync once every subscription is answered (now, if they all are).

        Returns the net diff when it ends now; otherwise None, and the ``apply`` call of the last
        answer returns it.
        """
        with self._lock:
            if self._shown is None:
                return None
            self._resync.fire(Event.ARM)
            return self._advance(None)

    def _advance(self, message: ServerMessage | None) -> TransactionDiff | None:
        """Move a rebuild along after a change: the commit's diff when it ends now."""
        assert self._lock._is_owned()  # type: ignore[attr-defined]
        state = self._resync.state
        if state is ENDED and self.subscriptions.added != self._ended_at:
            state = self._resync.fire(Event.SUBSCRIBED)  # the application subscribed again
        if state is AWAITING and not self.subscriptions.pending():
            return self._commit_resync(message)
        return None

    def _commit_resync(self, message: ServerMessage | None) -> TransactionDiff:
        """The one commit path: the rebuilt state becomes visible; its net change comes out."""
        assert self._lock._is_owned() and self._shown is not None  # type: ignore[attr-defined]
        shown, self._shown = self._shown, None
        self._resync.fire(Event.COMMIT)
        self._stale = None
        self._version += 1
        net = self._net_diff(shown, self._state, message)
        return self._indexed(TransactionDiff(net, "resync", message))

    @property
    def resyncing(self) -> bool:
        """True between ``begin_resync`` and the end of the resync."""
        return self._shown is not None

    @property
    def stale(self) -> str | None:
        """Why the rows may be out of date (the server ended the subscriptions), or None."""
        return self._stale

    # -- folding messages ------------------------------------------------------------------

    def apply(self, message: ServerMessage, *, name_message: bool = True) -> TransactionDiff:
        """Fold one server message into the cache and return what changed for the user.

        ``name_message=False``: the diffs' ``message`` is None, for a caller that stamps them on the
        message itself (``rx_spacetimedb.delivery``), where naming it would make a cycle.

        Raises:
            ProtocolError: a row did not decode; the cache is left unchanged (atomicity).
        """
        with self._lock:
            self._version += 1
            tag = message if name_message else None
            diff = self._apply(message, tag)
            if self._shown is None:
                return self._indexed(diff)
            if isinstance(message, _SNAPSHOTS) and self._resync.state is ENDED:
                self._resync.fire(Event.SUBSCRIBED)  # a subscription nobody noted ends it too
            finished = self._advance(tag)
            if finished is not None:
                return finished
            # Rebuilding: the user keeps seeing the old rows until the resync ends.
            return TransactionDiff((), diff.cause, tag)

    def clear(self) -> TransactionDiff:
        """Drop every row and subscription (e.g. the connection closed for good), emitting deletes."""
        with self._lock:
            self._version += 1
            shown = self._shown if self._shown is not None else self._state
            self._state = _State()
            self._shown = None
            self._resync.fire(Event.CLEAR)
            self.subscriptions.clear()
            return self._indexed(TransactionDiff(self._net_diff(shown, self._state, None), "clear", None))

    def _apply(self, message: ServerMessage, tag: ServerMessage | None) -> TransactionDiff:
        """Fold ``message``; the diffs name ``tag`` as their message."""
        state = self._state
        if isinstance(message, TransactionUpdate):
            if not isinstance(message.status, Committed):
                return TransactionDiff((), "transaction", tag)  # failed calls carry no rows
            return self._apply_transaction(message.status.update, tag)
        if isinstance(message, TransactionUpdateLight):
            return self._apply_transaction(message.update, tag)
        # Each branch decodes every row before it changes anything: a bad row leaves no trace.
        if isinstance(message, SubscribeApplied):
            changes = self._decode([message.rows.table_rows], inserts=True, deletes=False)
            if self.subscriptions.settle(message).already_held:
                # Same text as another live query_id: the server sent the rows again, but their
                # deltas come only once, so counting them again would leak counts (spec §7.5).
                log.debug("query of query_id %d already held; snapshot not counted", message.query_id)
                return TransactionDiff((), "subscribe", tag)
            return self._commit(changes, "subscribe", tag, spec_updates=False)
        if isinstance(message, SubscribeMultiApplied):
            changes = self._decode(message.update.tables, inserts=True, deletes=False)
            self.subscriptions.settle(message)
            return self._commit(changes, "subscribe", tag, spec_updates=False)
        if isinstance(message, UnsubscribeApplied | UnsubscribeMultiApplied):
            tables = ([message.rows.table_rows] if isinstance(message, UnsubscribeApplied)
                      else message.update.tables)
            changes = self._decode(tables, inserts=False, deletes=True, batches=not state.has_legacy)
            self.subscriptions.settle(message)
            if state.has_legacy:
                self._track_legacy(state, changes)
            return self._commit(changes, "unsubscribe", tag, spec_updates=False)
        if isinstance(message, InitialSubscription):
            diff = self._replace_legacy(message.database_update, tag)
            self.subscriptions.settle(message)
            return diff
        if isinstance(message, SubscriptionError):
            self._subscription_error(message)
        elif isinstance(message, IdentityToken):
            return self._identity_token(message, tag)
        return TransactionDiff((), "none", tag)

    def _identity_token(self, message: IdentityToken, tag: ServerMessage | None) -> TransactionDiff:
        previous, self._connection_id = self._connection_id, message.connection_id
        state = self._state
        table = self.subscriptions
        # Requests noted before the first connection are simply sent on it: only data (or, after
        # an earlier connection, requests made on it) calls for a resync.
        has_state = bool(any(q.applied for q in table.sets.values()) or state.has_legacy
                         or any(t.rows for t in state.tables.values())
                         or (previous is not None and table.pending()))
        if self._auto_resync and previous != message.connection_id and has_state:
            diff = self.reconnected()
            if diff is not None:
                return diff
        return TransactionDiff((), "none", tag)

    def _subscription_error(self, message: SubscriptionError) -> None:
        query_set = self.subscriptions.sets.get(message.query_id) if message.query_id is not None else None
        unsubscribing = query_set is not None and query_set.unsubscribing and query_set.applied
        settled = self.subscriptions.settle(message)
        if settled.ended:
            # A query failed while evaluating a transaction: the server dropped every subscription
            # of this connection. Keep showing the (stale) rows; the subscriptions sent next
            # rebuild the state, and once they are answered only the net change comes out.
            log.warning("subscriptions ended by the server: %s", message.error)
            self.begin_resync()
            self._resync.fire(Event.SERVER_ENDED)
            self._ended_at = self.subscriptions.added
            self._stale = message.error
        elif unsubscribing and len(settled.released) > 1:
            self._stale = (f"Unsubscribe of query_id {message.query_id} released "
                           f"{len(settled.released)} queries whose rows the server did not send; "
                           "use UnsubscribeMulti for sets")
            log.warning("%s", self._stale)

    # -- decoding and applying ---------------------------------------------------------------

    def _key_of(self, schema: ModuleSchema, table: str) -> _KeyGetter | None:
        slot = (schema, table)
        if slot not in self._keys:
            self._keys[slot] = _key_getter(schema, table)
        return self._keys[slot]

    def _decode(self, tables: Iterable[TableUpdate], *, inserts: bool, deletes: bool,
                batches: bool = True) -> _Changes:
        """Decode and merge every QueryUpdate per table and key, before anything is changed.

        ``batches``: a table with a primary key and one query may come out as a ``_Batch``.
        """
        schema = resolve_schema(self._schema_source)
        changes: _Changes = {}
        for update in tables:
            name = update.table_name
            if name not in schema.tables:
                if name not in self._warned_tables:
                    self._warned_tables.add(name)
                    log.warning("rows of table %r, which the schema does not know, are not cached", name)
                continue
            key_of = self._key_of(schema, name)
            for query in update.updates:
                # A deleted row is looked up by key (its value comes from the cache): decode only the
                # key; without a primary key the whole row is the key.
                removed: list[Any] = []
                if deletes and query.deletes:
                    removed = (schema.decode_rows(name, query.deletes) if key_of is None
                               else schema.decode_keys(name, query.deletes))
                known = changes.get(name)
                if known is None and batches and key_of is not None and len(update.updates) == 1:
                    deleted = dict.fromkeys(removed)
                    if len(deleted) == len(removed):  # else a key repeats: count occurrences below
                        inserted = schema.decode_rows_by_key(name, query.inserts if inserts else (), key_of)
                        if inserted is not None:
                            changes[name] = _Batch(deleted, inserted)
                            continue
                rows: list[Any] = schema.decode_rows(name, query.inserts) if inserts else []
                added = rows if key_of is None else list(key_of.many(rows))
                if known is None:
                    per_key: _PerKey = {}
                elif isinstance(known, _Batch):
                    per_key = known.per_key()
                else:
                    per_key = known
                changes[name] = _merge(per_key, removed, zip(added, rows, strict=True))
            if name not in changes:  # a table with no queries is still known to the cache
                changes[name] = {}
        if changes:
            self._ensure_tables(schema, changes)
        return changes

    def _ensure_tables(self, schema: ModuleSchema, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._state.tables:
                self._state.tables[name] = _Table(bool(schema.primary_key(name)))

    def _apply_transaction(self, update: DatabaseUpdate, tag: ServerMessage | None) -> TransactionDiff:
        state = self._state
        changes = self._decode(update.tables, inserts=True, deletes=True, batches=not state.has_legacy)
        if state.has_legacy:
            self._track_legacy(state, changes)
        return self._commit(changes, "transaction", tag, spec_updates=True)

    def _track_legacy(self, state: _State, changes: _Changes) -> None:
        """Keep the legacy set's contribution current as transactions change its rows.

        With only the legacy set live every occurrence is its own. Deltas do not say which query
        they belong to, so beside SubscribeSingle/Multi queries it is kept as an upper bound.
        """
        only_legacy = not any(q.applied for q in self.subscriptions.sets.values())
        for name, per_key in changes.items():
            assert not isinstance(per_key, _Batch)  # decoded with batches=False
            table = state.tables[name]
            legacy = state.legacy.setdefault(name, {})
            for key, (deleted, inserted, _) in per_key.items():
                new = max(table.count(key) - deleted, 0) + inserted
                held = new if only_legacy else min(legacy.get(key, 0), new)
                if held:
                    legacy[key] = held
                else:
                    legacy.pop(key, None)

    def _replace_legacy(self, update: DatabaseUpdate, tag: ServerMessage | None) -> TransactionDiff:
        """Apply a new legacy set as a diff against what the previous legacy set contributed."""
        new_changes = self._decode(update.tables, inserts=True, deletes=False, batches=False)
        state = self._state
        schema = resolve_schema(self._schema_source)
        self._ensure_tables(schema, state.legacy)
        changes: dict[str, _PerKey] = {}
        for name, old in state.legacy.items():
            per_key = changes.setdefault(name, {})
            for key, count in old.items():
                per_key[key] = [count, 0, None]
        new_legacy: dict[str, dict[Any, int]] = {}
        for name, per_key_new in new_changes.items():
            assert not isinstance(per_key_new, _Batch)
            per_key = changes.setdefault(name, {})
            counts = new_legacy.setdefault(name, {})
            for key, (_, inserted, row) in per_key_new.items():
                change = per_key.setdefault(key, [0, 0, None])
                change[_INSERTED] = inserted
                change[_ROW] = row
                counts[key] = inserted
        state.legacy = new_legacy
        state.has_legacy = True
        return self._commit(changes, "subscribe", tag, spec_updates=False)

    def _commit(self, changes: Mapping[str, _PerKey | _Batch], cause: DiffCause,
                message: ServerMessage | None, *, spec_updates: bool) -> TransactionDiff:
        """Apply merged changes: ``new = old - deleted + inserted`` per key (spec §7.5 rule 4).

        ``spec_updates``: a transaction's delete+insert of one primary key is an update even when the
        row is equal; for snapshots only a changed value is.
        """
        diffs: list[TableDiff[Any]] = []
        for name, change in changes.items():
            table = self._state.tables[name]
            if isinstance(change, _Batch):
                diff = _commit_batch(name, table, change, cause, message, spec_updates)
                if diff is None:
                    diff = _commit_per_key(name, table, change.per_key(), cause, message, spec_updates)
            else:
                diff = _commit_per_key(name, table, change, cause, message, spec_updates)
            if diff is not None:
                diffs.append(diff)
        return _transaction_diff(tuple(diffs), cause, message)

    def _net_diff(self, before: _State, after: _State,
                  message: ServerMessage | None) -> tuple[TableDiff[Any], ...]:
        """Per table: rows gone, rows new, rows whose value changed (by key) between two states."""
        diffs: list[TableDiff[Any]] = []
        for name in dict.fromkeys([*before.tables, *after.tables]):
            old = before.tables[name].rows if name in before.tables else {}
            new = after.tables[name].rows if name in after.tables else {}
            deleted = tuple(row for key, row in old.items() if key not in new)
            updated = tuple((row, new[key]) for key, row in old.items() if key in new and new[key] != row)
            inserted = tuple(row for key, row in new.items() if key not in old)
            diff = _table_diff(name, inserted, deleted, updated, "resync", message)
            if diff is not None:
                diffs.append(diff)
        return tuple(diffs)

    # -- lookups ---------------------------------------------------------------------------

    def _visible(self) -> _State:
        return self._shown if self._shown is not None else self._state

    def _table(self, name: str) -> _Table | None:
        table = self._visible().tables.get(name)
        if table is None and name not in resolve_schema(self._schema_source).tables:
            raise SchemaError(f"unknown table {name!r}; the module has "
                              f"{sorted(resolve_schema(self._schema_source).tables)}")
        return table

    def rows(self, table: str) -> tuple[Any, ...]:
        """The rows of a table now, as an immutable tuple (in the order they arrived)."""
        with self._lock:
            state = self._table(table)
            return tuple(state.rows.values()) if state is not None else ()

    @property
    def version(self) -> int:
        """Grows with every change of what lookups show (each ``apply``, a resync's end, ``clear``)."""
        return self._version

    def snapshot(self, table: str) -> tuple[int, tuple[Any, ...]]:
        """``(version, rows)`` read together: the rows hold every change up to that version."""
        with self._lock:
            return self._version, self.rows(table)

    def get(self, table: str, key: Any, default: Any = None) -> Any:
        """The row with this primary key (a tuple for composite keys; the row itself without a key)."""
        with self._lock:
            state = self._table(table)
            return state.rows.get(key, default) if state is not None else default

    def count(self, table: str) -> int:
        """How many distinct rows the table holds."""
        with self._lock:
            state = self._table(table)
            return len(state.rows) if state is not None else 0

    def ref_count(self, table: str, key: Any) -> int:
        """How many query occurrences hold this row (0: not cached)."""
        with self._lock:
            state = self._table(table)
            return state.count(key) if state is not None else 0

    def tables(self) -> Mapping[str, int]:
        """Row counts of the tables that hold rows."""
        with self._lock:
            return {name: len(t.rows) for name, t in self._visible().tables.items() if t.rows}

    def query_holders(self) -> Mapping[str, int]:
        """How many live ``query_id``s hold each query text (for the counting rule of §7.5)."""
        with self._lock:
            return dict(self.subscriptions.holders)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(t.rows) for t in self._visible().tables.values())

    def __repr__(self) -> str:
        with self._lock:
            tables = ", ".join(f"{name}: {count}" for name, count in self.tables().items())
            flags = "".join([", RESYNCING" if self._shown is not None else "",
                             ", STALE" if self._stale is not None else ""])
            return f"<ClientCache [{tables}]{flags}>"

    # -- index lookups (see BTreeIndex, UniqueIndex) ------------------------------------------

    def _index(self, table: str, columns: tuple[int, ...]) -> _ColumnIndex:
        """The index of these columns, built from the rows now on first use, then kept by ``_indexed``.

        The caller holds the lock.
        """
        assert self._lock._is_owned()  # type: ignore[attr-defined]
        by_columns = self._indexes.setdefault(table, {})
        index = by_columns.get(columns)
        if index is None:
            schema = resolve_schema(self._schema_source)
            key_of = self._key_of(schema, table)
            names = schema.row_product(table).names
            index = _ColumnIndex(_KeyGetter(columns, names), key_of or _whole_row)
            state = self._table(table)
            for row in state.rows.values() if state is not None else ():
                index.add(row)
            by_columns[columns] = index
        return index

    def _indexed(self, diff: TransactionDiff) -> TransactionDiff:
        """Fold a diff of the visible rows into the indexes of its tables; returns the diff."""
        if self._indexes:
            for table_diff in diff.tables:
                for index in self._indexes.get(table_diff.table, {}).values():
                    index.fold(table_diff)
        return diff


# -- index lookups ---------------------------------------------------------------------------


def _whole_row(row: Any) -> Any:
    return row


class _ColumnIndex:
    """Rows grouped by the value of some columns, with those values kept sorted for ranges.

    Kept current from the cache's diffs (insert, delete, update), never rebuilt by a scan; the
    sorted list is dropped for good if the values cannot be ordered (``range`` then refuses).
    """

    __slots__ = ("groups", "key_of", "ordered", "value_of")

    def __init__(self, value_of: Callable[[Any], Any], key_of: Callable[[Any], Any]) -> None:
        self.value_of, self.key_of = value_of, key_of
        self.groups: dict[Any, dict[Any, Any]] = {}  # column value -> row key -> row
        self.ordered: list[Any] | None = []  # the distinct column values, sorted (None: unorderable)

    def add(self, row: Any) -> None:
        value = self.value_of(row)
        group = self.groups.get(value)
        if group is None:
            group = self.groups[value] = {}
            if self.ordered is not None:
                try:
                    bisect.insort(self.ordered, value)
                except TypeError:
                    self.ordered = None
        group[self.key_of(row)] = row

    def remove(self, row: Any) -> None:
        value = self.value_of(row)
        group = self.groups.get(value)
        if group is None or group.pop(self.key_of(row), None) is None or group:
            return
        del self.groups[value]
        if self.ordered is not None:
            del self.ordered[bisect.bisect_left(self.ordered, value)]

    def fold(self, diff: TableDiff[Any]) -> None:
        for row in diff.deletes:
            self.remove(row)
        for old, _ in diff.updates:
            self.remove(old)
        for _, new in diff.updates:
            self.add(new)
        for row in diff.inserts:
            self.add(row)


Key = TypeVar("Key")


class BTreeIndex(Generic[Key, Row]):
    """Rows of a cached table by a btree-indexed column (or columns): exact matches and ranges.

    The SDKs' ``ctx.db.player().level().filter(5)`` is ``BTreeIndex(conn.cache, "Player",
    "level").filter(5)`` (or, generated, ``Tables(conn).player.level.filter(5)``). Lookups read a
    hash and a sorted list the cache keeps current as rows change: never a scan of the table.

    Args:
        cache: the client cache (``conn.cache``).
        table: the table's name.
        columns: a column name or position, or several (then values are tuples, in that order).

    Raises (on first use):
        SchemaError: the table has no such index (the message lists the ones it has).
    """

    _unique = False

    def __init__(self, cache: ClientCache, table: str, columns: str | int | tuple[str | int, ...]) -> None:
        self._cache = cache
        self.table = table
        self._columns = columns if isinstance(columns, tuple) else (columns,)
        self._resolved: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.table}{list(self._columns)}>"

    def _get(self) -> _ColumnIndex:
        """The cache's index (the cache lock is held by the caller)."""
        columns = self._resolved
        if columns is None:
            columns = self._resolved = self._check(resolve_schema(self._cache._schema_source))
        return self._cache._index(self.table, columns)

    def _check(self, schema: ModuleSchema) -> tuple[int, ...]:
        names = schema.row_product(self.table).names
        columns = []
        for column in self._columns:
            if isinstance(column, str):
                matches = [i for i, n in enumerate(names) if column in (n, field_name(n))]
                if not matches:
                    raise SchemaError(f"table {self.table!r} has no column {column!r}; it has {list(names)}")
                column = matches[0]
            columns.append(column)
        found = tuple(columns)
        unique, btree = table_indexes(schema.table(self.table))
        if found not in (unique if self._unique else (*unique, *btree)):
            have = [[names[c] for c in cs] for cs in (unique if self._unique else (*unique, *btree))]
            kind = "unique column set" if self._unique else "index"
            raise SchemaError(f"table {self.table!r} has no {kind} on {[names[c] for c in found]}; "
                              f"it has {have}")
        return found

    def filter(self, value: Key) -> tuple[Row, ...]:
        """The rows whose column equals ``value`` (a tuple of values for several columns)."""
        with self._cache._lock:
            group = self._get().groups.get(value)
            return tuple(group.values()) if group else ()

    def range(self, start: Key | None = None, stop: Key | None = None) -> tuple[Row, ...]:
        """The rows with ``start <= value < stop`` (``None``: unbounded), in order of the value.

        The SDKs' ``filter(start..stop)``. Raises TypeError if the column's values cannot be ordered.
        """
        with self._cache._lock:
            index = self._get()
            ordered = index.ordered
            if ordered is None:
                raise TypeError(f"{self!r}: the values of this index cannot be ordered")
            low = 0 if start is None else bisect.bisect_left(ordered, start)
            high = len(ordered) if stop is None else bisect.bisect_left(ordered, stop)
            groups = index.groups
            return tuple(row for value in ordered[low:high] for row in groups[value].values())


class UniqueIndex(BTreeIndex[Key, Row]):
    """Rows of a cached table by a unique column (or columns): ``find`` in O(1), plus ranges.

    The SDKs' ``ctx.db.player().identity().find(&id)`` / ``conn.db.player.identity.find(id)`` is
    ``UniqueIndex(conn.cache, "Player", "identity").find(id)`` (generated:
    ``Tables(conn).player.identity.find(id)``).
    """

    _unique = True

    def find(self, value: Key) -> Row | None:
        """The row whose column equals ``value``, or None."""
        with self._cache._lock:
            group = self._get().groups.get(value)
            return next(iter(group.values())) if group else None
