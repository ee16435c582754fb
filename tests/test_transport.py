"""Tests of the transport against a real loopback websockets server, and of the I/O thread."""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from rx_spacetimedb._ioloop import IoLoop
from rx_spacetimedb.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionClosed,
    ConnectionRejected,
    DatabaseNotFound,
    HandshakeError,
    ProtocolError,
    TransportError,
)
from rx_spacetimedb.transport import SUBPROTOCOL, Transport, build_url

TOKEN = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ.c2lnbmF0dXJl"
IDENTITY_TOKEN = '{"IdentityToken":{"identity":{"__identity__":"0xab"},"token":"' + TOKEN + '"}}'

Handler = Callable[[ServerConnection], Awaitable[None]]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (no pytest-asyncio needed)."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), 10))

    return wrapper


class Server:
    """A loopback SpacetimeDB stand-in: records handshakes, runs a per-test handler."""

    def __init__(self, handler: Handler, status: int | None = None, body: str = "") -> None:
        self.handler = handler
        self.status = status
        self.body = body
        self.requests: list[Request] = []
        self.port = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.status is not None:
            return connection.respond(self.status, self.body)
        return None

    @staticmethod
    def process_response(
        connection: ServerConnection, request: Request, response: Response
    ) -> Response:
        response.headers["spacetime-identity-token"] = TOKEN
        return response

    @property
    def host(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def server(
    handler: Handler, *, status: int | None = None, body: str = "",
    subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
) -> AsyncIterator[Server]:
    srv = Server(handler, status, body)
    async with serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=[Subprotocol(p) for p in subprotocols],
        process_request=srv.process_request,
        process_response=srv.process_response,
        close_timeout=0.5,
    ) as ws_server:
        srv.port = ws_server.sockets[0].getsockname()[1]
        yield srv


async def open_transport(srv: Server, **kwargs: Any) -> Transport:
    return await Transport.open(srv.host, "quickstart-chat", proxy=None, **kwargs)


async def hold_open(ws: ServerConnection) -> None:
    await ws.wait_closed()


# --- URL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost:3000", "ws://localhost:3000/v1/database/db/subscribe"),
        ("ws://localhost:3000", "ws://localhost:3000/v1/database/db/subscribe"),
        ("http://localhost:3000/", "ws://localhost:3000/v1/database/db/subscribe"),
        ("https://maincloud.example", "wss://maincloud.example/v1/database/db/subscribe"),
        ("WSS://h:443/prefix/", "wss://h:443/prefix/v1/database/db/subscribe"),
    ],
)
def test_build_url_maps_schemes(host: str, expected: str) -> None:
    assert build_url(host, "db") == expected + "?light=false&confirmed=false"


def test_build_url_booleans_are_exactly_true_or_false() -> None:
    url = build_url("h", "db", light=True, confirmed=True)
    assert url.endswith("?light=true&confirmed=true")


def test_build_url_quotes_the_database_into_one_segment() -> None:
    assert build_url("h", "a/b c?") == (
        "ws://h/v1/database/a%2Fb%20c%3F/subscribe?light=false&confirmed=false"
    )


