"""Subjects that protect the I/O thread from user callbacks.

reactivex's ``Subject`` calls its observers in a loop; one observer that raises stops the loop, so
the others never see the value and the exception unwinds into our socket reader. These subjects
report the exception and go on with the next observer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.internal import DisposedException
from reactivex.subject import BehaviorSubject, Subject

__all__ = ["ErrorSink", "GuardedBehaviorSubject", "GuardedSubject", "LatestSubject"]

_T = TypeVar("_T")
_log = logging.getLogger("rx_spacetimedb")

ErrorSink = Callable[[Exception], None]


def _log_only(err: Exception) -> None:
    _log.error("an observer raised; it was detached, the others go on", exc_info=err)


class GuardedSubject(Subject[_T]):
    """A ``Subject`` whose failing observers are reported to ``on_observer_error`` and skipped."""

    def __init__(self, on_observer_error: ErrorSink = _log_only) -> None:
        super().__init__()
        self._report = on_observer_error

    def on_next(self, value: _T) -> None:
        """Send ``value`` to every observer subscribed now.

        Without the subject's lock: this runs for every message, and copying the list of observers
        is one atomic step under the GIL (subscribe and dispose change it under the lock).
        """
        if self.is_disposed:
            raise DisposedException()
        if self.is_stopped:
            return
        for observer in self.observers.copy():
            try:
                observer.on_next(value)
            except Exception as err:  # a user callback failed: report it, keep the others going
                self._report(err)


class GuardedBehaviorSubject(BehaviorSubject[_T]):
    """A ``BehaviorSubject`` (replays the current value) with guarded observers."""

    def __init__(self, value: _T, on_observer_error: ErrorSink = _log_only) -> None:
        super().__init__(value)
        self._report = on_observer_error

    def _on_next_core(self, value: _T) -> None:
        with self.lock:
            observers = self.observers.copy()
            self.value = value
        for observer in observers:
            try:
                observer.on_next(value)
            except Exception as err:
                self._report(err)


class LatestSubject(GuardedBehaviorSubject[_T]):
    """A guarded ``BehaviorSubject`` that still gives the last value after it ended.

    The final state of a closed connection, or the final rows of a finished table, stay useful; a
    plain ``BehaviorSubject`` would only say "completed" to a late subscriber.
    """

    def _subscribe_core(self, observer: abc.ObserverBase[_T],
                        scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        with self.lock:
            self.check_disposed()
            if not self.is_stopped:
                return super()._subscribe_core(observer, scheduler)
            error, value = self.exception, self.value
        observer.on_next(value)
        if error is not None:
            observer.on_error(error)
        else:
            observer.on_completed()
        return Disposable()
