"""The ``cache_diffs`` operator: what each message changed in the client cache, one diff per message.

It is the base of ``table_diffs``, ``transactions`` and ``LiveTable``. On a connection's stream it
reads the change the connection's cache computed; other streams are folded through a cache here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc

from rx_spacetimedb.cache import ClientCache, SchemaSource, TransactionDiff
from rx_spacetimedb.operators._fold import Folded, folded

__all__ = ["cache_diffs"]


def cache_diffs(
    schema: SchemaSource | None = None,
    *,
    cache: ClientCache | None = None,
    include_empty: bool = False,
) -> Callable[[Observable[Any]], Observable[TransactionDiff]]:
    """Every change of the client cache as one ``TransactionDiff`` per message (spec §7.5).

    On a connection's stream (``conn.messages``, also behind ``filter``, ``observe_on``...) each
    message carries the net change the connection's cache computed for it, so this needs no
    argument and is right whenever it is subscribed. Other streams of server messages are folded
    through a cache made for each subscription from ``schema`` (or through the ``cache`` given):
    subscribe those before the subscriptions are applied, so snapshot rows arrive as inserts.
    ``TransactionDiff`` values pass through.

    ::

        source:          --I--S(a,b)--T(b→b')--F--U(a)--|     (F: a failed reducer)
        cache_diffs():   -----D(+a+b)-D(b→b')-----D(-a)-|

    Args:
        schema: the module schema (or a function returning it), for a stream with no connection.
        cache: fold into this cache instead (also on a connection's stream), e.g. to query it
            synchronously. Only one subscription may fold into a cache: each message must be
            applied once.
        include_empty: also emit diffs that change nothing (failed reducers, repeated snapshots,
            messages that do not touch the cache), e.g. to see every transaction.

    Returns:
        An operator function ``Observable[ServerMessage | TransactionDiff] -> Observable[TransactionDiff]``.

    Raises (on the stream):
        TypeError: at subscribe time, when no connection is behind the stream and neither
            ``schema`` nor ``cache`` was given.
        ProtocolError: a row did not decode (a cache of this operator keeps its state from before).
    """

    def _cache_diffs(source: Observable[Any]) -> Observable[TransactionDiff]:
        def subscribe(observer: abc.ObserverBase[TransactionDiff],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(value: Folded) -> None:
                for diff in value.diffs:
                    if include_empty or diff:
                        observer.on_next(value.attached(diff))

            return folded(source, schema=schema, cache=cache, operator="cache_diffs").subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _cache_diffs
