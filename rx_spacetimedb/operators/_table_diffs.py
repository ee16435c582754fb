"""The ``table_diffs`` operator: the changes of one table, one ``TableDiff`` per message.

What a UI or a game loop usually wants: typed rows of one table, with updates as (old, new) pairs,
and the transaction (reducer) each change came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from rx_spacetimedb.cache import SchemaSource, TableDiff, TransactionDiff, resolve_schema
from rx_spacetimedb.operators._cache_diffs import cache_diffs
from rx_spacetimedb.operators._row_type import row_converter
from rx_spacetimedb.protocol.schema import ModuleSchema

__all__ = ["table_diffs"]

Row = TypeVar("Row")


@overload
def table_diffs(
    table: str, *, schema: SchemaSource | None = None, row_type: None = None
) -> Callable[[Observable[Any]], Observable[TableDiff[Any]]]: ...


@overload
def table_diffs(
    table: str, *, schema: SchemaSource | None = None, row_type: type[Row]
) -> Callable[[Observable[Any]], Observable[TableDiff[Row]]]: ...


def table_diffs(
    table: str, *, schema: SchemaSource | None = None, row_type: type[Any] | None = None
) -> Callable[[Observable[Any]], Observable[TableDiff[Any]]]:
    """The changes of one table: inserts, deletes and updates ``(old, new)``, once per message.

    Works on server messages (folded through a private client cache, so overlapping queries and
    reconnects come out right) or on ``TransactionDiff`` values of a connection's shared cache.
    The initial rows of a subscription arrive as inserts (``cause == "subscribe"``); messages that
    do not change this table emit nothing.

    ::

        source:                 --S(a,b)--T(b→b')--T(other table)--T(-a)--|
        table_diffs("Player"):  --D(+a+b)-D(b→b')------------------D(-a)--|

    Args:
        table: the table's canonical name in the schema.
        schema: the module schema (or a function returning it); needed for a message stream.
        row_type: your own dataclass or NamedTuple for the rows (fields named and ordered like the
            columns); default: the row class generated from the schema.

    Returns:
        An operator function ``Observable[ServerMessage | TransactionDiff] -> Observable[TableDiff[Row]]``.

    Raises:
        SchemaError: unknown table, or a ``row_type`` that does not match its columns (at call time
            with a schema, else on the stream at subscription).
    """
    if isinstance(schema, ModuleSchema):
        # Fail early when we can: a wrong name should not wait for the first row.
        row_converter(schema, table, row_type)

    def _table_diffs(source: Observable[Any]) -> Observable[TableDiff[Any]]:
        def subscribe(observer: abc.ObserverBase[TableDiff[Any]],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            try:
                convert = row_converter(resolve_schema(schema) if schema is not None else None,
                                        table, row_type)
            except Exception as err:
                observer.on_error(err)
                return Disposable()

            def on_next(diff: TransactionDiff) -> None:
                found = diff.table(table)
                if found:
                    observer.on_next(found if row_type is None else found.map_rows(convert))

            return source.pipe(cache_diffs(schema)).subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _table_diffs