@pytest.mark.parametrize(
    ("host", "database", "message"),
    [
        ("ftp://h", "db", "scheme"),
        ("ws://", "db", "host name"),
        ("ws://h?x=1", "db", "query"),
        ("ws://user:pw@h", "db", "credentials"),
        ("h", "", "database"),
    ],
)
def test_build_url_rejects_bad_input(host: str, database: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_url(host, database)


def test_build_url_rejects_non_bool_flags() -> None:
    with pytest.raises(TypeError, match="light"):
        build_url("h", "db", light="true")  # type: ignore[arg-type]


# --- handshake -----------------------------------------------------------------------------


@run
async def test_handshake_offers_only_v1_json_and_sends_the_bearer_token() -> None:
    async with server(hold_open) as srv:
        transport = await open_transport(srv, token=TOKEN, light=True)
        await transport.close()

    (request,) = srv.requests
    assert request.path == "/v1/database/quickstart-chat/subscribe?light=true&confirmed=false"
    assert request.headers.get_all("Sec-WebSocket-Protocol") == [SUBPROTOCOL]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Sec-WebSocket-Extensions" not in request.headers  # no permessage-deflate
    assert TOKEN not in request.path


@run
async def test_anonymous_connection_sends_no_authorization() -> None:
    async with server(hold_open) as srv:
        transport = await open_transport(srv)
        await transport.close()

    assert "Authorization" not in srv.requests[0].headers


@run
async def test_authorization_in_additional_headers_is_refused() -> None:
    async with server(hold_open) as srv:
        with pytest.raises(ValueError, match="token="):
            await open_transport(srv, additional_headers={"authorization": "Bearer x"})
    assert srv.requests == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, AuthenticationFailed),
        (404, DatabaseNotFound),
        (403, HandshakeError),
        (500, HandshakeError),
    ],
)
def test_http_error_statuses_map_to_handshake_errors(
    status: int, error: type[HandshakeError]
) -> None:
    async def scenario() -> None:
        async with server(hold_open, status=status, body=f"reason {status}\n") as srv:
            with pytest.raises(error) as info:
                await open_transport(srv, token=TOKEN)
        assert type(info.value) is error
        assert info.value.status == status
        assert info.value.body == f"reason {status}"
        assert info.value.__cause__ is not None  # raised from the websockets error
        assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)

    asyncio.run(scenario())


@run
async def test_server_without_the_subprotocol_is_refused() -> None:
    async with server(hold_open, subprotocols=()) as srv:
        with pytest.raises(TransportError, match="did not accept subprotocol"):
            await open_transport(srv)


@run
async def test_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as sock:  # a port that nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError) as info:
        await Transport.open(f"ws://127.0.0.1:{port}", "db", proxy=None)
    assert not isinstance(info.value, HandshakeError | ConnectionClosed)
    assert isinstance(info.value.__cause__, OSError)


@run
async def test_silent_server_times_out_as_a_transport_error() -> None:
    async def accept_and_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the upgrade; returns when the client gives up
        writer.close()  # (from 3.12, closing the server waits for every accepted socket)

    tcp = await asyncio.start_server(accept_and_ignore, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        with pytest.raises(TransportError, match="timed out"):
            await Transport.open(f"ws://127.0.0.1:{port}", "db", proxy=None, open_timeout=0.2)


@run
async def test_bad_tokens_are_refused_before_connecting() -> None:
    with pytest.raises(TypeError, match="token"):
        await Transport.open("ws://127.0.0.1:1", "db", token=b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token"):
        await Transport.open("ws://127.0.0.1:1", "db", token="")


@run
async def test_ssl_context_with_plain_ws_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="ssl"):
        await Transport.open("ws://127.0.0.1:1", "db", ssl=ssl.create_default_context())


# --- frames --------------------------------------------------------------------------------


@run
async def test_frames_arrive_in_order_and_sends_reach_the_server() -> None:
    received: list[str] = []
    got_all = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(IDENTITY_TOKEN)
        for i in range(50):
            await ws.send(f'{{"n":{i}}}')
        async for message in ws:
            received.append(str(message))
            if len(received) == 3:
                got_all.set()

    async with server(handler) as srv:
        transport = await open_transport(srv, token=TOKEN)
        frames = [await transport.recv() for _ in range(51)]
        for text in ("a", "b", "c"):
            await transport.send(text)
        await got_all.wait()
        await transport.close()

    assert frames == [IDENTITY_TOKEN] + [f'{{"n":{i}}}' for i in range(50)]
    assert received == ["a", "b", "c"]
    assert (transport.frames_received, transport.frames_sent) == (51, 3)


@run
async def test_send_rejects_bytes() -> None:
    async with server(hold_open) as srv:
        transport = await open_transport(srv)
        with pytest.raises(TypeError, match="str"):
            await transport.send(b"{}")  # type: ignore[arg-type]
        await transport.close()


@run
async def test_binary_frame_is_a_protocol_error() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"\x00\x01")
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        with pytest.raises(ProtocolError, match="binary"):
            await transport.recv()
        await transport.close()


