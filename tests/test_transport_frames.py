"""Tests of the transport's own frame splitting (``plain_frame``, ``split_frames``) and of the
connection that uses it: the same messages, errors and close codes as websockets' parser gives,
with websockets' parser kept in step for everything the fast path leaves to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import websockets.version
from websockets.asyncio.server import ServerConnection
from websockets.frames import Close, Frame, Opcode

from rx_spacetimedb import transport
from rx_spacetimedb.errors import ConnectionClosed, TransportError
from rx_spacetimedb.transport import (
    Transport,
    _BatchingConnection,
    frame_size,
    plain_frame,
    split_frames,
)
from tests.test_transport import TOKEN, Server, hold_open, open_transport, server
from tests.test_transport_batches import cont, on_go, text, wire

# --- plain_frame / split_frames: pure functions -----------------------------------------------

LENGTHS = [0, 1, 125, 126, 65535, 65536, 70000]  # 7-bit, 16-bit and 64-bit length encodings


def encoded(frame: Frame) -> bytes:
    return frame.serialize(mask=False)


@pytest.mark.parametrize("length", LENGTHS)
def test_a_plain_frame_of_every_length_encoding_is_found(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    data = b"junk" + encoded(Frame(Opcode.BINARY, payload)) + b"after"
    header = 2 if length < 126 else 4 if length < 65536 else 10

    assert plain_frame(data, 4) == (4 + header, 4 + header + length)
    assert split_frames(data[4:-5]) == ([payload], len(data) - 9)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("mask", [False, True])
def test_frame_size_counts_any_frame_and_none_while_its_header_is_cut(length: int, mask: bool) -> None:
    frame = Frame(Opcode.PING if length < 126 else Opcode.BINARY, b"z" * length).serialize(mask=mask)
    header = len(frame) - length

    assert frame_size(b"xy" + frame, 2) == len(frame)
    assert frame_size(frame[:header], 0) == len(frame)  # the payload may be missing
    for cut in range(header):
        assert frame_size(frame[:cut], 0) is None, cut


def test_split_frames_starts_at_pos() -> None:
    data = encoded(Frame(Opcode.TEXT, b"a")) + encoded(Frame(Opcode.TEXT, b"b"))

    assert split_frames(data, 3) == (["b"], 6)


def test_a_longer_length_encoding_than_needed_is_read_as_websockets_reads_it() -> None:
    data = bytes([0x81, 126, 0, 3]) + b"abc" + bytes([0x81, 127, 0, 0, 0, 0, 0, 0, 0, 2]) + b"de"

    assert split_frames(data) == (["abc", "de"], len(data))


@pytest.mark.parametrize("length", [5, 300, 65536])
def test_a_frame_cut_anywhere_is_left_whole_for_later(length: int) -> None:
    first = encoded(Frame(Opcode.TEXT, b"first"))
    frame = encoded(Frame(Opcode.TEXT, b"y" * length))
    cuts = range(len(frame)) if length < 1000 else [*range(12), length // 2, len(frame) - 1]
    for cut in cuts:
        assert plain_frame(frame[:cut], 0) is None, cut
        assert split_frames(first + frame[:cut]) == (["first"], len(first)), cut


NOT_PLAIN = {
    "TEXT without FIN": encoded(Frame(Opcode.TEXT, b"a", fin=False)),
    "BINARY without FIN": encoded(Frame(Opcode.BINARY, b"a", fin=False)),
    "CONT": encoded(Frame(Opcode.CONT, b"a")),
    "PING": encoded(Frame(Opcode.PING, b"a")),
    "PONG": encoded(Frame(Opcode.PONG, b"a")),
    "CLOSE": encoded(Frame(Opcode.CLOSE, Close(1000, "").serialize())),
    "RSV1": bytes([0x81 | 0x40, 1]) + b"a",  # (websockets refuses to serialize these)
    "RSV2": bytes([0x81 | 0x20, 1]) + b"a",
    "RSV3": bytes([0x82 | 0x10, 1]) + b"a",
}


@pytest.mark.parametrize("frame", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_frames_that_are_not_plain_are_refused_and_end_the_split(frame: bytes) -> None:
    data = encoded(Frame(Opcode.TEXT, b"ok")) + frame + encoded(Frame(Opcode.TEXT, b"no"))

    assert plain_frame(data, 4) is None
    assert split_frames(data) == (["ok"], 4)


@pytest.mark.parametrize("length", [1, 200, 70000])
def test_a_masked_frame_is_refused(length: int) -> None:
    assert plain_frame(Frame(Opcode.TEXT, b"m" * length).serialize(mask=True), 0) is None


def test_unknown_opcodes_are_refused() -> None:
    for opcode in [0x3, 0x7, 0xB, 0xF]:
        assert plain_frame(bytes([0x80 | opcode, 1]) + b"x", 0) is None


def test_max_size_bounds_the_payload() -> None:
    data = encoded(Frame(Opcode.TEXT, b"1234")) + encoded(Frame(Opcode.TEXT, b"12345"))

    assert split_frames(data, max_size=4) == (["1234"], 6)
    assert split_frames(data, max_size=5) == (["1234", "12345"], len(data))


def test_a_huge_64_bit_length_is_incomplete_not_an_error() -> None:
    assert plain_frame(bytes([0x82, 127]) + (2**63).to_bytes(8, "big") + b"x", 0) is None


def test_a_text_frame_that_is_not_utf8_is_left_to_websockets_but_binary_is_not_decoded() -> None:
    bad = encoded(Frame(Opcode.TEXT, b"\xff"))
    data = encoded(Frame(Opcode.BINARY, b"\xff")) + encoded(Frame(Opcode.TEXT, "é".encode())) + bad

    assert split_frames(data) == ([b"\xff", "é"], len(data) - len(bad))


# --- the connection: a real loopback server, the fast path on and off -------------------------


class Path:
    """The fast path switched on or off, and the data frames that went through websockets' parser."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.parsed_by_websockets: list[bytes] = []


