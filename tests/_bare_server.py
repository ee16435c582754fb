"""A bare ``v1.json.spacetimedb`` WebSocket server on a thread of its own, for tests that need the
server to misbehave in ways the emulator does not (subclasses write ``_handler``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from tests.conftest import WAIT


class BareServer:
    """Serves on 127.0.0.1 (a free port) between ``with`` and its end."""

    def __init__(self, **serve_options: Any) -> None:
        self.port = 0
        self._options = serve_options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, subprotocols=[Subprotocol("v1.json.spacetimedb")],
                         **self._options) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def call_soon(self, callback: Any) -> None:
        """Run ``callback`` on the server's loop (from any thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.call_soon(self._stop.set)
        self._thread.join(WAIT)
