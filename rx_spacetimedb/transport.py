"""The socket: one WebSocket to a SpacetimeDB database, speaking text frames only.

This is the only module that knows ``websockets``. It builds the URL, does the handshake (the
``v1.json.spacetimedb`` subprotocol, the bearer token, TLS, proxies), moves ``str`` frames, and maps
``websockets``/``OSError`` exceptions onto the ``rx_spacetimedb.errors`` tree at the boundary.
It knows nothing of Rx or message types, so it is tested with a real loopback server alone.

Frames are read in batches. ``_BatchingConnection`` is websockets' asyncio ``Protocol`` (made by
``loop.create_connection``, driving the sans-I/O ``ClientProtocol``) with one part replaced: the
data frames that ``ClientProtocol`` parses from one TCP read are joined into messages right there,
in that callback, and the reader task is woken once for all of them. websockets' own ``recv()``
queues frame by frame and costs a task switch per message, and refuses a message of 4,096
fragments or more (close 1009); here a message may have any number of fragments (``max_size``
still bounds it). Everything else (TCP, TLS, proxies, redirects, the handshake, keepalive, the
closing handshake and its timeout, sending) is websockets' unchanged code, so it behaves as it
always did. Reading pauses while more than ``read_limit`` bytes of messages wait unread, so memory
stays bounded when the consumer lags.

How a consumer reads (the connection's I/O loop)::

    while True:
        for frame in await transport.recv_batch():  # every message received so far, in order
            if isinstance(frame, bytes):  # a binary frame: v1.json sends none
                report(ProtocolError(f"unexpected binary frame of {len(frame)} bytes", raw=frame))
                continue
            handle(frame)

``recv_batch()`` waits only when nothing is unread, so the loop suspends once per TCP read, not
once per message; it raises the mapped close error once the messages received before the close
have all been taken. ``recv()`` (one ``str`` at a time, a binary frame raised as ``ProtocolError``)
reads from the same batches and costs a coroutine call per message but no task switch.

Plain frames skip websockets' parser. websockets parses a frame with a generator over its
``StreamReader``, a ``Frame`` and an event each: about 2.5-3 µs per small message, more than the
rest of the transport. A server sends almost only *plain* frames: FIN set, unmasked (a server never
masks), RSV bits clear (no extension is negotiated), opcode TEXT or BINARY, payload within
``max_size``. So while websockets' parser is at a frame boundary, ``split_frames`` cuts the plain
complete frames of a read into messages itself (a bytes slice and a UTF-8 decode each). Any other
frame goes to websockets' parser whole, as its own bytes, and nothing else with it: a control frame
(Ping, Pong, Close), a fragment, a text frame that is not UTF-8 (failed with 1007 as before), a
frame over ``max_size`` (1009), a masked or RSV frame (1002), and a plain frame cut off by the end
of the read (its first part now, exactly the rest of it from the next reads: ``_owed``). Its parser
is then at a boundary again and the split resumes. A frame header cut off by the end of a read
(under 14 bytes) is held back and put in front of the next read. This is safe because websockets
does nothing with a plain frame but queue it: ``Protocol.recv_frame`` checks that no fragmented
message is open (the split is skipped while one is) and appends the frame to the events,
``Frame.parse`` checks the bits and ``max_size`` that ``split_frames`` checks, and the asyncio
connection's ``process_event`` (replaced here) only queues data frames; no keepalive, close or
flow-control logic looks at them. Bytes reach websockets' parser in order and without gaps, only
in other pieces.

The split relies on these websockets internals (16 and 17), and is used only when all of them say
that websockets' parser is exactly at a frame boundary, so that the bytes it would see next are the
bytes ``split_frames`` consumes: ``protocol.state`` is OPEN (the handshake response, and anything
after it in that read, is parsed by websockets), ``protocol.reader.buffer`` (its ``StreamReader``)
is empty and not at EOF, the ``protocol.parser`` generator chain is suspended in
``StreamReader.at_eof`` called from ``Protocol.parse`` (not ``discard``, not inside
``Frame.parse``; this alone implies the empty buffer, checked as well), and
``protocol.current_size`` is None for a split (no fragmented message open). Otherwise, and from
then on while the connection fails or closes, every byte goes to websockets' parser as before. The
split is off (``_BatchingConnection.fast_path`` False) with websockets before 16 or without these
internals (checked once, at import), and per read while an extension is negotiated
(permessage-deflate sets RSV1 and must decompress) or websockets' debug logging is enabled (it logs
every frame).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl as _ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Final, Literal, cast
from urllib.parse import quote, urlsplit, urlunsplit

from websockets import exceptions as wsx
from websockets import version as _ws_version
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event, Protocol, Side, State
from websockets.streams import StreamReader
from websockets.typing import Subprotocol

from rx_spacetimedb._redact import RedactingLogger
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

__all__ = [
    "DEFAULT_MAX_SIZE",
    "SUBPROTOCOL",
    "Transport",
    "build_url",
]

SUBPROTOCOL: Final = "v1.json.spacetimedb"
"""The only subprotocol offered: the server picks binary ones first if they are offered (§1.3)."""

DEFAULT_MAX_SIZE: Final = 256 * 2**20
"""Largest incoming message (256 MiB).

