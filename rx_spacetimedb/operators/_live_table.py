"""Live tables: the current rows of one table as replayed immutable snapshots and change streams.

A UI binds to "the rows now, and every change": a snapshot stream that replays the latest value to
late subscribers, per-kind change streams, and synchronous lookups for code that is not reactive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable

from rx_spacetimedb._streams import GuardedSubject, LatestSubject
from rx_spacetimedb.cache import SchemaSource, TableDiff, primary_key_getter, resolve_schema
from rx_spacetimedb.delivery import MessageOrigin, find_origin
from rx_spacetimedb.operators._fold import Folded, folded
from rx_spacetimedb.operators._row_type import RowConverters, row_converter
from rx_spacetimedb.protocol.schema import ModuleSchema

__all__ = ["LiveTable", "live_table"]

Row = TypeVar("Row")


class LiveTable(Generic[Row]):
    """The rows of one table, kept current from a message stream.

    ``snapshots`` replays the current rows (an immutable tuple) to each new subscriber and emits
    after every change; ``diffs``/``inserts``/``updates``/``deletes`` are hot change streams;
    ``rows()``/``get(key)`` read the current state synchronously. Emissions to one failing
    observer are logged and do not stop the others. Nothing is read until ``connect()``.

    On a connection's stream it starts from the rows the connection's cache holds and then follows
    the change each message carries, so a late live table misses nothing and counts nothing twice.
    Other streams are folded through a private cache (``schema=``), from empty.

    Args:
        source: server messages (a connection's, or others with ``schema``) or ``TransactionDiff`` values.
        table: the table's canonical name.
        schema: the module schema, or a function returning it (not needed on a connection's stream).
        row_type: your own dataclass or NamedTuple for the rows (default: the generated class).
    """

    def __init__(self, source: Observable[Any], table: str, *, schema: SchemaSource | None = None,
                 row_type: type[Row] | None = None) -> None:
        self.table = table
        self._source = source
        self._schema = schema
        self._row_type = row_type
        # Guards the rows, the key function, the version and the pending diffs below. User code (a
        # row_type's constructor) never runs under it: rows are converted before it is taken.
        self._lock = threading.Lock()
        self._rows: dict[Any, Row] = {}
        self._converters = RowConverters(table, row_type)
        self._key_of: Callable[[Any], Any] | None = None
        # The connection cache's version the rows hold: older stamped diffs are in them already.
        self._version = -1
        # While a seed converts its rows: the newer diffs, folded into them when it is done.
        self._pending: list[TableDiff[Any]] | None = None
        self._subscription = SerialDisposable()
        self._connected = False
        self._snapshots: LatestSubject[tuple[Row, ...]] = LatestSubject(())
        self._diffs: GuardedSubject[TableDiff[Row]] = GuardedSubject()
        self._inserts: GuardedSubject[Row] = GuardedSubject()
        self._updates: GuardedSubject[tuple[Row, Row]] = GuardedSubject()
        self._deletes: GuardedSubject[Row] = GuardedSubject()

    # -- lifecycle -----------------------------------------------------------------------

    def connect(self) -> abc.DisposableBase:
        """Start following the source (once; later calls return the same subscription)."""
        with self._lock:
            if self._connected:
                return self._subscription
            self._connected = True
        stream = folded(self._source, schema=self._schema, cache=None, operator=f"live_table({self.table!r})")
        subscription, origin = find_origin(
            lambda: stream.subscribe(self._on_folded, self._on_error, self._on_completed))
        self._subscription.disposable = subscription
        if origin is not None and not self._subscription.is_disposed:
            self._seed(origin)
        return self._subscription

    def _seed(self, origin: MessageOrigin) -> None:
        """Start from the connection's cached rows and the cache version they hold.

        Stamped diffs of that version or older (e.g. still queued behind an ``observe_on``) are then
        skipped, newer ones folded: exact, with no window in between. The rows are read with the
        version under the lock, converted outside it, and installed with the diffs that came since.
        """
        schema = origin.schema
        if schema is None:
            return  # no schema yet: the cache is empty, every diff is new
        try:
            convert = self._converters.get(schema)
            with self._lock:
                version, rows = origin.cache.snapshot(self.table)
                self._version, self._pending = version, []
            converted = rows if convert is None else [convert(r) for r in rows]
        except Exception as err:  # an unknown table or a row type that does not fit
            self._subscription.dispose()
            self._on_error(err)
            return
        with self._lock:
            key_of = self._key(schema)
            self._rows = {key_of(row): row for row in converted}
            pending, self._pending = self._pending or [], None
            for diff in pending:
                self._apply(diff, key_of)
            snapshot = tuple(self._rows.values())
        self._snapshots.on_next(snapshot)

    def _key(self, schema: ModuleSchema | None) -> Callable[[Any], Any]:
        """The primary-key function (the row itself for a table without one); needs the lock."""
        if self._key_of is None:
            getter = primary_key_getter(schema, self.table) if schema is not None else None
            self._key_of = getter or _whole_row
        return self._key_of

    def dispose(self) -> None:
        """Stop following the source; the rows stay as they were."""
        self._subscription.dispose()

    def __enter__(self) -> LiveTable[Row]:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.dispose()

    # -- streams -------------------------------------------------------------------------

    @property
    def snapshots(self) -> Observable[tuple[Row, ...]]:
        """The current rows now (replayed on subscribe, also after the source ended), then on each change."""
        return self._snapshots

    @property
    def diffs(self) -> Observable[TableDiff[Row]]:
        """Each change of the table as a whole ``TableDiff``."""
        return self._diffs

    @property
    def inserts(self) -> Observable[Row]:
        """Rows that appeared."""
        return self._inserts

    @property
    def updates(self) -> Observable[tuple[Row, Row]]:
        """Rows that changed, as ``(old, new)`` (tables with a primary key only)."""
        return self._updates

    @property
    def deletes(self) -> Observable[Row]:
        """Rows that went away."""
        return self._deletes

    # -- lookups -------------------------------------------------------------------------

    def rows(self) -> tuple[Row, ...]:
        """The current rows, in the order they arrived."""
        with self._lock:
            return tuple(self._rows.values())

    def get(self, key: Any, default: Row | None = None) -> Row | None:
        """The row with this primary key (tuple for composite keys; the row itself without a key)."""
        with self._lock:
            return self._rows.get(key, default)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    def __repr__(self) -> str:
        state = "disposed" if self._subscription.is_disposed else (
            "connected" if self._connected else "not connected")
        return f"<LiveTable {self.table!r} rows={len(self)} {state}>"

    # -- folding -------------------------------------------------------------------------

    def _on_folded(self, value: Folded) -> None:
        for diff in value.diffs:
            found = diff.table(self.table)
            if found:
                try:
                    self._fold(found, value)
                except Exception as err:  # an unknown table or a row type that does not fit
                    self._subscription.dispose()
                    self._on_error(err)
                    return

    def _fold(self, diff: TableDiff[Any], value: Folded) -> None:
        schema = value.schema if value.schema is not None else self._resolved_schema()
        convert = self._converters.get(schema)
        if convert is not None:
            diff = diff.map_rows(convert)
        with self._lock:
            if value.version is not None and value.version <= self._version:
                return  # the seed holds it already
            if self._pending is not None:  # a seed is converting its rows: it folds this after
                self._pending.append(diff)
                snapshot = None
            else:
                self._apply(diff, self._key(schema))
                snapshot = tuple(self._rows.values())
        # The source is serialized (Rx contract), so emitting outside the lock keeps the order.
        if self._diffs.observers:  # naming the message costs a copy: only for a listener
            self._diffs.on_next(value.attached(diff))
        for row in diff.deletes:
            self._deletes.on_next(row)
        for pair in diff.updates:
            self._updates.on_next(pair)
        for row in diff.inserts:
            self._inserts.on_next(row)
        if snapshot is not None:
            self._snapshots.on_next(snapshot)

    def _apply(self, diff: TableDiff[Any], key_of: Callable[[Any], Any]) -> None:
        """Fold one diff into the rows; needs the lock."""
        rows = self._rows
        for row in diff.deletes:
            rows.pop(key_of(row), None)
        for old, new in diff.updates:
            old_key, new_key = key_of(old), key_of(new)
            if old_key != new_key:
                rows.pop(old_key, None)
            rows[new_key] = new
        for row in diff.inserts:
            rows[key_of(row)] = row

    def _resolved_schema(self) -> ModuleSchema | None:
        return resolve_schema(self._schema) if self._schema is not None else None

    def _on_error(self, error: Exception) -> None:
        for subject in (self._diffs, self._inserts, self._updates, self._deletes, self._snapshots):
            subject.on_error(error)

    def _on_completed(self) -> None:
        for subject in (self._diffs, self._inserts, self._updates, self._deletes, self._snapshots):
            subject.on_completed()


@overload
def live_table(
    table: str, *, schema: SchemaSource | None = None, row_type: None = None
) -> Callable[[Observable[Any]], LiveTable[Any]]: ...


@overload
def live_table(
    table: str, *, schema: SchemaSource | None = None, row_type: type[Row]
) -> Callable[[Observable[Any]], LiveTable[Row]]: ...


def live_table(
    table: str, *, schema: SchemaSource | None = None, row_type: type[Any] | None = None
) -> Callable[[Observable[Any]], LiveTable[Any]]:
    """A connected ``LiveTable`` of one table, for ``conn.messages.pipe(live_table("Player"))``.

    On a connection's stream it starts from the connection's cached rows and needs no schema (it is
    what ``conn.table`` gives); other message streams need ``schema=`` and start empty.

    ::

        source:            --S(a,b)------T(b→b')--T(-a)--|
        .snapshots:        ()-(a,b)------(a,b')---(b')---|   (replays the latest on subscribe)
        .inserts:          ---a-b------------------------|
        .updates:          --------------(b,b')----------|
        .deletes:          -----------------------a------|

    Args:
        table: the table's canonical name.
        schema: the module schema, or a function returning it, for a stream with no connection.
        row_type: your own dataclass or NamedTuple for the rows.

    Returns:
        A function of the source returning a connected ``LiveTable``; ``dispose()`` it when done.
        Without a connection behind the stream and without ``schema``, its streams error with
        ``TypeError`` at once.
    """
    if isinstance(schema, ModuleSchema):
        row_converter(schema, table, row_type)  # a wrong name or row type fails at the call

    def _live_table(source: Observable[Any]) -> LiveTable[Any]:
        live: LiveTable[Any] = LiveTable(source, table, schema=schema, row_type=row_type)
        live.connect()
        return live

    return _live_table


def _whole_row(row: Any) -> Any:
    return row
