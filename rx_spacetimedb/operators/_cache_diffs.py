"""The ``cache_diffs`` operator: fold a message stream through a client cache, emit what changed.

It is the base of ``table_diffs``, ``transactions`` and ``LiveTable``: a message stream does not
carry the schema or the cache, so the fold lives here, one cache per subscription.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc

from rx_spacetimedb.cache import ClientCache, SchemaSource, TransactionDiff

__all__ = ["cache_diffs"]


def cache_diffs(
    schema: SchemaSource | None = None,
    *,
    cache: ClientCache | None = None,
    include_empty: bool = False,
) -> Callable[[Observable[Any]], Observable[TransactionDiff]]:
    """Every change of the client cache as one ``TransactionDiff`` per message (spec §7.5).

    Server messages are folded through a cache made for each subscription (or the ``cache``
    given); ``TransactionDiff`` values (a connection's shared cache already folded them) pass
    through. Subscribe before the subscriptions are applied: snapshot rows arrive as inserts.
    A reconnect (an ``IdentityToken`` of a new connection) resyncs: only the net change comes out.

    ::

        source:          --I--S(a,b)--T(b→b')--F--U(a)--|     (F: a failed reducer)
        cache_diffs(s):  -----D(+a+b)-D(b→b')-----D(-a)-|

    Args:
        schema: the module schema (or a function returning it) to decode rows; needed for messages.
        cache: fold into this cache instead of a private one, e.g. to query it synchronously.
            Only one subscription may fold into a cache: each message must be applied once.
        include_empty: also emit diffs that change nothing (failed reducers, repeated snapshots,
            messages that do not touch the cache), e.g. to see every transaction.

    Returns:
        An operator function ``Observable[ServerMessage | TransactionDiff] -> Observable[TransactionDiff]``.

    Raises (on the stream):
        TypeError: a message arrived but neither ``schema`` nor ``cache`` was given.
        ProtocolError: a row did not decode (the cache keeps its state from before that message).
    """

    def _cache_diffs(source: Observable[Any]) -> Observable[TransactionDiff]:
        def subscribe(observer: abc.ObserverBase[TransactionDiff],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            folding = cache if cache is not None else (ClientCache(schema) if schema is not None else None)

            def on_next(value: Any) -> None:
                if isinstance(value, TransactionDiff):
                    diff = value
                elif folding is None:
                    observer.on_error(TypeError("cache_diffs needs schema= (or cache=) to fold server "
                                                f"messages, got a {type(value).__name__}"))
                    return
                else:
                    try:
                        diff = folding.apply(value)
                    except Exception as err:
                        observer.on_error(err)
                        return
                if include_empty or diff:
                    observer.on_next(diff)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _cache_diffs
