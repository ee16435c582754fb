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
from rx_spacetimedb.cache import ClientCache, SchemaSource, TableDiff, primary_key_getter, resolve_schema
from rx_spacetimedb.operators._row_type import row_converter
from rx_spacetimedb.operators._table_diffs import table_diffs

__all__ = ["LiveTable", "live_table"]

Row = TypeVar("Row")
_S = TypeVar("_S")


class LiveTable(Generic[Row]):
    """The rows of one table, kept current from a message stream (or a connection's diff stream).

    ``snapshots`` replays the current rows (an immutable tuple) to each new subscriber and emits
    after every change; ``diffs``/``inserts``/``updates``/``deletes`` are hot change streams;
    ``rows()``/``get(key)`` read the current state synchronously. Emissions to one failing
    observer are logged and do not stop the others. Nothing is read until ``connect()``.

    Args:
        source: server messages (folded through a private cache) or ``TransactionDiff`` values.
        table: the table's canonical name.
        schema: the module schema, or a function returning it.
        row_type: your own dataclass or NamedTuple for the rows (default: the generated class).
        cache: the cache that ``source`` (a diff stream) comes from, e.g. a connection's shared one:
            ``connect()`` starts from its current rows, so a late live table misses nothing.
    """

    def __init__(self, source: Observable[Any], table: str, *, schema: SchemaSource,
                 row_type: type[Row] | None = None, cache: ClientCache | None = None) -> None:
        self.table = table
        self._source = source
        self._schema = schema
        self._row_type = row_type
        self._cache = cache
        self._lock = threading.Lock()
        self._rows: dict[Any, Row] = {}
        self._folded = 0  # diffs folded so far (lets a cache seed notice one arriving meanwhile)
        self._key_of: Callable[[Any], Any] | None = None
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
            self._key_of = primary_key_getter(resolve_schema(self._schema), self.table) or (lambda row: row)
        diffs = self._source.pipe(table_diffs(self.table, schema=self._schema, row_type=self._row_type))
        self._subscription.disposable = diffs.subscribe(self._on_diff, self._on_error, self._on_completed)
        if self._cache is not None:
            self._seed(self._cache)
        return self._subscription

    def _seed(self, cache: ClientCache) -> None:
        """Start from the cache's rows, read *after* subscribing so no diff falls in between.

        A diff the cache already holds may still arrive; folding it again changes nothing, because
        rows are set and removed by key.
        """
        convert = row_converter(resolve_schema(self._schema), self.table, self._row_type)
        while True:
            with self._lock:
                folded = self._folded
            # Read the cache outside our lock: a connection may emit diffs while holding the cache's.
            current = [convert(row) for row in cache.rows(self.table)]
            with self._lock:
                if self._folded != folded:
                    continue  # a diff came in meanwhile and may be older than what we read: again
                key_of = self._key_of
                assert key_of is not None
                self._rows = {key_of(row): row for row in current}
                snapshot = tuple(self._rows.values())
                break
        self._snapshots.on_next(snapshot)

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

    def _on_diff(self, diff: TableDiff[Row]) -> None:
        with self._lock:
            key_of = self._key_of
            assert key_of is not None
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
            self._folded += 1
            snapshot = tuple(rows.values())
        # The source is serialized (Rx contract), so emitting outside the lock keeps the order.
        self._diffs.on_next(diff)
        for row in diff.deletes:
            self._deletes.on_next(row)
        for pair in diff.updates:
            self._updates.on_next(pair)
        for row in diff.inserts:
            self._inserts.on_next(row)
        self._snapshots.on_next(snapshot)

    def _on_error(self, error: Exception) -> None:
        for subject in (self._diffs, self._inserts, self._updates, self._deletes, self._snapshots):
            subject.on_error(error)

    def _on_completed(self) -> None:
        for subject in (self._diffs, self._inserts, self._updates, self._deletes, self._snapshots):
            subject.on_completed()


@overload
def live_table(
    table: str, *, schema: SchemaSource, row_type: None = None, cache: ClientCache | None = None
) -> Callable[[Observable[Any]], LiveTable[Any]]: ...


@overload
def live_table(
    table: str, *, schema: SchemaSource, row_type: type[Row], cache: ClientCache | None = None
) -> Callable[[Observable[Any]], LiveTable[Row]]: ...


def live_table(
    table: str, *, schema: SchemaSource, row_type: type[Any] | None = None, cache: ClientCache | None = None
) -> Callable[[Observable[Any]], LiveTable[Any]]:
    """A connected ``LiveTable`` of one table, for ``source.pipe(live_table("Player", schema=s))``.

    ::

        source:            --S(a,b)------T(b→b')--T(-a)--|
        .snapshots:        ()-(a,b)------(a,b')---(b')---|   (replays the latest on subscribe)
        .inserts:          ---a-b------------------------|
        .updates:          --------------(b,b')----------|
        .deletes:          -----------------------a------|

    Args:
        table: the table's canonical name.
        schema: the module schema, or a function returning it.
        row_type: your own dataclass or NamedTuple for the rows.
        cache: the cache a diff ``source`` comes from, to start from its current rows.

    Returns:
        A function of the source returning a connected ``LiveTable``; ``dispose()`` it when done.
    """

    def _live_table(source: Observable[Any]) -> LiveTable[Any]:
        live: LiveTable[Any] = LiveTable(source, table, schema=schema, row_type=row_type, cache=cache)
        live.connect()
        return live

    return _live_table


