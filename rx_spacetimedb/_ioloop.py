"""The I/O thread: a daemon thread running the library's own asyncio event loop.

Sockets need an event loop, but users call us from scripts, Tk/Qt callbacks, asyncio apps and
Jupyter (whose loop is already running and cannot be re-entered). A private loop on its own
thread works the same in all of them; users move results to their thread with ``observe_on``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["IoLoop"]

_T = TypeVar("_T")


class IoLoop:
    """A lazily started daemon thread that runs one asyncio event loop until ``stop()``.

    Thread-safe: every method may be called from any thread. After ``stop()`` the next use
    starts a fresh thread and loop, so one ``IoLoop`` can serve several connect/close cycles.
    """

    def __init__(self, name: str = "rx-spacetimedb-io") -> None:
        """Prepare the loop; nothing starts until it is first used."""
        self.name = name
        self._lock = threading.Lock()  # guards _loop and _thread (started on first use, cleared by stop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop, started on first access."""
        with self._lock:
            if self._loop is None:
                self._start()
            assert self._loop is not None
            return self._loop

    @property
    def running(self) -> bool:
        """Whether the thread has been started and not stopped."""
        with self._lock:
            return self._loop is not None

    def in_loop_thread(self) -> bool:
        """Whether the caller is on the I/O thread (where blocking on a future would deadlock)."""
        with self._lock:
            return self._thread is not None and threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O thread as soon as possible (fire and forget)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def run_coroutine(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule ``coro`` on the I/O loop; return a thread-safe future of its result.

        Do not call ``.result()`` on it from the I/O thread itself: that would block the loop
        that has to complete it.
        """
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Cancel the loop's remaining tasks, stop the loop and join the thread; idempotent.

        Called from the I/O thread itself it only asks the loop to stop (the thread finishes
        on its own once the current callback returns).
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(timeout)

    def _start(self) -> None:
        """Start the thread and wait until its loop runs (called with the lock held)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(loop, ready), name=self.name, daemon=True
        )
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            # Let cancelled tasks run their cleanup (e.g. close sockets) before the loop dies.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"<IoLoop [{self.name!r}, {state}]>"
