"""The ``table_diffs`` operator: the changes of one table, one ``TableDiff`` per message.

What a UI or a game loop usually wants: typed rows of one table, with updates as (old, new) pairs,
and the transaction (reducer) each change came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from reactivex import Observable, abc

from rx_spacetimedb.cache import SchemaSource, TableDiff
from rx_spacetimedb.delivery import find_origin
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.operators._fold import Folded, folded
from rx_spacetimedb.operators._row_type import RowConverters, row_converter
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

    On a connection's stream (``conn.messages.pipe(table_diffs("Player"))``, also behind
    ``filter``, ``observe_on``...) it needs no schema and gives what ``conn.table_diffs`` gives,
    whenever it is subscribed: the diffs come from the connection's cache, so overlapping queries
    and reconnects come out right. Other message streams are folded through a private cache
    (``schema=``); ``TransactionDiff`` values are read as they are. The initial rows of a
    subscription arrive as inserts (``cause == "subscribe"``); messages that do not change this
    table emit nothing.

    ::

        source:                 --S(a,b)--T(b→b')--T(other table)--T(-a)--|
        table_diffs("Player"):  --D(+a+b)-D(b→b')------------------D(-a)--|

    Args:
        table: the table's canonical name in the schema.
        schema: the module schema (or a function returning it), for a stream with no connection.
        row_type: your own dataclass or NamedTuple for the rows (fields named and ordered like the
            columns); default: the row class generated from the schema.

    Returns:
        An operator function ``Observable[ServerMessage | TransactionDiff] -> Observable[TableDiff[Row]]``.

    Raises:
        SchemaError: unknown table, or a ``row_type`` that does not match its columns (at call time
            with a schema, else on the stream as soon as the schema is known).
        TypeError (on the stream, at subscribe time): no connection behind the stream and no
            ``schema``.
    """
    if isinstance(schema, ModuleSchema):
        # Fail early when we can: a wrong name should not wait for the first row.
        row_converter(schema, table, row_type)

    def _table_diffs(source: Observable[Any]) -> Observable[TableDiff[Any]]:
        def subscribe(observer: abc.ObserverBase[TableDiff[Any]],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            converters = RowConverters(table, row_type)

            def on_next(value: Folded) -> None:
                try:
                    convert = converters.get(value.schema)
                except SchemaError as err:
                    observer.on_error(err)
                    return
                for diff in value.diffs:
                    found = diff.table(table)
                    if found:
                        found = value.attached(found)
                        observer.on_next(found if convert is None else found.map_rows(convert))

            subscription, origin = find_origin(lambda: folded(
                source, schema=schema, cache=None, operator=f"table_diffs({table!r})").subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler))
            if origin is not None and origin.schema is not None:
                try:  # a connection that knows its schema: a wrong name fails now
                    converters.get(origin.schema)
                except SchemaError as err:
                    subscription.dispose()
                    observer.on_error(err)
            return subscription

        return Observable(subscribe)

    return _table_diffs