# --- closing -------------------------------------------------------------------------------


@run
async def test_server_close_after_first_message_is_connection_closed_with_code() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(IDENTITY_TOKEN)
        await ws.close(1001, "module exited")

    async with server(handler) as srv:
        transport = await open_transport(srv)
        assert await transport.recv() == IDENTITY_TOKEN
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv()

    assert type(info.value) is ConnectionClosed
    assert (info.value.code, info.value.reason) == (1001, "module exited")
    assert "probably rejected" not in str(info.value)


@run
async def test_tcp_drop_before_any_message_is_a_rejection() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.abort()  # what the server does when client_connected fails

    async with server(handler) as srv:
        transport = await open_transport(srv)
        with pytest.raises(ConnectionRejected) as info:
            await transport.recv()

    assert info.value.code == 1006


@run
async def test_tcp_drop_after_a_message_is_closed_not_rejected() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(IDENTITY_TOKEN)
        ws.transport.abort()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        await transport.recv()
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv()

    assert type(info.value) is ConnectionClosed
    assert info.value.code == 1006


@run
async def test_overlong_close_reason_after_our_send_says_the_message_was_rejected() -> None:
    reason = ("unknown variant `Bogus`, expected one of " + "`CallReducer`, " * 12).encode()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(IDENTITY_TOKEN)
        await ws.recv()
        # §8.3: the real server sends its whole decode error in a Close frame (> 125 bytes).
        payload = struct.pack("!H", 1011) + reason
        ws.transport.write(bytes([0x88, 126]) + struct.pack("!H", len(payload)) + payload)
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        await transport.recv()
        await transport.send('{"Bogus":{}}')
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv()

    assert type(info.value) is ConnectionClosed
    assert info.value.code == 1002
    assert "probably rejected our last message" in str(info.value)


@run
async def test_own_close_ends_iteration_quietly_and_recv_reports_it() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send("two")
        await ws.wait_closed()

    frames: list[str] = []
    async with server(handler) as srv:
        transport = await open_transport(srv)
        async for frame in transport:
            frames.append(frame)
            if frame == "two":
                await transport.close()
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv()

    assert frames == ["one", "two"]
    assert type(info.value) is ConnectionClosed and info.value.code == 1000
    assert transport.state == "CLOSED"


@run
async def test_iteration_raises_when_the_server_closes() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.close(1000, "bye")

    frames: list[str] = []
    async with server(handler) as srv:
        transport = await open_transport(srv)
        with pytest.raises(ConnectionClosed) as info:
            async for frame in transport:
                frames.append(frame)

    assert frames == ["one"]
    assert (info.value.code, info.value.reason) == (1000, "bye")


@run
async def test_unresponsive_server_is_detected_by_keepalive() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(IDENTITY_TOKEN)
        ws.transport.pause_reading()  # alive at TCP level, never answers a Ping
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(
            srv, ping_interval=0.05, ping_timeout=0.1, close_timeout=0.1
        )
        await transport.recv()
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv()

    assert info.value.code == 1011
    assert "keepalive" in info.value.reason


# --- secrets -------------------------------------------------------------------------------


