"""``observe_on_bounded``: move a stream to another scheduler through a queue of bounded size.

reactivex's ``observe_on`` queues without limit: a consumer that stays slower than the connection
holds every message it has not handled yet. This one never blocks the producer (the I/O thread) and
never holds more than ``max_pending`` items; what happens beyond that is the caller's choice.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from rx_spacetimedb.errors import SlowConsumer

__all__ = ["Overflow", "SlowConsumer", "check_bounds", "observe_on_bounded"]

_T = TypeVar("_T")

Overflow = Literal["drop_oldest", "drop_newest", "error"]
_OVERFLOWS = ("drop_oldest", "drop_newest", "error")


def observe_on_bounded(
    scheduler: abc.SchedulerBase,
    max_pending: int = 1000,
    overflow: Overflow = "drop_oldest",
    *,
    on_drop: Callable[[Any], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Deliver on ``scheduler`` like ``observe_on``, holding at most ``max_pending`` undelivered items.

    The producer only appends to the queue and never waits. When the queue is full:
    ``"drop_oldest"`` forgets the oldest item (a live view that wants the latest state),
    ``"drop_newest"`` ignores the new one, ``"error"`` ends this subscriber with ``SlowConsumer``
    after the queued items. ``on_drop`` is called (on the producer's thread) with each dropped item.

    ::

        source:                          -a-b-c-d-|      (all at one tick, consumer not yet run)
        observe_on_bounded(s, 2):        ---------c-d-|  (drop_oldest: the newest two survive)
        observe_on_bounded(s, 2, "error"): -------a-b-#  (SlowConsumer after the queued two)

    Args:
        scheduler: where the items are delivered (a GUI scheduler, a thread pool, an asyncio loop).
        max_pending: the most items waiting for the consumer (>= 1).
        overflow: what to do with an item that does not fit.
        on_drop: told about every dropped item, e.g. to count them.

    Raises:
        ValueError / TypeError: a bad argument, named in the message.
    """
    if not isinstance(scheduler, abc.SchedulerBase):
        raise TypeError(f"scheduler: must be a reactivex scheduler, not {type(scheduler).__name__}")
    check_bounds(max_pending, overflow)
    if on_drop is not None and not callable(on_drop):
        raise TypeError("on_drop: must be callable or None")

    def _observe_on_bounded(source: Observable[_T]) -> Observable[_T]:
        def subscribe(observer: abc.ObserverBase[_T],
                      _: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            return _Bounded(source, observer, scheduler, max_pending, overflow, on_drop).start()

        return Observable(subscribe)

    return _observe_on_bounded


def check_bounds(max_pending: object, overflow: object) -> None:
    """Raise ValueError naming ``max_pending`` or ``overflow`` when one is not valid."""
    if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError(f"max_pending: must be an int >= 1, got {max_pending!r}")
    if overflow not in _OVERFLOWS:
        raise ValueError(f"overflow: must be one of {_OVERFLOWS}, got {overflow!r}")


class _Bounded:
    """One subscription: a bounded queue drained by one scheduled action at a time."""

    def __init__(self, source: Observable[Any], observer: abc.ObserverBase[Any],
                 scheduler: abc.SchedulerBase, max_pending: int, overflow: Overflow,
                 on_drop: Callable[[Any], None] | None) -> None:
        self._source = source
        self._observer = observer
        self._scheduler = scheduler
        self._max = max_pending
        self._overflow = overflow
        self._on_drop = on_drop
        # Guards the queue and the flags below; the observer, the scheduler and the upstream are
        # always called outside it.
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, Any]] = deque()  # ("next", value) / ("error", e) / ("completed", None)
        self._pending = 0  # "next" items in the queue
        self._ended = False  # a terminal notification is queued: accept nothing more
        self._draining = False
        self._disposed = False
        self._upstream = SerialDisposable()
        self._drain = SerialDisposable()

    def start(self) -> abc.DisposableBase:
        self._upstream.disposable = self._source.subscribe(self._on_next, self._on_error, self._on_completed)
        return CompositeDisposable(self._upstream, self._drain, Disposable(self._dispose))

    def _dispose(self) -> None:
        with self._lock:
            self._disposed = True
            self._queue.clear()

    def _on_next(self, value: Any) -> None:
        dropped: list[Any] = []
        overflowed = False
        with self._lock:
            if self._ended or self._disposed:
                return
            if self._pending >= self._max and self._overflow == "drop_newest":
                dropped.append(value)
            elif self._pending >= self._max and self._overflow == "error":
                self._ended = overflowed = True
                self._queue.append(("error", SlowConsumer(
                    f"the subscriber fell more than {self._max} items behind")))
            else:
                if self._pending >= self._max:  # drop_oldest: make room
                    index = next(i for i, (kind, _) in enumerate(self._queue) if kind == "next")
                    dropped.append(self._queue[index][1])
                    del self._queue[index]
                    self._pending -= 1
                self._queue.append(("next", value))
                self._pending += 1
            start = self._claim_drain()
        if overflowed:
            self._upstream.dispose()
        if start:
            self._start_drain()
        if self._on_drop is not None:
            for item in dropped:
                self._on_drop(item)

    def _on_error(self, error: Exception) -> None:
        self._terminal(("error", error))

    def _on_completed(self) -> None:
        self._terminal(("completed", None))

    def _terminal(self, item: tuple[str, Any]) -> None:
        with self._lock:
            if self._ended or self._disposed:
                return
            self._ended = True
            self._queue.append(item)
            start = self._claim_drain()
        if start:
            self._start_drain()

    def _claim_drain(self) -> bool:
        """Whether the caller must start a drain (none is running or scheduled); needs the lock."""
        if self._draining:
            return False
        self._draining = True
        return True

    def _start_drain(self) -> None:
        """Schedule the drain, outside the lock: the scheduler may run it at once, on this thread."""
        self._drain.disposable = self._scheduler.schedule(self._run_drain)

    def _run_drain(self, _: abc.SchedulerBase, __: Any = None) -> None:
        while True:
            with self._lock:
                if self._disposed or not self._queue:
                    self._draining = False
                    return
                kind, value = self._queue.popleft()
                if kind == "next":
                    self._pending -= 1
            if kind == "next":
                self._observer.on_next(value)
            elif kind == "error":
                self._observer.on_error(value)
                return
            else:
                self._observer.on_completed()
                return