The server caps what it *receives* at 32 MiB but not what it sends: an initial subscription of a
big table is one JSON frame, and JSON-in-JSON rows are verbose. websockets' 1 MiB default would
cut those connections (close 1009); ``None`` would let a hostile server exhaust memory.
"""

DEFAULT_PING_INTERVAL: Final = 15.0
DEFAULT_PING_TIMEOUT: Final = 15.0
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
"""Keepalive: a Ping every 15 s, dead if its Pong is not back in 15 s (§8.2 asks for 30-45 s).

websockets then sends Close 1011 and waits ``close_timeout`` for the dead peer before dropping
the TCP connection, so ``recv()`` raises at most 15 + 15 + 5 = 35 s after the last Pong.
"""

DEFAULT_READ_LIMIT: Final = 4 * 2**20
"""Stop reading the socket while more than this many bytes of messages wait unread (4 MiB).

The consumer takes every waiting message at once, so this is reached only when it lags behind;
TCP then holds the server back. A single message larger than this is still received whole.
"""

_REJECTED_AFTER_SEND: Final = 5.0
"""A close this soon (seconds) after one of our sends may be the server rejecting it (§8.3)."""

_SCHEMES: Final = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}

_log = logging.getLogger("rx_spacetimedb.transport")


def build_url(host: str, database: str, *, light: bool = False, confirmed: bool = False) -> str:
    """Build ``ws[s]://host[:port]/v1/database/{database}/subscribe?light=..&confirmed=..``.

    Both flags are always sent, as exactly ``true``/``false`` (§1.2): the server's defaults are
    ``false`` for v1 today, but spelling them out keeps the behaviour if a default changes.

    Args:
        host: ``ws://``, ``wss://``, ``http://`` or ``https://`` URL of the server (a path
            prefix is kept), or a bare ``host[:port]`` meaning ``ws://``.
        database: Database name or identity (percent-encoded into one path segment).
        light: Ask for ``TransactionUpdateLight`` for other clients' transactions.
        confirmed: Hold messages back until their transaction is durable.

    Returns:
        The URL. It never contains a token: the token goes in the ``Authorization`` header.

    Raises:
        ValueError: ``host`` has another scheme, a query or no host name; ``database`` is empty.
        TypeError: ``light``/``confirmed`` are not booleans.
    """
    if not isinstance(light, bool) or not isinstance(confirmed, bool):
        raise TypeError("light and confirmed must be bools")
    if not database:
        raise ValueError("database must be a non-empty name or identity")
    if "://" not in host:
        host = f"ws://{host}"
    parts = urlsplit(host)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"host: unsupported scheme {parts.scheme!r} (use ws, wss, http, https)")
    if not parts.hostname:
        raise ValueError(f"host: no host name in {host!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("host: must not carry a query, fragment or credentials")
    path = f"{parts.path.rstrip('/')}/v1/database/{quote(database, safe='')}/subscribe"
    query = f"light={str(light).lower()}&confirmed={str(confirmed).lower()}"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def _handshake_error(status: int, body: str) -> HandshakeError:
    """Map an HTTP error status of the upgrade to the error class that names it (§1.5)."""
    cls: type[HandshakeError] = {
        400: BadRequest,
        401: AuthenticationFailed,
        404: DatabaseNotFound,
    }.get(status, HandshakeError)
    return cls(status, body)


def _fast_path_available() -> bool:
    """True for websockets 16 or later with the parser internals that ``_at_frame_boundary`` reads."""
    try:
        major = int(_ws_version.version.split(".")[0])
        parse, at_eof = Protocol.parse, StreamReader.at_eof
        protocol = Protocol(Side.CLIENT)
    except (AttributeError, ValueError, TypeError):
        return False
    return (
        major >= 16
        and hasattr(parse, "__code__")
        and hasattr(at_eof, "__code__")
        and isinstance(getattr(protocol, "reader", None), StreamReader)
        and isinstance(getattr(protocol.reader, "buffer", None), bytearray)
        and hasattr(protocol.parser, "gi_yieldfrom")
        and all(hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES)
    )


_PROTOCOL_ATTRIBUTES: Final = (
    "current_size", "extensions", "debug", "max_message_size", "max_fragment_size",
)
_FAST_PATH_AVAILABLE: Final = _fast_path_available()
_PARSE_CODE: Final = getattr(Protocol.parse, "__code__", None)
_AT_EOF_CODE: Final = getattr(StreamReader.at_eof, "__code__", None)

_TEXT_FIN: Final = 0x81  # first header byte of a plain frame: FIN, RSV clear, opcode TEXT
_BINARY_FIN: Final = 0x82  # the same with opcode BINARY


def plain_frame(buf: bytes, pos: int, max_size: int | None = None) -> tuple[int, int] | None:
    """Where the payload of the frame at ``buf[pos]`` lies, if it is plain and complete.

    Plain: FIN set, RSV bits clear, opcode TEXT or BINARY, unmasked, payload at most ``max_size``
    bytes (``None``: any). Lengths are read as websockets reads them (7-bit, 16-bit or 64-bit,
    a longer encoding than needed accepted).

    Returns:
        ``(start, stop)`` of the payload in ``buf``, or ``None``: the frame is not plain, or its
        header or payload is cut off by the end of ``buf``.
    """
    end = len(buf)
    if pos + 2 > end or buf[pos] not in (_TEXT_FIN, _BINARY_FIN):
        return None
    length = buf[pos + 1]  # the mask bit is its high bit: a masked frame reads as 128 or more
    start = pos + 2
    if length == 126:
        start += 2
        length = int.from_bytes(buf[pos + 2:start], "big")
    elif length == 127:
        start += 8
        length = int.from_bytes(buf[pos + 2:start], "big")
    elif length > 127:
        return None
    stop = start + length
    if stop > end or (max_size is not None and length > max_size):
        return None  # (a header cut off gives a short length but start > end, so stop > end)
    return start, stop


def split_frames(
    data: bytes, pos: int = 0, max_size: int | None = None
) -> tuple[list[str | bytes], int]:
    """Cut the plain complete frames of ``data`` from ``pos`` on into messages.

    Stops at the first frame that is not plain (see ``plain_frame``) or not complete, and before a
    TEXT frame whose payload is not UTF-8: all these are left to websockets' parser.

    Returns:
        The messages (``str`` for TEXT, ``bytes`` for BINARY) and where they end in ``data``.
    """
    messages: list[str | bytes] = []
    while (bounds := plain_frame(data, pos, max_size)) is not None:
        start, stop = bounds
        if data[pos] == _TEXT_FIN:
            try:
                messages.append(data[start:stop].decode())
            except UnicodeDecodeError:
                break
        else:
            messages.append(data[start:stop])
        pos = stop
    return messages, pos


def frame_size(buf: bytes, pos: int) -> int | None:
    """Bytes of the frame (any kind: header, mask key, payload) starting at ``buf[pos]``.

    Returns:
        Its size, which may reach past the end of ``buf``; ``None`` if its header is cut off.
    """
    end = len(buf)
    if pos + 2 > end:
        return None
    length = buf[pos + 1] & 0x7F
    header = 2 + (4 if buf[pos + 1] & 0x80 else 0)
    if length == 126:
        header += 2
    elif length == 127:
        header += 8
    if pos + header > end:
        return None
    if length >= 126:
        length = int.from_bytes(buf[pos + 2:pos + (4 if length == 126 else 10)], "big")
    return header + length


class _BatchingConnection(ClientConnection):
    """websockets' client ``Protocol`` that hands on every message of one TCP read in one batch.

    ``data_received`` cuts the read's plain frames itself (``split_frames``: see the module doc)
    and hands every other frame to websockets' ``data_received``, which parses it and calls
    ``process_event``; data frames land here instead of in websockets' per-frame queue.
    ``ClientProtocol`` has already checked their order (a continuation only inside a message) and
    the ``max_size`` limit.
    """

    def __init__(self, *args: Any, read_limit: int = DEFAULT_READ_LIMIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_limit = read_limit  # pause reading above this many unread bytes
        self._unread: list[str | bytes] = []  # complete messages not yet taken, in order
        self._unread_size = 0  # their bytes, for flow control
        self._fragments: list[bytes] = []  # the message being received, when it is fragmented
        self._fragmented_text = False  # that message's first frame was TEXT
        self._bad_text: UnicodeDecodeError | None = None  # a TEXT message that was not UTF-8
        self._owed = 0  # bytes of the frame that websockets' parser is in, not yet given to it
        self._header_part = b""  # a frame header cut off at the end of the last read (split)
        self._waiter: asyncio.Future[None] | None = None  # the reader, waiting for a message
        self._reading_paused = False

    fast_path: ClassVar[bool] = _FAST_PATH_AVAILABLE
    """Cut plain frames with ``split_frames`` (see the module doc); False: websockets parses all."""

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in _DATA_OPCODES:
            self._data_frame(event)
        else:  # the handshake response, Ping, Pong, Close: websockets' own handling
            super().process_event(event)

    def _data_frame(self, frame: Frame) -> None:
        if self._bad_text is not None:
            return  # the connection is failing (1007): what follows is not handed on
        if frame.opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data, text = b"".join(self._fragments), self._fragmented_text
            self._fragments = []
        elif not frame.fin:
            self._fragments, self._fragmented_text = [bytes(frame.data)], frame.opcode is Opcode.TEXT
            return
        else:
            data, text = bytes(frame.data), frame.opcode is Opcode.TEXT
        if text:
            try:
                self._unread.append(data.decode())
            except UnicodeDecodeError as err:
                self._bad_text = err
                return
        else:
            self._unread.append(data)
        self._unread_size += len(data)

    def data_received(self, data: bytes) -> None:
        if self._header_part:  # the start of a frame header, held back by the split
            data, self._header_part = self._header_part + data, b""
        if self.fast_path and self._bad_text is None:
            self._split_received(data)
        else:
            super().data_received(data)
        if self._unread or self._bad_text is not None:
            self._wake()
            if self._unread_size > self.read_limit and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

    def _split_received(self, data: bytes) -> None:
        """Take the plain frames of ``data`` at frame boundaries; hand each other frame on whole.

        A frame handed to websockets' parser is followed by exactly the rest of it (``_owed``
        bytes, also across reads), so that its parser is at a boundary again right after.
        """
        pos, end = 0, len(data)
        while pos < end:
            if self._owed:
                take = min(self._owed, end - pos)
                self._owed -= take
                super().data_received(data[pos:pos + take])
                pos += take
                continue
            if self._bad_text is not None or not self._at_frame_boundary():
                super().data_received(data[pos:])  # failing, closing: websockets' own handling
                return
            protocol = self.protocol
            if protocol.current_size is None:  # no fragmented message open: split
                max_size = protocol.max_message_size  # websockets' limit for a frame here
                fragment_size = protocol.max_fragment_size
                if fragment_size is not None and (max_size is None or fragment_size < max_size):
                    max_size = fragment_size
                messages, stop = split_frames(data, pos, max_size)
                if messages:
                    self._unread += messages
                    self._unread_size += stop - pos  # (with the headers: close enough to pace)
                pos = stop
            if pos < end:
                size = frame_size(data, pos)
                if size is None:  # a header cut off: wait for the rest of it
                    self._header_part = data[pos:]
                    return
                self._owed = size  # not plain, or not complete: websockets parses this frame

    def _at_frame_boundary(self) -> bool:
        """True if websockets' parser waits for a new frame's header with nothing buffered.

        See the module doc for why each condition is needed.
        """
        protocol = self.protocol
        if (
            protocol.state is not State.OPEN
            or protocol.extensions
            or protocol.debug
            or protocol.reader.buffer
            or protocol.reader.eof
        ):
            return False
        # Walk the chain ClientProtocol.parse -> Protocol.parse -> ... (generators: typed as Any,
        # typeshed's Generator has no gi_yieldfrom).
        caller: Any = None
        waiting: Any = protocol.parser
        while waiting.gi_yieldfrom is not None:
            caller, waiting = waiting, waiting.gi_yieldfrom
        return (
            caller is not None
            and caller.gi_code is _PARSE_CODE
            and getattr(waiting, "gi_code", None) is _AT_EOF_CODE
        )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take_batch(self) -> list[str | bytes]:
        """Wait until a message is unread, then take every unread message.

        Raises:
            websockets.exceptions.ConnectionClosed: the connection closed and every message
                received before that was taken.
            RuntimeError: another task is already waiting (the batches would be split).
        """
        if self._waiter is not None:
            raise RuntimeError("another task is already waiting for messages of this connection")
        while not self._unread:
            if self._bad_text is not None:
                await self._fail_bad_text(self._bad_text)
            if self.connection_lost_waiter.done():  # then the cause of the end is known
                raise self._end()
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch, self._unread, self._unread_size = self._unread, [], 0
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        return batch

    async def _fail_bad_text(self, err: UnicodeDecodeError) -> None:
        """Close with 1007 and raise, as websockets' ``recv()`` does for a text frame not UTF-8."""
        async with self.send_context():
            self.protocol.fail(CloseCode.INVALID_DATA, f"{err.reason} at position {err.start}")
        await asyncio.shield(self.connection_lost_waiter)
        raise self._end() from err

    def _end(self) -> wsx.ConnectionClosed:
        """websockets' exception for the closed connection, raised from what ended it, if known."""
        end = self.protocol.close_exc
        # The I/O error that dropped the connection (websockets 17: connection_exc; 16: recv_exc).
        cause = getattr(self, "connection_exc", None) or getattr(self, "recv_exc", None)
        if cause is not None:
            end.__cause__ = cause
        return end