@run
async def test_token_never_appears_in_repr_str_or_logs() -> None:
    handler_records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    collector = Collect(level=logging.DEBUG)
    # Our side only: the test server's own logs are not the library's.
    loggers = [logging.getLogger(name) for name in ("websockets.client", "rx_spacetimedb")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(collector)
        lg.setLevel(logging.DEBUG)
    try:
        async def handler(ws: ServerConnection) -> None:
            await ws.send(IDENTITY_TOKEN)
            await ws.close(1000, "done")

        async with server(handler) as srv:
            transport = await open_transport(srv, token=TOKEN)
            shown = [repr(transport), str(transport)]
            assert await transport.recv() == IDENTITY_TOKEN
            with pytest.raises(ConnectionClosed) as info:
                await transport.recv()
            shown += [repr(info.value), str(info.value)]
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.removeHandler(collector)
            lg.setLevel(level)

    log_text = "\n".join(record.getMessage() for record in handler_records)
    # The test is only meaningful if the handshake headers and frames were logged at all.
    assert "> Authorization: <redacted>" in log_text
    assert "< spacetime-identity-token: <redacted>" in log_text
    assert "< TEXT" in log_text
    assert TOKEN not in log_text
    assert all(TOKEN not in text for text in shown)
    assert "quickstart-chat" in shown[0]


# --- I/O thread ----------------------------------------------------------------------------


def test_ioloop_starts_lazily_and_runs_coroutines_on_its_thread() -> None:
    io = IoLoop(name="test-io")
    assert not io.running
    try:
        async def where() -> str:
            return threading.current_thread().name

        assert io.run_coroutine(where()).result(timeout=5) == "test-io"
        assert io.running
        assert not io.in_loop_thread()
    finally:
        io.stop()
    assert not io.running


def test_ioloop_call_soon_runs_on_the_loop_thread() -> None:
    io = IoLoop()
    seen: list[bool] = []
    done = threading.Event()

    def probe() -> None:
        seen.append(io.in_loop_thread())
        done.set()

    try:
        io.call_soon(probe)
        assert done.wait(5)
    finally:
        io.stop()
    assert seen == [True]


def test_ioloop_works_inside_a_running_asyncio_loop() -> None:
    # Jupyter and asyncio apps already run a loop on the calling thread.
    io = IoLoop()

    async def double(x: int) -> int:
        return 2 * x

    async def app() -> int:
        return io.run_coroutine(double(21)).result(timeout=5)

    try:
        assert asyncio.run(app()) == 42
    finally:
        io.stop()


def test_ioloop_stop_cancels_pending_work_and_can_restart() -> None:
    io = IoLoop()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    future = io.run_coroutine(forever())
    assert started.wait(5)
    first_loop = io.loop
    io.stop()
    io.stop()  # idempotent

    assert future.cancelled()
    assert first_loop.is_closed()

    async def answer() -> int:
        return 7

    try:
        assert io.run_coroutine(answer()).result(timeout=5) == 7
        assert io.loop is not first_loop
    finally:
        io.stop()


def test_ioloop_carries_a_transport_end_to_end() -> None:
    io = IoLoop()

    async def scenario() -> list[str]:
        async def handler(ws: ServerConnection) -> None:
            await ws.send(IDENTITY_TOKEN)
            await ws.send(await ws.recv())
            await ws.wait_closed()

        async with server(handler) as srv:
            transport = await open_transport(srv, token=TOKEN)
            first = await transport.recv()
            await transport.send("echo")
            second = await transport.recv()
            await transport.close()
            return [first, second]

    try:
        assert io.run_coroutine(scenario()).result(timeout=5) == [IDENTITY_TOKEN, "echo"]
    finally:
        io.stop()


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throw-away self-signed certificate for 127.0.0.1 (skipped without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not available")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


async def tls_exchange(cert: str, key: str, client_ssl: ssl.SSLContext | None) -> str:
    server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ssl.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        await ws.send(IDENTITY_TOKEN)
        await ws.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, ssl=server_ssl, subprotocols=[Subprotocol(SUBPROTOCOL)]
    ) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        transport = await Transport.open(
            f"https://127.0.0.1:{port}", "db", ssl=client_ssl, proxy=None
        )
        try:
            return await transport.recv()
        finally:
            await transport.close()


def test_tls_verifies_certificates_by_default(certificate: tuple[str, str]) -> None:
    with pytest.raises(TransportError) as info:
        asyncio.run(tls_exchange(*certificate, client_ssl=None))
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_tls_accepts_a_caller_ssl_context(certificate: tuple[str, str]) -> None:
    trusting = ssl.create_default_context(cafile=certificate[0])
    assert asyncio.run(tls_exchange(*certificate, client_ssl=trusting)) == IDENTITY_TOKEN
