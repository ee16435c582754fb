"""What a connection knew when it delivered a message, so operators downstream need no state.

A ``Connection`` folds each server message into its client cache, then stamps the message with a
``Delivery``: the schema, the net change the cache computed for it and the connection's own id.
``conn.messages.pipe(ops.filter(...), ops.observe_on(...), table_diffs("Player"))`` then reads the
stamp of each message that reaches it, so it gives what the connection itself gives, however late
it was subscribed and whatever passed messages through on the way.

Operators also need to know *before* the first message whether a connection is behind a stream
(to fail at subscribe time when nothing can decode the rows, and for a live table to start from
the cached rows). ``find_origin`` learns it while subscribing: a connection's message subject
answers the probe when it is subscribed, on the subscribing thread, through any chain of operators
that subscribe their source at once (``filter``, ``map``, ``take``, ``observe_on``, the first
subscriber of ``share``...).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from reactivex import abc

from rx_spacetimedb._streams import ErrorSink, GuardedSubject
from rx_spacetimedb.cache import ClientCache, TransactionDiff
from rx_spacetimedb.protocol.messages import Delivered
from rx_spacetimedb.protocol.sats import slot_descriptors
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.values import ConnectionId

__all__ = [
    "Delivery",
    "MessageOrigin",
    "MessageSubject",
    "deliver",
    "delivery_of",
    "find_origin",
    "no_origin_error",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Delivery:
    """The stamp a connection puts on each message it delivers.

    ``diffs`` hold no reference to the message (``message`` is None in them): a message that
    referred to itself through its stamp would be a cycle, and the C parser leaves some messages
    untracked by the garbage collector. Operators attach the message as they emit
    (``TransactionDiff.with_message``).

    Attributes:
        schema: the module schema the rows were decoded with (None: the connection has none).
        diffs: what the message changed in the connection's cache (usually one diff; none for
            messages that change nothing; two when a reconnect's resync ends with it).
        connection_id: the connection id of the socket the message came on.
        version: the cache's version after this message (see ``ClientCache.version``).
    """

    schema: ModuleSchema | None
    diffs: tuple[TransactionDiff, ...]
    connection_id: ConnectionId | None
    version: int


_set_delivery = Delivered._delivery.__set__  # type: ignore[attr-defined]
_get_delivery = Delivered._delivery.__get__  # type: ignore[attr-defined]
_set_schema, _set_diffs, _set_connection_id, _set_version = (
    slot.__set__ for slot in slot_descriptors(Delivery))


def deliver(message: Delivered, schema: ModuleSchema | None, diffs: tuple[TransactionDiff, ...],
            connection_id: ConnectionId | None, version: int) -> None:
    """Stamp a message with a new ``Delivery``.

    Both are frozen: they are filled through their slot descriptors, which also costs half of the
    frozen ``__init__``, and this runs for every message.
    """
    delivery: Delivery = object.__new__(Delivery)
    _set_schema(delivery, schema)
    _set_diffs(delivery, diffs)
    _set_connection_id(delivery, connection_id)
    _set_version(delivery, version)
    _set_delivery(message, delivery)


def delivery_of(message: object) -> Delivery | None:
    """The stamp of a message a connection delivered; None for any other value."""
    if not isinstance(message, Delivered):
        return None
    try:
        delivery: Delivery = _get_delivery(message, Delivered)
    except AttributeError:  # an empty slot: decoded, but not delivered by a connection
        return None
    return delivery


class MessageOrigin(Protocol):
    """What operators may ask of the connection behind a stream."""

    @property
    def schema(self) -> ModuleSchema | None:
        """The module schema, once fetched."""
        ...

    @property
    def cache(self) -> ClientCache:
        """The connection's client cache."""
        ...


_probe: contextvars.ContextVar[list[MessageOrigin] | None] = contextvars.ContextVar(
    "rx_spacetimedb_probe", default=None)


def find_origin(subscribe: Callable[[], _T]) -> tuple[_T, MessageOrigin | None]:
    """Call ``subscribe`` and return its result with the connection whose messages it subscribed."""
    found: list[MessageOrigin] = []
    token = _probe.set(found)
    try:
        result = subscribe()
    finally:
        _probe.reset(token)
    outer = _probe.get()
    if outer is not None:  # an operator built on another one: both learn the origin
        outer.extend(found)
    return result, (found[0] if found else None)


class MessageSubject(GuardedSubject[_T]):
    """A connection's guarded message subject, which answers ``find_origin`` when subscribed."""

    def __init__(self, origin: MessageOrigin, on_observer_error: ErrorSink) -> None:
        super().__init__(on_observer_error)
        self._origin = origin

    def _subscribe_core(self, observer: abc.ObserverBase[_T],
                        scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        found = _probe.get()
        if found is not None:
            found.append(self._origin)
        return super()._subscribe_core(observer, scheduler)


def no_origin_error(operator: str) -> TypeError:
    """The error of an operator that can neither read stamps nor fold messages itself."""
    folds_into = " or cache=" if operator.startswith("cache_diffs") else ""
    return TypeError(
        f"{operator}: this stream has no Connection behind it, so pass schema= (a ModuleSchema, e.g. "
        f"conn.schema or ModuleSchema.from_json(...)){folds_into} to fold its messages. On a connection's "
        "stream it needs neither; if you see this there, apply the operator before share() or "
        "subscribe_on(), which hide the connection from a later subscriber")