@pytest.fixture(params=[True, False], ids=["split", "websockets"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    seen = Path(request.param)
    monkeypatch.setattr(_BatchingConnection, "fast_path", seen.fast)
    data_frame = _BatchingConnection._data_frame

    def spy(self: _BatchingConnection, frame: Frame) -> None:
        seen.parsed_by_websockets.append(bytes(frame.data))
        data_frame(self, frame)

    monkeypatch.setattr(_BatchingConnection, "_data_frame", spy)
    yield seen


def run(scenario: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 10))


async def take(transport: Transport, count: int) -> list[str | bytes]:
    received: list[str | bytes] = []
    while len(received) < count:
        received += await transport.recv_batch()
    return received


async def until_closed(
    handler: Callable[[ServerConnection], Awaitable[None]], **kwargs: Any
) -> tuple[list[str | bytes], ConnectionClosed]:
    """Every message received, in order, and the error that ended the connection."""
    received: list[str | bytes] = []
    async with server(handler) as srv:
        transport = await open_transport(srv, close_timeout=0.2, **kwargs)
        await transport.send("go")
        while True:
            try:
                received += await transport.recv_batch()
            except ConnectionClosed as err:
                return received, err


def receive(handler: Callable[[ServerConnection], Awaitable[None]], count: int) -> list[str | bytes]:
    """The first ``count`` messages after the client says "go"; then the client closes."""

    async def scenario() -> list[str | bytes]:
        async with server(handler) as srv:
            transport = await open_transport(srv)
            await transport.send("go")
            received = await take(transport, count)
            await transport.close()
            return received

    received: list[str | bytes] = run(scenario())
    return received


def test_many_small_messages_in_one_write(path: Path) -> None:
    messages = [f'{{"n":{i}}}' for i in range(300)]
    assert receive(on_go(*(text(m) for m in messages)), len(messages)) == messages
    assert len(path.parsed_by_websockets) == (0 if path.fast else len(messages))


def test_binary_frames_keep_their_place(path: Path) -> None:
    frames = [Frame(Opcode.BINARY, b"\x00\xff"), text("t"), Frame(Opcode.BINARY, b""), text("u")]
    assert receive(on_go(*frames), 4) == [b"\x00\xff", "t", b"", "u"]
    assert len(path.parsed_by_websockets) == (0 if path.fast else 4)


def test_a_ping_between_data_frames_is_answered_and_the_frames_after_it_are_kept(path: Path) -> None:
    async def handler(ws: ServerConnection) -> None:
        pongs: asyncio.Queue[bytes] = asyncio.Queue()
        ws.acknowledge_pings = pongs.put_nowait  # type: ignore[method-assign,assignment]  # sees every Pong
        await ws.recv()
        ws.transport.write(wire(*(text(f"a{i}") for i in range(5)), Frame(Opcode.PING, b"pp"),
                                *(text(f"b{i}") for i in range(5))))
        await ws.send(f"pong {(await pongs.get()).decode()}")
        await ws.wait_closed()

    expected = [*(f"a{i}" for i in range(5)), *(f"b{i}" for i in range(5)), "pong pp"]
    assert receive(handler, 11) == expected
    # Split: every data frame, before and after the Ping (websockets parses the Ping alone).
    assert path.parsed_by_websockets == ([] if path.fast else [f.encode() for f in expected])


def test_a_fragmented_message_after_plain_ones_and_plain_ones_after_it(path: Path) -> None:
    frames = [text("p1"), text("p2"), text("fr", fin=False), cont("ag", fin=False),
              cont("ment", fin=True), text("p3")]

    async def handler_twice(ws: ServerConnection) -> None:
        for _ in range(2):
            await ws.recv()
            ws.transport.write(wire(*frames))
        await ws.wait_closed()

    async def scenario_twice() -> list[str | bytes]:
        async with server(handler_twice) as srv:
            transport = await open_transport(srv)
            await transport.send("go")
            received = await take(transport, 4)
            await transport.send("again")  # the same frames in a later read: the split resumes
            received += await take(transport, 4)
            await transport.close()
            return received

    assert run(scenario_twice()) == ["p1", "p2", "fragment", "p3"] * 2
    via_websockets = [b"fr", b"ag", b"ment"]  # p3 after them is split again
    assert path.parsed_by_websockets == (
        via_websockets * 2 if path.fast else [b"p1", b"p2", *via_websockets, b"p3"] * 2
    )


class Reads:
    """Makes each server write a TCP read of its own: the next waits until the client read it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.received = 0  # bytes the client read since the last ``write``
        self.target = 0
        self.enough = asyncio.Event()
        data_received = _BatchingConnection.data_received

        def counting(conn: _BatchingConnection, chunk: bytes) -> None:
            data_received(conn, chunk)
            self.received += len(chunk)
            if self.received >= self.target:
                self.enough.set()

        monkeypatch.setattr(_BatchingConnection, "data_received", counting)

    async def write(self, ws: ServerConnection, data: bytes) -> None:
        self.received, self.target = 0, len(data)
        self.enough.clear()
        ws.transport.write(data)
        await self.enough.wait()


def test_frames_split_across_tcp_reads_at_every_offset(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Binary payloads made of empty-frame headers: a split that lost step with websockets' parser
    # would cut them into empty messages.
    b, e = b"\x82\x00" * 100, b"\x82\x00" * 35000
    frames = [text("a"), Frame(Opcode.BINARY, b), Frame(Opcode.PING, b"p"), text("c", fin=False),
              cont("d", fin=True), Frame(Opcode.BINARY, e), text("end")]
    data = wire(*frames)
    expected: list[str | bytes] = ["a", b, "cd", e, "end"]
    big = data.index(b"\x82\x7f")  # the 64-bit header: every offset up to a little into its payload
    offsets = [*range(1, big + 16), big + 35000, len(data) - 6, len(data) - 1]
    reads = Reads(monkeypatch)

    async def handler(ws: ServerConnection) -> None:
        for offset in offsets:
            await ws.recv()  # the client took the previous messages: nothing is in flight
            await reads.write(ws, data[:offset])
            ws.transport.write(data[offset:])  # a read of its own
        await ws.wait_closed()

    async def scenario() -> None:
        async with server(handler) as srv:
            transport = await open_transport(srv)
            for offset in offsets:
                await transport.send("next")
                assert await take(transport, len(expected)) == expected, offset
            await transport.close()

    run(scenario())
    # websockets parses c and d (not plain), and the plain frame cut by the offset if its header
    # came whole in the first read (the split holds a cut header back and takes the frame later).
    plain, start = [], 0
    for frame in frames:
        size = len(wire(frame))
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY) and frame.fin:
            plain.append((start + size - len(frame.data), start + size))
        start += size
    cut_inside = sum(1 for offset in offsets for header_end, stop in plain if header_end <= offset < stop)
    parsed = len(path.parsed_by_websockets)
    assert parsed == (2 * len(offsets) + cut_inside if path.fast else 6 * len(offsets))


def test_a_text_frame_that_is_not_utf8_closes_with_1007_after_the_frames_before_it(path: Path) -> None:
    frames = [text("ok1"), text("ok2"), Frame(Opcode.TEXT, b'{"a":"\xff"}'), text("dropped")]

    received, err = run(until_closed(on_go(*frames)))

    assert received == ["ok1", "ok2"]
    assert err.code == 1007
    assert isinstance(err.__cause__, Exception)


def test_a_frame_over_max_size_closes_with_1009_after_the_frames_before_it(path: Path) -> None:
    frames = [text("x" * 100), text("x" * 101), text("dropped")]

    received, err = run(until_closed(on_go(*frames), max_size=100))

    assert received == ["x" * 100]
    assert err.code == 1009


def test_a_close_right_after_data_ends_the_connection_after_all_of_it(path: Path) -> None:
    frames = [*(text(f"m{i}") for i in range(20)), Frame(Opcode.CLOSE, Close(4000, "bye").serialize())]

    received, err = run(until_closed(on_go(*frames)))

    assert received == [f"m{i}" for i in range(20)]
    assert (err.code, err.reason) == (4000, "bye")


def test_websockets_debug_logging_turns_the_split_off(path: Path) -> None:
    logger = logging.getLogger("websockets.client")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        received, err = run(until_closed(on_go(text("a"), text("b"),
                                               Frame(Opcode.CLOSE, Close(1000, "").serialize()))))
    finally:
        logger.setLevel(level)

    assert received == ["a", "b"]
    assert err.code == 1000
    assert path.parsed_by_websockets == [b"a", b"b"]  # every frame logged by websockets


def test_a_plain_frame_inside_a_fragmented_message_closes_with_1002(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await reads.write(ws, wire(text("start", fin=False)))
        await reads.write(ws, wire(text("not a continuation")))  # parser between frames
        await ws.wait_closed()

    received, err = run(until_closed(handler))

    assert received == []
    assert err.code == 1002


def test_reads_after_a_text_frame_that_is_not_utf8_are_not_handed_on(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)
    both_read = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await reads.write(ws, wire(text("ok"), Frame(Opcode.TEXT, b"\xff")))
        await reads.write(ws, wire(text("later")))  # read before the consumer looks
        both_read.set()
        await ws.wait_closed()

    async def scenario() -> tuple[list[str | bytes], ConnectionClosed]:
        received: list[str | bytes] = []
        async with server(handler) as srv:
            transport = await open_transport(srv, close_timeout=0.2)
            await transport.send("go")
            await both_read.wait()
            while True:
                try:
                    received += await transport.recv_batch()
                except ConnectionClosed as err:
                    return received, err

    received, err = run(scenario())

    assert received == ["ok"]
    assert err.code == 1007


@pytest.mark.parametrize(
    ("version", "available"), [("17.4", True), ("16.0", True), ("15.0.1", False), ("dev", False)]
)
def test_the_split_needs_websockets_16_or_later(
    version: str, available: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websockets.version, "version", version)  # what the check reads

    assert transport._fast_path_available() is available


def test_a_server_cannot_switch_an_extension_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # The split takes only frames without RSV bits. Our client offers no extension, so websockets
    # refuses a 101 that names one (permessage-deflate would set RSV1 on compressed frames).
    def with_deflate(connection: ServerConnection, request: Any, response: Any) -> Any:
        response.headers["spacetime-identity-token"] = TOKEN
        response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate"
        return response

    monkeypatch.setattr(Server, "process_response", staticmethod(with_deflate))

    async def scenario() -> None:
        async with server(hold_open) as srv:
            with pytest.raises(TransportError, match="no extensions supported"):
                await open_transport(srv)

    run(scenario())
