"""``async for`` over any Observable: ``aio.iterate`` hands its items to the running asyncio loop.

A connection emits on its own I/O thread; asyncio code wants to ``await`` the next item on its loop
instead. The items wait in a bounded queue (the same overflow policies as ``observe_on_bounded``),
so a slow loop never holds more than ``max_pending`` of them and the I/O thread never waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from reactivex import Observable

from rx_spacetimedb.errors import SlowConsumer
from rx_spacetimedb.operators._observe_on_bounded import Overflow as Overflow
from rx_spacetimedb.operators._observe_on_bounded import check_bounds

__all__ = ["Overflow", "iterate"]

_T = TypeVar("_T")
_END = object()


def iterate(observable: Observable[_T], *, max_pending: int = 1000,
            overflow: Overflow = "drop_oldest") -> AsyncIterator[_T]:
    """The items of ``observable`` as an async iterator on the running loop.

    ::

        async for diff in aio.iterate(conn.table_diffs("Player")):
            print(diff.inserts)

    It subscribes when the loop first asks for an item and unsubscribes when the loop ends, breaks
    (when the iterator is closed: at once inside ``contextlib.aclosing``, else when it is collected)
    or its task is cancelled. It raises the stream's error and stops when the stream completes.

    Args:
        observable: any Observable; its items may come from any thread.
        max_pending: the most items waiting for the loop (>= 1).
        overflow: when that many wait: ``"drop_oldest"`` forgets the oldest (a live view wants the
            latest), ``"drop_newest"`` ignores the new one, ``"error"`` raises ``SlowConsumer``
            after the queued items.

    Raises:
        ValueError / TypeError: a bad argument, named in the message.
        SlowConsumer (while iterating): with ``overflow="error"``, the loop fell behind.
        The stream's own error (while iterating), after the items that came before it.
    """
    if not isinstance(observable, Observable):
        raise TypeError(f"observable: must be a reactivex Observable, not {type(observable).__name__}")
    check_bounds(max_pending, overflow)
    return _iterate(observable, max_pending, overflow)


async def _iterate(observable: Observable[_T], max_pending: int, overflow: Overflow) -> AsyncIterator[_T]:
    inbox = _Inbox(asyncio.get_running_loop(), max_pending, overflow)
    subscription = observable.subscribe(inbox.on_next, inbox.on_error, inbox.on_completed)
    try:
        while True:
            item = await inbox.get()
            if item is _END:
                return
            yield item
    finally:
        subscription.dispose()


class _Inbox:
    """The bounded queue between the producing thread and the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending: int, overflow: Overflow) -> None:
        self._loop = loop
        self._max = max_pending
        self._overflow = overflow
        self._lock = threading.Lock()  # guards the queue, the end and the waiter
        self._queue: deque[Any] = deque()
        self._end: BaseException | None = None  # set once: what follows the queued items
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def on_next(self, value: Any) -> None:
        with self._lock:
            if self._ended:
                return
            if len(self._queue) >= self._max:
                if self._overflow == "drop_newest":
                    return
                if self._overflow == "error":
                    self._finish(SlowConsumer(f"the loop fell more than {self._max} items behind"))
                    return
                self._queue.popleft()
            self._queue.append(value)
            self._wake()

    def on_error(self, error: Exception) -> None:
        with self._lock:
            if not self._ended:
                self._finish(error)

    def on_completed(self) -> None:
        with self._lock:
            if not self._ended:
                self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        """Called with the lock held."""
        self._ended, self._end = True, error
        self._wake()

    def _wake(self) -> None:
        """Called with the lock held: resolve the loop's waiter, from whatever thread we are on."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_resolve, waiter)

    async def get(self) -> Any:
        """The next item, ``_END`` after completion; raises the stream's error."""
        while True:
            with self._lock:
                if self._queue:
                    return self._queue.popleft()
                if self._ended:
                    if self._end is not None:
                        raise self._end
                    return _END
                waiter = self._waiter = self._loop.create_future()
            await waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
