"""Seed-style callbacks (``on_transaction_update`` …) attached as plain observers of the streams."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rx_spacetimedb.protocol import messages as m

if TYPE_CHECKING:
    from rx_spacetimedb.connection import Connection, ConnectionState

__all__ = ["CALLBACK_NAMES", "attach_handler", "callback_name", "check_handler"]


def callback_name(message: object) -> str:
    """``TransactionUpdate`` → ``on_transaction_update``."""
    return _callback_for(m.UnknownServerMessage if isinstance(message, m.UnknownServerMessage)
                         else type(message))


def _callback_for(kind: type) -> str:
    return "on_" + re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()


CALLBACK_NAMES = frozenset(
    [_callback_for(kind) for kind in typing.get_args(m.ServerMessage)] + ["on_disconnect"])
"""Every callback a handler may have: one per server message kind, and ``on_disconnect``."""


def check_handler(handler: Any) -> tuple[Any, tuple[Any, ...]]:
    """The handler object and the extra argument of its callbacks.

    Raises:
        ValueError: a malformed tuple, or ``on_...`` names that match no message kind or event
            (a typo would otherwise never be called), listed with the valid names.
    """
    extra: tuple[Any, ...] = ()
    if isinstance(handler, tuple):
        if len(handler) != 2:
            raise ValueError("handler: a tuple must be (object, arg)")
        handler, arg = handler
        extra = (arg,)
    names = list(handler) if isinstance(handler, Mapping) else [
        n for n in dir(handler) if n.startswith("on_") and callable(getattr(handler, n, None))]
    unknown = sorted(str(n) for n in names if n not in CALLBACK_NAMES)
    if unknown:
        raise ValueError(f"handler: {unknown} match no message kind or event; the callbacks are "
                         f"{sorted(CALLBACK_NAMES)}")
    return handler, extra


def attach_handler(conn: Connection, handler: Any) -> None:
    """Call ``handler``'s ``on_<message kind>(message[, arg])`` and ``on_disconnect(state[, arg])``.

    ``handler`` is an object or module with such methods, an ``(obj, arg)`` tuple whose ``arg`` is
    passed as a second argument, or a dict of callables keyed by those names. Missing callbacks
    are skipped. It is an observer of ``conn.messages``/``conn.states``, not a second code path.
    """
    handler, extra = check_handler(handler)

    def lookup(name: str) -> Callable[..., Any] | None:
        found = handler.get(name) if isinstance(handler, Mapping) else getattr(handler, name, None)
        return found if callable(found) else None


    def on_message(message: m.ServerMessage) -> None:
        callback = lookup(callback_name(message))
        if callback is not None:
            callback(message, *extra)

    def on_state(state: ConnectionState) -> None:
        if state.status == "disconnected":
            callback = lookup("on_disconnect")
            if callback is not None:
                callback(state, *extra)

    conn.messages.subscribe(on_message, lambda err: None)
    conn.states.subscribe(on_state, lambda err: None)
