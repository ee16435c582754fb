"""A Qt scheduler that accepts work from any thread: ``observe_on(QtThreadScheduler())`` in PySide6 apps.

Why not reactivex's ``QtScheduler``: it calls ``QTimer.singleShot`` in the *calling* thread. Our
emissions come from the connection's I/O thread, which runs asyncio and no Qt event loop, so those
timers never fire and the work is dropped without an error (measured in ``tests/gui/test_qt.py``).

How this one works: every schedule call emits a queued signal on a ``QObject`` that lives in the
GUI thread (Qt's documented way to cross threads), so the work arrives there in FIFO order. Delayed
work goes into a heap ordered by (due time, arrival) that one precise ``QTimer`` in the GUI thread
drains, so timers fire in due order, ties in the order they were scheduled. Disposing a scheduled
item from any thread only sets a flag the GUI thread checks before running it.

PySide6 is optional (``pip install 'rx_spacetimedb[qt]'``); it is imported when a scheduler is made.
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import logging
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from reactivex import abc, typing
from reactivex.disposable import Disposable, SingleAssignmentDisposable
from reactivex.scheduler.periodicscheduler import PeriodicScheduler

__all__ = ["KNOWN_BAD_PYSIDE6", "QtThreadScheduler"]

_log = logging.getLogger("rx_spacetimedb")
_TState = TypeVar("_TState")
# Compact the heap of cancelled timers when it doubles past this size (amortised O(1) per item).
_COMPACT_MIN = 64
# Measured: on Python 3.11 this release decrefs the None/bool it returns, until the interpreter aborts.
KNOWN_BAD_PYSIDE6 = "6.12.0"


def _qtcore() -> Any:
    """PySide6.QtCore, imported on first use so the library works without Qt installed."""
    try:
        qtcore = importlib.import_module("PySide6.QtCore")
    except ImportError as err:
        raise ImportError("rx_spacetimedb.qt needs PySide6: pip install 'rx_spacetimedb[qt]'") from err
    version = getattr(importlib.import_module("PySide6"), "__version__", "")
    if version == KNOWN_BAD_PYSIDE6 and sys.version_info < (3, 12):
        warnings.warn(f"PySide6 {version} on Python < 3.12 under-counts references to None/True "
                      "(Signal.emit, QCoreApplication.processEvents) and aborts the interpreter; "
                      "use another PySide6 version or Python >= 3.12", RuntimeWarning, stacklevel=3)
    return qtcore


@dataclass(eq=False, slots=True)
class _Item:
    """One scheduled action on its way to, or waiting in, the GUI thread."""

    due: float  # time.monotonic() seconds
    seq: int
    run: Callable[[], None]
    cancelled: bool = False
    sad: SingleAssignmentDisposable = field(default_factory=SingleAssignmentDisposable)

    def __lt__(self, other: _Item) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


def _log_error(err: Exception) -> None:
    _log.error("an action scheduled on the Qt thread raised; the scheduler goes on", exc_info=err)


class QtThreadScheduler(PeriodicScheduler):
    """A reactivex scheduler that runs work on the Qt GUI thread, scheduled from any thread.

    Create it after the ``QApplication`` (from any thread); use it with ``observe_on`` to move
    the connection's emissions to the GUI thread, or as the ``scheduler=`` of time-based operators.

    Args:
        on_error: Called (on the GUI thread) with an exception an action raised; the default
            logs it. Either way the other actions still run.

    Raises:
        RuntimeError: no ``QCoreApplication`` exists yet.
        ImportError: PySide6 is not installed.
    """

    def __init__(self, on_error: Callable[[Exception], None] = _log_error) -> None:
        super().__init__()
        qtcore = _qtcore()
        app = qtcore.QCoreApplication.instance()
        if app is None:
            raise RuntimeError("QtThreadScheduler: create the QApplication (or QCoreApplication) first")
        self._on_error = on_error
        self._seq = itertools.count()
        self._heap: list[_Item] = []
        self._compact_at = _COMPACT_MIN
        self._gui_thread = app.thread()
        # A QObject subclass with a signal has to be a class; built here so Qt is imported lazily.
        bridge_class = type("_QtThreadBridge", (qtcore.QObject,), {"post": qtcore.Signal(object)})
        self._bridge: Any = bridge_class()
        self._bridge.moveToThread(self._gui_thread)
        self._bridge.post.connect(self._arrive, qtcore.Qt.ConnectionType.QueuedConnection)
        self._timer: Any = qtcore.QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(qtcore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._fire)
        self._timer.moveToThread(self._gui_thread)
        self._qtcore = qtcore

    def __repr__(self) -> str:
        return f"<QtThreadScheduler [pending timers: {sum(not i.cancelled for i in self._heap)}]>"

    # -- reactivex scheduler API ---------------------------------------------------------

    def schedule(self, action: typing.ScheduledAction[_TState],
                 state: _TState | None = None) -> abc.DisposableBase:
        """Run ``action`` on the GUI thread as soon as it gets there (FIFO with other immediate work)."""
        return self.schedule_relative(0.0, action, state)

    def schedule_relative(self, duetime: typing.RelativeTime, action: typing.ScheduledAction[_TState],
                          state: _TState | None = None) -> abc.DisposableBase:
        """Run ``action`` on the GUI thread ``duetime`` (seconds or timedelta) from now."""
        seconds = max(0.0, self.to_seconds(duetime))
        item: _Item

        def run() -> None:
            item.sad.disposable = self.invoke_action(action, state)

        item = _Item(time.monotonic() + seconds, next(self._seq), run)
        self._bridge.post.emit(item)

        def cancel() -> None:
            item.cancelled = True  # read by the GUI thread; an attribute store is atomic
            item.sad.dispose()

        return Disposable(cancel)

    def schedule_absolute(self, duetime: typing.AbsoluteTime, action: typing.ScheduledAction[_TState],
                          state: _TState | None = None) -> abc.DisposableBase:
        """Run ``action`` on the GUI thread at ``duetime`` (a datetime, or seconds since the epoch)."""
        due: datetime = self.to_datetime(duetime)
        return self.schedule_relative(due - self.now, action, state)

    # -- the GUI thread ------------------------------------------------------------------

    def _arrive(self, item: _Item) -> None:
        """GUI thread: run immediate work now, queue delayed work by due time."""
        if item.cancelled:
            return
        if item.due <= time.monotonic() and not self._heap_has_due():
            self._run(item)
            return
        heapq.heappush(self._heap, item)
        if len(self._heap) > 2 * self._compact_at:
            self._heap = [i for i in self._heap if not i.cancelled]
            heapq.heapify(self._heap)
            self._compact_at = max(_COMPACT_MIN, len(self._heap))
        self._arm()

    def _heap_has_due(self) -> bool:
        """Whether a timer is already due: then new immediate work waits behind it, in order."""
        return bool(self._heap) and self._heap[0].due <= time.monotonic()

    def _fire(self) -> None:
        """GUI thread: run every item that is due, in (due, arrival) order, then re-arm."""
        now = time.monotonic()
        while self._heap and self._heap[0].due <= now:
            item = heapq.heappop(self._heap)
            if not item.cancelled:
                self._run(item)
        self._arm()

    def _arm(self) -> None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            self._timer.stop()
            return
        delay_ms = max(0, int((self._heap[0].due - time.monotonic()) * 1000.0 + 0.999))
        self._timer.start(delay_ms)

    def _run(self, item: _Item) -> None:
        try:
            item.run()
        except Exception as err:
            self._on_error(err)

    def in_gui_thread(self) -> bool:
        """Whether the caller is on the GUI thread (where scheduled actions run)."""
        return bool(self._qtcore.QThread.currentThread() == self._gui_thread)
