"""The common base of the cache operators: each message's diffs, read from its stamp or folded here.

On a connection's stream every message carries the net change the connection's cache computed for
it (``rx_spacetimedb.delivery``), so nothing is folded twice and a late subscriber is as right as
an early one. Other streams (frames replayed from a file) are folded through a cache made for the
subscription from ``schema=``, or through the ``cache=`` given; with neither, subscribing fails.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from rx_spacetimedb.cache import ClientCache, SchemaSource, TableDiff, TransactionDiff, resolve_schema
from rx_spacetimedb.delivery import MessageOrigin, delivery_of, find_origin, no_origin_error
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol.schema import ModuleSchema

__all__ = ["Folded", "folded", "subscribe_with_origin"]

_D = TypeVar("_D", TransactionDiff, TableDiff[Any])
_new_tuple = tuple.__new__


class Folded(NamedTuple):
    """What one source value changed, with the schema its rows were decoded with.

    Stamped diffs do not name their message (see ``Delivery``): operators attach ``message`` to
    what they emit, and only to that (``attached``), which costs a copy per emitted diff.
    """

    diffs: tuple[TransactionDiff, ...]
    schema: ModuleSchema | None
    version: int | None  # the connection cache's version after it (None off a connection)
    message: Any  # the stamped message the diffs came from (None: they name it themselves)

    def attached(self, diff: _D) -> _D:
        """``diff`` naming the message it came from."""
        message = self.message
        return diff if message is None else diff.with_message(message)


def subscribe_with_origin(
    source: Observable[Any], observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None,
    on_next: Any, *, needs_origin: bool, operator: str,
) -> tuple[abc.DisposableBase, MessageOrigin | None]:
    """Subscribe ``on_next`` to ``source``; fail ``observer`` now if no connection is behind it
    and ``needs_origin`` (the operator has no schema of its own)."""
    subscription, origin = find_origin(
        lambda: source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler))
    if origin is None and needs_origin:
        subscription.dispose()
        observer.on_error(no_origin_error(operator))
        return Disposable(), None
    return subscription, origin


def folded(source: Observable[Any], *, schema: SchemaSource | None, cache: ClientCache | None,
           operator: str) -> Observable[Folded]:
    """Each message's diffs (stamped or folded) and each ``TransactionDiff`` of ``source`` as ``Folded``."""

    def subscribe(observer: abc.ObserverBase[Folded],
                  scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        folding = cache if cache is not None else (ClientCache(schema) if schema is not None else None)

        def on_next(value: Any) -> None:
            if isinstance(value, TransactionDiff):  # a cache folded it already
                observer.on_next(Folded((value,), _schema_or_none(schema), None, None))
                return
            delivery = delivery_of(value) if cache is None else None
            if delivery is not None:
                if delivery.schema is None:
                    observer.on_error(SchemaError(
                        f"{operator}: the connection has no module schema to decode rows with; "
                        "connect with fetch_schema=True (the default) or schema="))
                    return
                # tuple.__new__: half the cost of the NamedTuple's own __new__, once per message
                stamped = (delivery.diffs, delivery.schema, delivery.version, value)
                observer.on_next(_new_tuple(Folded, stamped))
                return
            if folding is None:  # a value without a stamp in a stream that had a connection
                observer.on_error(no_origin_error(operator))
                return
            try:
                diff = folding.apply(value)
            except Exception as err:
                observer.on_error(err)
                return
            observer.on_next(Folded((diff,), _schema_or_none(schema), None, None))

        subscription, _ = subscribe_with_origin(source, observer, scheduler, on_next,
                                                needs_origin=folding is None, operator=operator)
        return subscription

    return Observable(subscribe)


def _schema_or_none(schema: SchemaSource | None) -> ModuleSchema | None:
    return resolve_schema(schema) if schema is not None else None
