"""The emulator's shared state and its way out to a client: what every other part builds on.

``EmulatorBase`` declares the attributes ``SpacetimeDBEmulator.__init__`` sets (so each private part
type-checks on its own), runs work on the server loop from other threads (``_call``), and queues
frames for a client (``_enqueue``/``_send``/``_close``). ``EmulatedClient`` is one connection as the
emulator sees it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from websockets.asyncio.server import Server, ServerConnection

from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import encode_server_message
from rx_spacetimedb.protocol.values import ConnectionId, Identity, Timestamp
from rx_spacetimedb.testing.auth import TokenIssuer
from rx_spacetimedb.testing.module import Database, Module
from rx_spacetimedb.testing.sql import Query

if TYPE_CHECKING:
    from rx_spacetimedb.protocol.schema import ModuleSchema
    from rx_spacetimedb.testing._storage import CommitLog, Recovery

__all__ = [
    "FATAL_PREFIX",
    "NO_REDUCER_ID",
    "SUBPROTOCOL",
    "EmulatedClient",
    "EmulatorBase",
    "fragments",
    "micros_since",
]

log = logging.getLogger("rx_spacetimedb.testing")

SUBPROTOCOL: Final = "v1.json.spacetimedb"
NO_REDUCER_ID: Final = 4294967295
"""The reducer id of a call that names no reducer (and of SQL DML), u32::MAX as on the server."""
FATAL_PREFIX: Final = "The module instance encountered a fatal error: "
"""The server's prefix of a procedure's failure text (``ProcedureCallError::InternalError``)."""
_CLOSE_REASON_BYTES: Final = 123
_T = TypeVar("_T")


def _truncate_reason(text: str) -> str:
    """Cut a close reason to 123 bytes at a UTF-8 character boundary (spec §8.3)."""
    data = text.encode()
    if len(data) <= _CLOSE_REASON_BYTES:
        return text
    return data[:_CLOSE_REASON_BYTES].decode(errors="ignore")


def fragments(text: str, size: int) -> list[str]:
    """Split a message into pieces of at most ``size`` UTF-8 bytes, at character boundaries."""
    data = text.encode()
    if len(data) <= size:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + max(size, 4), len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def micros_since(start: float) -> int:
    return max(1, int((time.perf_counter() - start) * 1_000_000))


@dataclasses.dataclass(eq=False)
class EmulatedClient:
    """One WebSocket connection as the emulator sees it, with everything it received and sent.

    ``received`` holds every client data frame (text as ``str``, binary as ``bytes``) in arrival
    order, ``sent`` every frame the server sent; both exist for assertions in tests.
    """

    identity: Identity
    token: str = dataclasses.field(repr=False)
    connection_id: ConnectionId
    light: bool = False
    confirmed: bool = False
    received: list[str | bytes] = dataclasses.field(default_factory=list, repr=False)
    sent: list[str | bytes] = dataclasses.field(default_factory=list, repr=False)
    connected: bool = False
    close_code: int | None = None
    legacy: dict[str, Query] = dataclasses.field(default_factory=dict, repr=False)
    query_sets: dict[int, list[str]] = dataclasses.field(default_factory=dict, repr=False)
    refs: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    compiled: dict[str, Query] = dataclasses.field(default_factory=dict, repr=False)
    dropped: bool = False
    """True after a transaction-time ``SubscriptionError``: subscriptions are dead until re-subscribed."""
    _ws: ServerConnection | None = dataclasses.field(default=None, repr=False)
    _queue: asyncio.Queue[tuple[float, str | bytes | tuple[int, str]]] | None = dataclasses.field(
        default=None, repr=False
    )
    _closed: asyncio.Event | None = dataclasses.field(default=None, repr=False)

    def messages(self) -> list[m.ServerMessage]:
        """The decoded server messages sent to this client (for assertions).

        Tests can assert on typed messages instead of raw JSON.
        """
        from rx_spacetimedb.protocol.codec import decode_server_message

        return [decode_server_message(s) for s in self.sent if isinstance(s, str)]

    @property
    def subscribed_queries(self) -> list[str]:
        """Distinct query texts this client holds (query ids and the legacy set together).

        Shows what the server would send deltas for.
        """
        return list(dict.fromkeys([*(t for t, n in self.refs.items() if n > 0), *self.legacy]))


class EmulatorBase:
    """The state the emulator's parts share (set by ``SpacetimeDBEmulator.__init__``) and its outbox."""

    module: Module
    db: Database
    schema: ModuleSchema
    identity: Identity
    """The database's identity."""
    owner: Identity
    owner_token: str | None
    tokens: TokenIssuer
    clients: list[EmulatedClient]
    history: list[EmulatedClient]
    clock: Callable[[], Timestamp]
    ping_interval: float
    idle_timeout: float
    hide_reducer_details: bool
    fragment_size: int | None
    max_message_size: int
    queue_limit: int
    delay: float
    data_dir: Path | None
    recovery: Recovery | None
    _database: str
    _host: str
    _requested_port: int
    _port: int | None
    _log: CommitLog | None
    _header: dict[str, Any] | None
    _loop: asyncio.AbstractEventLoop | None
    _thread: threading.Thread | None
    _server: Server | None
    _stop: asyncio.Event | None
    _running: asyncio.Event
    _refuse: int
    _tasks: set[asyncio.Task[Any]]
    _loop_waiters: list[asyncio.Event]
    _timers: dict[tuple[str, Any], asyncio.TimerHandle]
    _clients_changed: threading.Condition

    @property
    def database(self) -> str:
        """The database name.

        Clients connect to ``/v1/database/{database}/subscribe``.
        """
        return self._database

    def _call(self, func: Callable[[], _T]) -> _T:
        """Run ``func`` on the server loop (directly if already there) and return its result."""
        loop = self._loop
        if loop is None:
            return func()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return func()
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(func())
            except BaseException as err:
                result.set_exception(err)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=30)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _notify_clients_changed(self) -> None:
        with self._clients_changed:
            self._clients_changed.notify_all()
        waiters, self._loop_waiters = self._loop_waiters, []
        for event in waiters:
            event.set()

    def _enqueue(self, client: EmulatedClient, frame: str | bytes | tuple[int, str]) -> None:
        queue = client._queue
        if queue is None or not client.connected:
            return
        if queue.qsize() >= self.queue_limit and client._ws is not None:
            client._ws.transport.abort()  # outgoing queue overflow: dropped without a close frame
            return
        queue.put_nowait((time.monotonic(), frame))

    def _close(self, client: EmulatedClient, code: int, reason: str) -> None:
        self._enqueue(client, (code, _truncate_reason(reason)))
        client.connected = False

    def _send(self, client: EmulatedClient, message: m.ServerMessage) -> None:
        self._enqueue(client, encode_server_message(message))
