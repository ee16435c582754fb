"""Tests of the transport's batched reading: every message of one TCP read in one batch, messages of
any number of fragments, flow control, and the ends of a connection while messages wait unread."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from unittest import mock

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, Frame, Opcode
from websockets.typing import Subprotocol
from websockets.utils import accept_key

from rx_spacetimedb.errors import ConnectionClosed, ProtocolError
from rx_spacetimedb.transport import SUBPROTOCOL, Transport, _BatchingConnection
from tests.test_transport import (
    IDENTITY_TOKEN,
    certificate,  # noqa: F401  (the self-signed certificate fixture)
    hold_open,
    open_transport,
    run,
    server,
)


def wire(*frames: Frame) -> bytes:
    """Frames as a server writes them (unmasked), to be written in one TCP write."""
    return b"".join(frame.serialize(mask=False) for frame in frames)


def text(payload: str, fin: bool = True) -> Frame:
    return Frame(Opcode.TEXT, payload.encode(), fin)


def cont(payload: str, fin: bool) -> Frame:
    return Frame(Opcode.CONT, payload.encode(), fin)


def fragmented(payload: str, size: int) -> list[Frame]:
    """``payload`` as a TEXT frame and continuations of ``size`` bytes (ASCII payloads only)."""
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    return [text(parts[0], fin=False)] + [cont(p, i == len(parts) - 2) for i, p in enumerate(parts[1:])]


def on_go(*frames: Frame) -> Callable[[ServerConnection], Awaitable[None]]:
    """A server handler that writes ``frames`` in one TCP write once the client sends anything.

    Written only once the client is reading, so that one read of the client sees them all.
    """

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(wire(*frames))
        await ws.wait_closed()

    return handler


async def receive(transport: Transport, count: int) -> list[str | bytes]:
    """Send "go", take batches until ``count`` messages came, close."""
    await transport.send("go")
    received: list[str | bytes] = []
    while len(received) < count:
        received += await transport.recv_batch()
    await transport.close()
    return received


@run
async def test_every_frame_of_one_tcp_write_comes_out_in_one_batch() -> None:
    frames = [f'{{"n":{i}}}' for i in range(100)]

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # written only once the client reads, so that one read sees them all
        ws.transport.write(wire(*(text(f) for f in frames)))
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        await transport.send("go")
        batch = await transport.recv_batch()
        await transport.close()

    assert batch == frames
    assert transport.frames_received == 100


@run
async def test_frames_in_the_same_read_as_the_handshake_response_are_kept() -> None:
    # The real server sends IdentityToken right behind its 101: one read may hold both.
    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n".encode()
            + f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n".encode()
            + wire(text(IDENTITY_TOKEN), text("second"))
        )
        await reader.read()  # until the client closes
        writer.close()  # (from 3.12, closing the server waits for every accepted socket)

    tcp = await asyncio.start_server(upgrade, "127.0.0.1", 0)
    async with tcp:
        port = tcp.sockets[0].getsockname()[1]
        transport = await Transport.open(f"ws://127.0.0.1:{port}", "db", proxy=None,
                                         close_timeout=0.1)
        batch = await transport.recv_batch()
        await transport.close()

    assert batch == [IDENTITY_TOKEN, "second"]


@pytest.mark.parametrize("fragments", [2, 4095, 4096, 10_000])
def test_a_message_of_any_number_of_fragments_is_one_message(fragments: int) -> None:
    payload = "".join(chr(ord("a") + i % 26) for i in range(3 * fragments))

    async def scenario() -> list[str | bytes]:
        async with server(on_go(text("before"), *fragmented(payload, 3), text("after"))) as srv:
            return await receive(await open_transport(srv), 3)

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == ["before", payload, "after"]


@run
async def test_fragments_split_across_reads_and_interleaved_with_a_ping_make_one_message() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(wire(text("ab", fin=False), cont("cd", fin=False)))
        pong = await ws.ping()  # a control frame inside a fragmented message (RFC 6455 §5.4)
        await pong  # the client answered while the message was still incomplete
        ws.transport.write(wire(cont("ef", fin=True)))
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        await transport.send("go")
        assert await transport.recv() == "abcdef"
        await transport.close()


@run
async def test_a_binary_frame_keeps_its_place_in_the_batch_and_recv_raises_for_it_alone() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(wire(text("one"), Frame(Opcode.BINARY, b"\x00\x01"), text("two")))
        await ws.recv()
        ws.transport.write(wire(text("three"), Frame(Opcode.BINARY, b"\x02"), text("four")))
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        await transport.send("go")
        batch = await transport.recv_batch()
        await transport.send("again")
        assert await transport.recv() == "three"
        with pytest.raises(ProtocolError, match="binary frame of 1 bytes"):
            await transport.recv()
        assert await transport.recv() == "four"
        await transport.close()

    assert batch == ["one", b"\x00\x01", "two"]


@run
async def test_recv_batch_returns_what_recv_left_of_its_batch() -> None:
    async with server(on_go(text("a"), text("b"), text("c"))) as srv:
        transport = await open_transport(srv)
        await transport.send("go")
        first = await transport.recv()
        rest = await transport.recv_batch()
        await transport.close()

    assert (first, rest) == ("a", ["b", "c"])


@run
async def test_messages_received_before_the_close_are_all_handed_on_first() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(wire(text("a"), text("b")))
        await ws.close(1001, "module exited")

    async with server(handler) as srv:
        transport = await open_transport(srv)
        await transport.send("go")
        received: list[str | bytes] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received += await transport.recv_batch()
        with pytest.raises(ConnectionClosed) as again:  # the end is repeated, not waited for
            await transport.recv_batch()

    assert received == ["a", "b"]
    assert (info.value.code, info.value.reason) == (1001, "module exited")
    assert type(info.value) is ConnectionClosed  # not a rejection: frames came first
    assert again.value is info.value


@run
async def test_a_close_frame_in_the_same_read_as_messages_ends_after_them() -> None:
    async with server(on_go(text("a"), Frame(Opcode.CLOSE, Close(4000, "bye").serialize()))) as srv:
        transport = await open_transport(srv)
        await transport.send("go")
        assert await transport.recv_batch() == ["a"]
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv_batch()

    assert (info.value.code, info.value.reason) == (4000, "bye")


@run
async def test_a_fragmented_message_over_max_size_closes_with_1009() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(wire(*fragmented("x" * 400, 100)))  # no fragment alone is too big
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv, max_size=300, close_timeout=0.2)
        await transport.send("go")
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv_batch()

    assert info.value.code == 1009
    assert "max_size" in str(info.value)


@run
async def test_a_text_message_that_is_not_utf8_closes_with_1007_after_the_messages_before_it() -> None:
    async with server(on_go(text("ok"), Frame(Opcode.TEXT, b'{"a":"\xff"}'), text("dropped"))) as srv:
        transport = await open_transport(srv, close_timeout=0.2)
        await transport.send("go")
        assert await transport.recv_batch() == ["ok"]
        with pytest.raises(ConnectionClosed) as info:
            await transport.recv_batch()

    assert info.value.code == 1007
    assert isinstance(info.value.__cause__, Exception)


@run
async def test_cancelling_a_waiting_recv_batch_loses_nothing() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send("late")
        await ws.wait_closed()

    async with server(handler) as srv:
        transport = await open_transport(srv)
        waiting = asyncio.ensure_future(transport.recv_batch())
        await asyncio.sleep(0)  # let it start waiting
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await transport.send("go")
        assert await transport.recv_batch() == ["late"]
        await transport.close()


@run
async def test_a_second_task_waiting_at_the_same_time_is_refused() -> None:
    async with server(hold_open) as srv:
        transport = await open_transport(srv)
        first = asyncio.ensure_future(transport.recv_batch())
        await asyncio.sleep(0)  # let it start waiting
        with pytest.raises(RuntimeError, match="already waiting"):
            await transport.recv_batch()
        first.cancel()
        await transport.close()


@run
async def test_reading_pauses_while_the_consumer_lags_and_resumes_when_it_reads() -> None:
    message = "m" * 1000
    count = 1000

    async def handler(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(f"{i:03d}{message}")
        await ws.wait_closed()

    paused = asyncio.Event()
    unread_when_paused: list[int] = []
    original = _BatchingConnection.data_received

    def data_received(self: _BatchingConnection, data: bytes) -> None:
        original(self, data)
        if self._reading_paused and not paused.is_set():
            unread_when_paused.append(self._unread_size)
            paused.set()

    async with server(handler) as srv:
        with mock.patch.object(_BatchingConnection, "data_received", data_received):
            transport = await open_transport(srv, read_limit=10_000)
            await paused.wait()  # nobody reads: the unread messages pass the limit
        tcp: Any = transport._ws.transport
        assert not tcp.is_reading()
        received = await transport.recv_batch()
        assert tcp.is_reading()  # taking the messages resumed reading
        while len(received) < count:
            received += await transport.recv_batch()
        await transport.close()

    # Paused within one TCP read (at most 256 KiB in asyncio) of the limit, not at 1 MB.
    assert 10_000 < unread_when_paused[0] < 10_000 + 256 * 1024 + len(received[0])
    assert received == [f"{i:03d}{message}" for i in range(count)]


@run
async def test_read_limit_must_be_a_byte_count() -> None:
    async with server(hold_open) as srv:
        for bad in (-1, 1.5, True, "1"):
            with pytest.raises(ValueError, match="read_limit"):
                await open_transport(srv, read_limit=bad)
    assert srv.requests == []


def test_tls_carries_batches_and_fragmented_messages(certificate: tuple[str, str]) -> None:  # noqa: F811
    cert, key = certificate
    payload = "p" * 5000

    async def scenario() -> list[str | bytes]:
        server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ssl.load_cert_chain(cert, key)

        handler = on_go(text(IDENTITY_TOKEN), *fragmented(payload, 100), text("end"))
        async with serve(handler, "127.0.0.1", 0, ssl=server_ssl,
                         subprotocols=[Subprotocol(SUBPROTOCOL)]) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            transport = await Transport.open(f"wss://127.0.0.1:{port}", "db", proxy=None,
                                             ssl=ssl.create_default_context(cafile=cert))
            return await receive(transport, 3)

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [IDENTITY_TOKEN, payload, "end"]


async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        seen: list[str]) -> None:
    """A minimal HTTP CONNECT proxy: answers 200, then pipes bytes both ways."""
    request = (await reader.readuntil(b"\r\n\r\n")).decode()
    seen.append(request.split("\r\n")[0])
    host, port = request.split()[1].rsplit(":", 1)
    upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
        dst.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.mark.parametrize("configured", ["argument", "environment"])
def test_batches_pass_through_an_http_proxy(configured: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def scenario() -> list[str | bytes]:
        proxy = await asyncio.start_server(lambda r, w: connect_proxy(r, w, seen), "127.0.0.1", 0)
        proxy_url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
        async with proxy, server(on_go(text("a"), text("b"))) as srv:
            if configured == "environment":  # proxy=True, the default: the environment's setting
                monkeypatch.setenv("ws_proxy", proxy_url)
                monkeypatch.delenv("no_proxy", raising=False)
                monkeypatch.delenv("NO_PROXY", raising=False)
                transport = await Transport.open(srv.host, "db")
            else:
                transport = await Transport.open(srv.host, "db", proxy=proxy_url)
            return await receive(transport, 2)

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == ["a", "b"]
    (connect_line,) = seen
    assert connect_line.startswith("CONNECT 127.0.0.1:")
