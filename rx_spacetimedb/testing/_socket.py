"""The WebSocket side: handshake and its refusals, the per-connection loop, keepalive, faults."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets import exceptions as wsx
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import decode_client_message, encode_server_message
from rx_spacetimedb.protocol.values import ConnectionId, Identity
from rx_spacetimedb.testing._base import SUBPROTOCOL, EmulatedClient, fragments
from rx_spacetimedb.testing._http import HttpConnection, HttpMixin
from rx_spacetimedb.testing.auth import TokenError

__all__ = ["SocketMixin"]

log = logging.getLogger("rx_spacetimedb.testing")

_PREFERENCE: Final = ("v3.bsatn.spacetimedb", "v2.bsatn.spacetimedb", "v1.bsatn.spacetimedb", SUBPROTOCOL)


class SocketMixin(HttpMixin):
    """Serves ``v1.json.spacetimedb`` connections and injects faults into them."""

    def drop_all(self) -> int:
        """Drop every connection abruptly (TCP reset, no close frame); return how many.

        Rehearses network loss: clients see 1006 and must reconnect.
        """

        def run() -> int:
            clients = list(self.clients)
            for client in clients:
                if client._ws is not None:
                    client._ws.transport.abort()
            return len(clients)

        return self._call(run)

    def close_all(self, code: int = 1001, reason: str = "module exited") -> int:
        """Close every connection with a Close frame of ``code``/``reason``; return how many.

        Rehearses a server shutdown or restart (default: 1001 ``module exited``).
        """

        def run() -> int:
            clients = list(self.clients)
            for client in clients:
                if client._ws is not None:
                    self._spawn(client._ws.close(code, reason))
            return len(clients)

        return self._call(run)

    def drop_client(self, client: EmulatedClient) -> None:
        """Drop one connection abruptly (no close frame).

        Rehearses one client losing its network while the others stay connected.
        """

        def run() -> None:
            if client._ws is not None:
                client._ws.transport.abort()

        self._call(run)

    def close_client(self, client: EmulatedClient, code: int = 1001, reason: str = "module exited") -> None:
        """Close one connection with a Close frame of ``code``/``reason``.

        Rehearses a server-side close aimed at a single client.
        """

        def run() -> None:
            if client._ws is not None:
                self._spawn(client._ws.close(code, reason))

        self._call(run)

    def refuse_connections(self, count: int = 1) -> None:
        """Answer the next ``count`` WebSocket handshakes with HTTP 503.

        Rehearses an unavailable server during reconnects.
        """

        def run() -> None:
            self._refuse += count

        self._call(run)

    def set_delay(self, seconds: float) -> None:
        """Delay every outgoing message by ``seconds`` (0 to stop).

        Rehearses a slow network without slowing the test's own code.
        """

        def run() -> None:
            self.delay = seconds

        self._call(run)

    def inject(self, frame: str | bytes, client: EmulatedClient | None = None) -> None:
        """Send a raw frame (text or binary) to one client, or to all, in order with other messages.

        Rehearses unexpected or malformed server messages.
        """

        def run() -> None:
            for target in [client] if client is not None else list(self.clients):
                self._enqueue(target, frame)

        self._call(run)

    def pause(self) -> None:
        """Freeze the server: no message is processed or sent, no ping, handshakes wait, until resume().

        Rehearses a hung server, which only client-side timeouts detect.
        """
        self._call(self._running.clear)

    def resume(self) -> None:
        """Undo ``pause()``: queued work proceeds in order.

        Lets a test check what a client does once a hung server recovers.
        """
        self._call(self._running.set)

    @property
    def paused(self) -> bool:
        """True between ``pause()`` and ``resume()``.

        Tests and helpers can check the state they left the server in.
        """
        return not self._running.is_set()

    def wait_for_clients(self, count: int, timeout: float = 5.0) -> None:
        """Block until exactly ``count`` clients are connected (from a thread other than the server's).

        Raises TimeoutError naming the actual count; use ``wait_for_clients_async`` on the server's loop.
        """
        if self._loop is not None and self._on_loop():
            raise RuntimeError("wait_for_clients would block the server loop; await wait_for_clients_async")
        with self._clients_changed:
            if not self._clients_changed.wait_for(lambda: len(self.clients) == count, timeout):
                raise TimeoutError(f"expected {count} connected clients, have {len(self.clients)}")

    async def wait_for_clients_async(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` clients are connected (on any event loop, without blocking it).

        Async tests wait for (re)connections without sleeping.
        """
        if self._loop is not None and self._on_loop():
            async with asyncio.timeout(timeout):
                while len(self.clients) != count:
                    event = asyncio.Event()
                    self._loop_waiters.append(event)
                    await event.wait()
            return
        await asyncio.to_thread(self.wait_for_clients, count, timeout)

    def break_subscriptions(
        self,
        client: EmulatedClient | None = None,
        error: str = "emulated failure while evaluating a subscription",
    ) -> None:
        """Fail subscriptions as a transaction-time error does (§7.3): ``SubscriptionError`` without ids.

        The client(s) then get no transaction updates, unsubscribes fail with "Client not found", and the
        next ``SubscribeSingle``/``SubscribeMulti`` clears every old subscription first.
        """

        def run() -> None:
            for target in [client] if client is not None else list(self.clients):
                target.dropped = True
                self._send(target, m.SubscriptionError(0, None, None, None, error))

        self._call(run)

    # -- handshake ---------------------------------------------------------------------------

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self._running.is_set():
            await self._running.wait()
        if self._refuse > 0:
            self._refuse -= 1
            return connection.respond(503, "connection refused (emulator fault injection)")
        split = urlsplit(request.path)
        segments = split.path.split("/")
        if len(segments) != 5 or segments[:3] != ["", "v1", "database"] or segments[4] != "subscribe":
            return connection.respond(404, "")
        auth = request.headers.get("Authorization")
        token: str | None = None
        if auth is not None:
            if not auth.startswith("Bearer "):
                return connection.respond(400, "Authorization is invalid: malformed token")
            token = auth[len("Bearer ") :].strip()
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if token is None and "token" in params:
            token = params["token"]
        identity: Identity | None = None
        if token is not None:
            try:
                identity = self.tokens.validate(token).identity
            except TokenError as err:
                return connection.respond(401, str(err))
        name = unquote(segments[3])
        problem = self._check_database(name)
        if problem is not None and problem[0] == 400:
            return connection.respond(*problem)
        flags: dict[str, bool] = {}
        for key in ("light", "confirmed"):
            value = params.get(key, "false")
            if value not in ("true", "false"):
                return connection.respond(
                    400,
                    f"Failed to deserialize query string: {key}: provided string was not `true` or `false`",
                )
            flags[key] = value == "true"
        if params.get("compression", "Brotli") not in ("None", "Brotli", "Gzip"):
            return connection.respond(
                400,
                "Failed to deserialize query string: compression: unknown variant "
                f"`{params['compression']}`, expected one of `None`, `Brotli`, `Gzip`",
            )
        connection_id: ConnectionId | None = None
        if "connection_id" in params:
            try:
                connection_id = ConnectionId.from_hex(params["connection_id"])
            except ValueError as err:
                return connection.respond(400, f"Failed to deserialize query string: connection_id: {err}")
            if connection_id.value == 0:
                return connection.respond(
                    400, "Invalid connection ID: the all-zeros ConnectionId is reserved."
                )
        if problem is not None:
            return connection.respond(*problem)
        offered = [
            p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
        ]
        chosen = next((p for p in _PREFERENCE if p in offered), None)
        if chosen is None:
            return connection.respond(400, "no valid protocol selected")
        if chosen != SUBPROTOCOL:
            return connection.respond(
                400,
                f"no valid protocol selected: the emulator speaks only {SUBPROTOCOL}, and the real server "
                f"would pick {chosen} from this offer; offer only {SUBPROTOCOL}",
            )
        if identity is None:
            identity, token = self.tokens.mint()
        assert token is not None
        if connection_id is None:
            connection_id = ConnectionId(secrets.randbits(128) or 1)  # above 2**64 but for 1 in 2**64
        assert isinstance(connection, HttpConnection)
        connection.client = EmulatedClient(identity, token, connection_id, flags["light"], flags["confirmed"])
        return None

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        client = getattr(connection, "client", None)
        if response.status_code == 101 and client is not None:
            response.headers["spacetime-identity"] = client.identity.hex
            response.headers["spacetime-identity-token"] = client.token
        return None

    # -- connection --------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, HttpConnection)
        client = ws.client
        if client is None:
            ws.transport.abort()
            return
        connected = self.module.lifecycle("OnConnect")
        if connected is not None:
            status = self._run_reducer_tx(connected.name, (), client.identity, client.connection_id, 0, "[]")
            if not isinstance(status, m.Committed):
                ws.transport.abort()  # the module refused: drop TCP, no close frame, no message
                return
        client._ws = ws
        client._queue = asyncio.Queue()
        client._closed = asyncio.Event()
        client.connected = True
        self.clients.append(client)
        self.history.append(client)
        self._notify_clients_changed()
        self._enqueue(
            client,
            encode_server_message(m.IdentityToken(client.identity, client.token, client.connection_id)),
        )
        inbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        sender = asyncio.ensure_future(self._sender(client, ws))
        keepalive = asyncio.ensure_future(self._keepalive(ws))
        processor = asyncio.ensure_future(self._processor(client, inbox))
        try:
            while True:
                try:
                    frame = await ws.recv()
                except wsx.ConnectionClosed:
                    break
                client.received.append(frame)
                if inbox.qsize() >= self.queue_limit:
                    client.connected = False  # incoming queue overflow (spec §8.1)
                    self._spawn(ws.close(1013, "too many requests"))
                    continue
                inbox.put_nowait(frame)
        finally:
            client.connected = False
            client.close_code = ws.close_code
            keepalive.cancel()
            sender.cancel()
            processor.cancel()
            if client in self.clients:
                self.clients.remove(client)
                self._notify_clients_changed()
            client._closed.set()
            disconnected = self.module.lifecycle("OnDisconnect")
            if disconnected is not None:
                self._run_reducer_tx(disconnected.name, (), client.identity, client.connection_id, 0, "[]")

    async def _processor(self, client: EmulatedClient, inbox: asyncio.Queue[str | bytes]) -> None:
        """Handle a client's messages in order, one at a time, waiting while the server is paused."""
        while True:
            frame = await inbox.get()
            if not self._running.is_set():
                await self._running.wait()
            if client.connected:  # after a decode error the connection is closing: ignore the rest
                self._on_frame(client, frame)

    async def _sender(self, client: EmulatedClient, ws: ServerConnection) -> None:
        assert client._queue is not None
        try:
            while True:
                queued_at, item = await client._queue.get()
                if self.delay > 0:  # latency, not throughput: each message leaves `delay` after it was made
                    await asyncio.sleep(max(0.0, queued_at + self.delay - time.monotonic()))
                if not self._running.is_set():
                    await self._running.wait()
                if isinstance(item, tuple):
                    code, reason = item
                    await ws.close(code, reason)
                    return
                client.sent.append(item)
                if (
                    isinstance(item, str)
                    and self.fragment_size is not None
                    and len(item) * 4 > self.fragment_size
                ):
                    pieces = fragments(item, self.fragment_size)
                    await ws.send(pieces if len(pieces) > 1 else item)
                else:
                    await ws.send(item)
        except wsx.ConnectionClosed:
            pass

    async def _keepalive(self, ws: ServerConnection) -> None:
        assert isinstance(ws, HttpConnection)
        loop = asyncio.get_running_loop()
        tick = max(0.01, min(self.ping_interval, self.idle_timeout) / 4)
        next_ping = loop.time()
        pong: Any = None
        try:
            while True:
                now = loop.time()
                if self._running.is_set():
                    if now - ws.last_activity > self.idle_timeout:
                        ws.transport.abort()  # idle: dropped without a close frame
                        return
                    if now >= next_ping:
                        if pong is None or pong.done():
                            pong = await ws.ping(b"")
                        next_ping = now + self.ping_interval
                else:
                    ws.last_activity = now  # a frozen server does not count time
                await asyncio.sleep(tick)
        except wsx.ConnectionClosed:
            pass

    def _on_frame(self, client: EmulatedClient, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self._close(
                client,
                1011,
                "binary frames (v1.bsatn) are not supported by the emulator: send v1.json text frames",
            )
            return
        try:
            message = decode_client_message(frame)
        except ProtocolError as err:
            self._close(client, 1011, str(err))
            return
        handler: Callable[[EmulatedClient, Any], None] = {  # type: ignore[assignment]
            m.CallReducer: self._on_call_reducer,
            m.CallProcedure: self._on_call_procedure,
            m.Subscribe: self._on_subscribe,
            m.SubscribeSingle: self._on_subscribe_single,
            m.SubscribeMulti: self._on_subscribe_multi,
            m.Unsubscribe: self._on_unsubscribe,
            m.UnsubscribeMulti: self._on_unsubscribe_multi,
            m.OneOffQuery: self._on_one_off,
        }[type(message)]
        try:
            handler(client, message)
        except Exception:
            log.exception("emulator failed handling %r", message)
            self._close(client, 1011, "internal emulator error")
