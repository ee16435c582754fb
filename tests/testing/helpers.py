"""A plain ``websockets`` client for the conformance tests: raw frames in, raw frames out.

The tests check the server's bytes, so this client does no decoding beyond ``json.loads``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection

from rx_spacetimedb.testing import Module, ReducerContext, SpacetimeDBEmulator, example_module

SUBPROTOCOL = "v1.json.spacetimedb"
TIMEOUT = 5.0
_T = TypeVar("_T")


def run(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run an async test body with a global timeout (no pytest-asyncio here)."""

    async def guarded() -> _T:
        return await asyncio.wait_for(factory(), 30)

    return asyncio.run(guarded())


class Client:
    """One raw WebSocket connection to the emulator, with helpers to send and read frames.

    ``identity_token`` holds the parsed first message, so tests can use the identity and ids.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.identity_token: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        server: SpacetimeDBEmulator,
        query: str = "",
        token: str | None = None,
        read_identity: bool = True,
        **kwargs: Any,
    ) -> Client:
        """Connect to the server's database (optionally with a token and query string)."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        url = server.subscribe_url + (f"?{query}" if query else "")
        ws = await websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            additional_headers=headers,
            open_timeout=TIMEOUT,
            compression=None,
            **kwargs,
        )
        client = cls(ws)
        if read_identity:
            client.identity_token = (await client.recv())["IdentityToken"]
        return client

    @property
    def identity(self) -> str:
        """The hex identity from IdentityToken (``0x…``)."""
        return str(self.identity_token["identity"]["__identity__"])

    @property
    def connection_id(self) -> int:
        """The connection id from IdentityToken."""
        return int(self.identity_token["connection_id"]["__connection_id__"])

    async def send(self, message: dict[str, Any] | str) -> None:
        """Send a frame (a dict is JSON-encoded)."""
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv_raw(self, timeout: float = TIMEOUT) -> str:
        """The next text frame, exactly as received."""
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str)
        return frame

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, parsed (integers exact)."""
        parsed: dict[str, Any] = json.loads(await self.recv_raw(timeout))
        return parsed

    async def request(self, message: dict[str, Any] | str) -> dict[str, Any]:
        """Send a frame and return the next one."""
        await self.send(message)
        return await self.recv()

    async def expect_silence(self) -> None:
        """Assert nothing arrives before the answer to a one-off query sent now (an ordering probe)."""
        await self.send({"OneOffQuery": {"message_id": "ff", "query_string": "SELECT * FROM Note"}})
        frame = await self.recv()
        assert "OneOffQueryResponse" in frame, frame

    async def close(self) -> None:
        """Close the connection."""
        await self.ws.close()


def call(reducer: str, args: str, request_id: int = 1, flags: int = 0) -> dict[str, Any]:
    """A CallReducer message."""
    return {"CallReducer": {"reducer": reducer, "args": args, "request_id": request_id, "flags": flags}}


def sub_single(query: str, query_id: int, request_id: int = 1) -> dict[str, Any]:
    """A SubscribeSingle message."""
    return {"SubscribeSingle": {"query": query, "request_id": request_id, "query_id": {"id": query_id}}}


def sub_multi(queries: list[str], query_id: int, request_id: int = 1) -> dict[str, Any]:
    """A SubscribeMulti message."""
    body = {"query_strings": queries, "request_id": request_id, "query_id": {"id": query_id}}
    return {"SubscribeMulti": body}


def rows(table_update: dict[str, Any], kind: str = "inserts") -> list[Any]:
    """Parsed rows of every QueryUpdate of a TableUpdate."""
    return [json.loads(r) for u in table_update["updates"] for r in u[kind]]


class RawClient:
    """A hand-rolled WebSocket client over asyncio streams, to see frames websockets hides.

    It exposes pings, fragmentation and missing close frames, and answers nothing by itself.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: SpacetimeDBEmulator) -> RawClient:
        """Open a connection and complete the handshake."""
        import base64
        import os

        reader, writer = await asyncio.open_connection(server.host, server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /v1/database/{server.database}/subscribe HTTP/1.1\r\nHost: {server.host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self, timeout: float = TIMEOUT) -> tuple[int, bool, bytes] | None:
        """The next frame as (opcode, fin, payload), or None at EOF."""
        try:
            first = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        except asyncio.IncompleteReadError:
            return None
        fin, opcode, length = bool(first[0] & 0x80), first[0] & 0x0F, first[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return opcode, fin, await self.reader.readexactly(length)

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame (payloads under 126 bytes)."""
        import os

        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)
        await self.writer.drain()

    def close(self) -> None:
        """Drop the TCP connection."""
        self.writer.close()


def lifecycle_module(seen: list[str]) -> Module:
    """The example module with lifecycle reducers that log to ``seen`` (and whether a connection id came)."""
    module = example_module()

    @module.client_connected
    def connected(ctx: ReducerContext) -> None:
        seen.append(f"connected {ctx.connection_id is not None}")

    @module.client_disconnected
    def disconnected(ctx: ReducerContext) -> None:
        seen.append("disconnected")

    return module