_DATA_OPCODES: Final = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


class Transport:
    """One open WebSocket to ``/v1/database/{db}/subscribe``: text frames in, text frames out.

    Open it with ``await Transport.open(...)``; then ``recv_batch()`` (every message received so
    far: see the module doc), ``recv()`` (or ``async for frame in transport``), ``send(text)`` and
    ``close()``. Every failure is an ``rx_spacetimedb.errors`` exception raised ``from`` the
    websockets/OS error:

    * ``HandshakeError`` (``BadRequest`` 400, ``AuthenticationFailed`` 401,
      ``DatabaseNotFound`` 404, others by ``status``), with the response body as text;
    * ``TransportError`` when the server cannot be reached, the handshake times out or is
      malformed;
    * ``ConnectionRejected`` when the socket closes before the first frame arrived (the module
      refused the client: §1.5), ``ConnectionClosed`` when it closes later. ``code``/``reason``
      are those of the server's close frame; without a valid one, those websockets closed with
      (1002 for a malformed frame, 1011 for a keepalive timeout, 1009 for a message larger than
      ``max_size``, 1007 for a text message that is not UTF-8), else 1006. A close shortly
      after one of our sends says in its message that the server probably rejected that message
      (§8.3: a decode error's long close reason makes websockets report 1002 "control frame too
      long").

    Not thread-safe: use it from the event loop that opened it (``IoLoop`` runs one), with a
    single task receiving (a second one waiting at the same time is refused with RuntimeError).
    """

    def __init__(self, websocket: _BatchingConnection, url: str) -> None:
        """Wrap an open connection; use ``Transport.open`` rather than this."""
        self._ws = websocket
        self.url = url
        self._batch: deque[str | bytes] = deque()  # taken by recv_batch, not yet by recv
        self.frames_received = 0
        self.frames_sent = 0
        self._last_send: float | None = None
        self._closing = False
        self._closed_with: tuple[ConnectionClosed, wsx.ConnectionClosed] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        database: str,
        *,
        token: str | None = None,
        light: bool = False,
        confirmed: bool = False,
        ssl: _ssl.SSLContext | None = None,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        max_size: int | None = DEFAULT_MAX_SIZE,
        proxy: str | Literal[True] | None = True,
        additional_headers: Mapping[str, str] | None = None,
        read_limit: int = DEFAULT_READ_LIMIT,
    ) -> Transport:
        """Connect and complete the WebSocket handshake.

        Args:
            host: Server URL or ``host[:port]`` (see ``build_url``).
            database: Database name or identity.
            token: JWT sent as ``Authorization: Bearer``; ``None`` connects anonymously (the
                server mints an identity). Never logged, never in the URL or a repr.
            light: See ``build_url``.
            confirmed: See ``build_url``.
            ssl: Context for ``wss``; ``None`` uses the default one, which verifies
                certificates. Must be ``None`` for ``ws``.
            open_timeout: Seconds for TCP + TLS + HTTP upgrade; ``None`` waits forever.
            ping_interval: Seconds between our keepalive Pings; ``None`` disables them.
            ping_timeout: Seconds to wait for a Pong before declaring the server dead.
            close_timeout: Seconds to wait for the closing handshake (also after a keepalive
                timeout) before dropping the TCP connection.
            max_size: Largest incoming message in bytes (``DEFAULT_MAX_SIZE``); ``None``: no
                limit.
            proxy: websockets' proxy setting: ``True`` uses the environment's proxy settings,
                ``None`` connects directly, a string names a proxy URL.
            additional_headers: Extra HTTP headers (not ``Authorization``: use ``token``).
            read_limit: Bytes of unread messages above which reading pauses
                (``DEFAULT_READ_LIMIT``).

        Returns:
            The open transport; the server's first frame will be ``IdentityToken``.

        Raises:
            HandshakeError: the upgrade was answered with an HTTP error (see the class doc).
            TransportError: the server could not be reached or did not speak WebSocket, or
                did not accept ``v1.json.spacetimedb``.
            ValueError: a bad ``host``/``database``, or ``ssl`` given for a ``ws`` URL.
        """
        url = build_url(host, database, light=light, confirmed=confirmed)
        if ssl is not None and not url.startswith("wss:"):
            raise ValueError("ssl: a TLS context needs a wss:// or https:// host")
        if isinstance(read_limit, bool) or not isinstance(read_limit, int) or read_limit < 0:
            raise ValueError(f"read_limit: a number of bytes >= 0, not {read_limit!r}")
        if token is not None and not isinstance(token, str):
            raise TypeError(f"token must be a str or None, not {type(token).__name__}")
        if token == "":
            raise ValueError("token: must not be empty (use None to connect anonymously)")
        headers = dict(additional_headers or {})
        if any(name.lower() == "authorization" for name in headers):
            raise ValueError("additional_headers: pass the credentials as token=")
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {}
        if ssl is not None:
            kwargs["ssl"] = ssl
        try:
            websocket = await connect(
                url,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                additional_headers=headers,
                compression=None,  # §1.3: the server negotiates no extension
                open_timeout=open_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_size=max_size,
                proxy=proxy,
                logger=RedactingLogger(logging.getLogger("websockets.client"), token),
                # websockets calls this to make its asyncio Protocol; a partial carries read_limit
                # into it before the first read.
                create_connection=cast(
                    type[ClientConnection],
                    functools.partial(_BatchingConnection, read_limit=read_limit),
                ),
                **kwargs,
            )
        except wsx.InvalidStatus as err:
            response = err.response
            body = response.body.decode("utf-8", "replace").strip() if response.body else ""
            raise _handshake_error(response.status_code, body) from err
        except wsx.InvalidHandshake as err:
            raise TransportError(f"WebSocket handshake with {url} failed: {err}") from err
        except wsx.InvalidURI as err:
            raise ValueError(f"host: {err}") from err
        except TimeoutError as err:
            raise TransportError(f"timed out connecting to {url}") from err
        except OSError as err:
            raise TransportError(f"cannot connect to {url}: {err}") from err
        except wsx.WebSocketException as err:  # e.g. InvalidProxy
            raise TransportError(f"cannot connect to {url}: {err}") from err
        assert isinstance(websocket, _BatchingConnection)
        if websocket.subprotocol != SUBPROTOCOL:
            await websocket.close()
            raise TransportError(
                f"server at {url} did not accept subprotocol {SUBPROTOCOL} "
                f"(got {websocket.subprotocol!r})"
            )
        _log.debug("connected to %s", url)
        return cls(websocket, url)

    @property
    def closing(self) -> bool:
        """True once ``close()`` was called: an end of the socket is then ours, not the server's."""
        return self._closing

    @property
    def state(self) -> str:
        """``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED`` (the WebSocket state)."""
        return self._ws.state.name

    async def recv_batch(self) -> list[str | bytes]:
        """Wait for a message, then return every message received so far, in order.

        One TCP read usually holds many messages: they come back in one list, with one task
        switch for all of them. A ``bytes`` item is a binary frame (v1.json sends none: report
        it as ``recv()`` does). Cancelling the wait loses nothing.

        Raises:
            ConnectionRejected: the socket closed before any frame arrived.
            ConnectionClosed: the socket closed (also after our own ``close()``), and every
                message received before that was returned.
            RuntimeError: another task is waiting in ``recv_batch()``/``recv()`` already.
        """
        if self._batch:
            batch = list(self._batch)
            self._batch.clear()
            return batch
        if self._closed_with is not None:
            raise self._closed_with[0] from self._closed_with[1]
        try:
            batch = await self._ws.take_batch()
        except wsx.ConnectionClosed as err:
            closed = self._closed_error(err)
            self._closed_with = (closed, err)
            raise closed from err
        self.frames_received += len(batch)
        return batch

    async def recv(self) -> str:
        """Wait for the next text frame (from the current batch, without a task switch).

        Raises:
            ConnectionRejected: the socket closed before any frame arrived.
            ConnectionClosed: the socket closed (also after our own ``close()``).
            ProtocolError: the server sent a binary frame (v1.json sends text only).
        """
        if not self._batch:
            self._batch.extend(await self.recv_batch())
        frame = self._batch.popleft()
        if not isinstance(frame, str):
            raise ProtocolError(f"unexpected binary frame of {len(frame)} bytes", raw=frame)
        return frame

    async def __aiter__(self) -> AsyncIterator[str]:
        """Yield text frames until the socket closes.

        Stops quietly after our own ``close()``; any other end raises like ``recv()``, so that
        a server-side close (even 1000) reaches the retry logic.
        """
        while True:
            try:
                yield await self.recv()
            except ConnectionClosed:
                if self._closing:
                    return
                raise

    async def send(self, text: str) -> None:
        """Send one text frame.

        Raises:
            TypeError: ``text`` is not a ``str``.
            ConnectionClosed: the socket is closed.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        self._last_send = asyncio.get_running_loop().time()
        try:
            await self._ws.send(text)
        except wsx.ConnectionClosed as err:
            raise self._closed_error(err) from err
        self.frames_sent += 1

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket with a close frame and wait for the closing handshake; idempotent."""
        self._closing = True
        await self._ws.close(code, reason)

    def _closed_error(self, err: wsx.ConnectionClosed) -> ConnectionClosed:
        """Turn websockets' ConnectionClosed into ours, with the best code/reason available."""
        if err.rcvd is not None:
            code, reason, origin = err.rcvd.code, err.rcvd.reason, "server closed"
            # 1011 is how the server answers a message it cannot decode (§8.3).
            suspect = code == 1011
        elif err.sent is not None:
            code, reason = err.sent.code, err.sent.reason
            origin = "closed by us" if self._closing else "no valid close frame from the server"
            # 1002: websockets refused the server's over-long close reason of a decode error.
            suspect = code == 1002
        else:
            # The server simply went away (a crash, a restart, the network): nothing says that
            # our message was the cause.
            code, reason, origin = 1006, "", "connection lost without a close frame"
            suspect = False
        message = f"{origin}: {code}" + (f" {reason}" if reason else "")
        if self._closing:
            return ConnectionClosed(message, code=code, reason=reason)
        if code == 1009:
            message += " (a server message exceeded max_size)"
        if suspect and self._recent_send():
            message += "; the server probably rejected our last message"
        if self.frames_received == 0:
            return ConnectionRejected(
                f"{message}; closed before the first message: the database refused the client",
                code=code,
                reason=reason,
            )
        return ConnectionClosed(message, code=code, reason=reason)

    def _recent_send(self) -> bool:
        if self._last_send is None:
            return False
        return asyncio.get_running_loop().time() - self._last_send <= _REJECTED_AFTER_SEND

    def __repr__(self) -> str:
        return (
            f"<Transport [{self.url!r}, {self.state}, received: {self.frames_received}, "
            f"sent: {self.frames_sent}]>"
        )
