"""Seed-style callbacks (``on_transaction_update`` …) attached as plain observers of the streams."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rx_spacetimedb.protocol import messages as m

if TYPE_CHECKING:
    from rx_spacetimedb.connection import Connection, ConnectionState

__all__ = ["attach_handler", "callback_name"]


def callback_name(message: object) -> str:
    """``TransactionUpdate`` → ``on_transaction_update``."""
    name = type(message).__name__
    if isinstance(message, m.UnknownServerMessage):
        name = "UnknownServerMessage"
    return "on_" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def attach_handler(conn: Connection, handler: Any) -> None:
    """Call ``handler``'s ``on_<message kind>(message[, arg])`` and ``on_disconnect(state[, arg])``.

    ``handler`` is an object or module with such methods, an ``(obj, arg)`` tuple whose ``arg`` is
    passed as a second argument, or a dict of callables keyed by those names. Missing callbacks
    are skipped. It is an observer of ``conn.messages``/``conn.states``, not a second code path.
    """
    extra: tuple[Any, ...] = ()
    if isinstance(handler, tuple):
        if len(handler) != 2:
            raise ValueError("handler: a tuple must be (object, arg)")
        handler, arg = handler
        extra = (arg,)

    def lookup(name: str) -> Callable[..., Any] | None:
        found = handler.get(name) if isinstance(handler, Mapping) else getattr(handler, name, None)
        return found if callable(found) else None

    if isinstance(handler, Mapping):
        unknown = [k for k in handler if not str(k).startswith("on_")]
        if unknown:
            raise ValueError(f"handler: keys must be on_<kind> callback names, got {unknown}")

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
