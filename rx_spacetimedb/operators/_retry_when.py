"""The ``retry_when`` operator: resubscribe a source when a notifier says so.

reactivex 6 has ``retry(count)`` but no notifier-driven retry, and reconnecting with a backoff
needs one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject

__all__ = ["retry_when"]

_T = TypeVar("_T")

Notifier = Callable[[Observable[Exception]], Observable[Any]]


def retry_when(notifier: Notifier) -> Callable[[Observable[_T]], Observable[_T]]:
    """Resubscribe the source each time the notifier emits after a source error.

    The notifier is called once per subscription with an Observable of the source's errors and
    returns an Observable that decides: ``on_next`` resubscribes the source, ``on_error`` errors
    downstream, ``on_completed`` completes downstream. Reconnecting lives upstream of ``share()``
    (which never recovers from an error), so this is the piece that keeps a shared stream alive.

    ::

        source:   --a--#                  (subscription 1)
                          --b--c--|       (subscription 2, after the notifier emits)
        errors:        --#
        notifier:      ----x
        result:   --a-------b--c--|

    Details:
        * The notifier is subscribed once, *before* the first source subscription, so an emission
          that needs no error (e.g. a manual "reconnect now" signal merged in) also restarts the
          source: the current source subscription is disposed and a new one made.
        * Source values, completion and errors from an old source subscription are ignored once a
          newer one exists; downstream calls are serialized (errors may come from an I/O thread
          while the notifier's timer runs on another) by a queue that one thread at a time
          drains, never under the lock: an observer may block or call back into the source.
        * A notifier that emits synchronously on each error does not recurse: resubscriptions are
          run in a loop (trampolined) on the thread that started them.
        * Disposing the result disposes the source subscription, the notifier subscription and
          any pending timer inside it; nothing is resubscribed afterwards.

    Args:
        notifier: ``errors -> signals``; it must not raise, and if it does the error goes
            downstream.

    Returns:
        An operator function ``Observable[T] -> Observable[T]``.
    """

    def _retry_when(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return _RetryWhen(source, notifier, observer, scheduler).start()

        return Observable(subscribe)

    return _retry_when


class _RetryWhen(Generic[_T]):
    """The state of one ``retry_when`` subscription.

    A class rather than closures because several callbacks share mutable state under one lock.
    """

    _lock_owned: Callable[[], bool]

    def __init__(
        self,
        source: Observable[_T],
        notifier: Notifier,
        observer: abc.ObserverBase[_T],
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self._source = source
        self._notifier = notifier
        self._observer = observer
        self._scheduler = scheduler
        # Guards _generation, _done, _subscribing, _pending, _emitting and _outbox; never held
        # while the observer, the source or the notifier runs.
        self._lock = threading.RLock()
        self._lock_owned = self._lock._is_owned  # type: ignore[attr-defined]
        self._emitting = False  # a thread is calling the observer (it drains _outbox)
        self._outbox: deque[Callable[[], None]] = deque()  # downstream calls waiting their turn
        self._errors: Subject[Exception] = Subject()
        self._source_subscription = SerialDisposable()
        self._notifier_subscription = SerialDisposable()
        self._generation = 0
        self._done = False
        self._subscribing = False
        self._pending = False

    def start(self) -> abc.DisposableBase:
        """Subscribe the notifier, then the source; return the disposable of both."""
        try:
            signals = self._notifier(self._errors)
        except Exception as err:
            self._terminate(partial(self._observer.on_error, err))
            return Disposable()
        self._notifier_subscription.disposable = signals.subscribe(
            lambda _: self._resubscribe(),
            lambda err: self._terminate(lambda: self._observer.on_error(err)),
            lambda: self._terminate(self._observer.on_completed),
            scheduler=self._scheduler,
        )
        self._resubscribe()
        return CompositeDisposable(Disposable(self._dispose), self._source_subscription,
                                   self._notifier_subscription)

    def _resubscribe(self) -> None:
        """(Re)subscribe the source, looping instead of recursing on synchronous retries."""
        with self._lock:
            if self._done:
                return
            if self._subscribing:
                self._pending = True
                return
            self._subscribing = True
        while True:
            with self._lock:
                if self._done:
                    self._subscribing = False
                    return
                self._pending = False
                self._generation += 1
                generation = self._generation
            # Dispose the previous subscription before making the next one.
            self._source_subscription.disposable = Disposable()
            self._source_subscription.disposable = self._source.subscribe(
                partial(self._on_next, generation),
                partial(self._on_error, generation),
                partial(self._on_completed, generation),
                scheduler=self._scheduler,
            )
            with self._lock:
                if not self._pending or self._done:
                    self._subscribing = False
                    return

    def _on_next(self, generation: int, value: _T) -> None:
        with self._lock:
            if self._done or generation != self._generation:
                return
            if self._emitting:
                self._outbox.append(partial(self._observer.on_next, value))
                return
            self._emitting = True
        self._emit(partial(self._observer.on_next, value))

    def _emit(self, call: Callable[[], None]) -> None:
        """Make one downstream call, then those queued meanwhile; the caller set ``_emitting``."""
        assert not self._lock_owned()
        while True:
            try:
                call()
            except BaseException:
                with self._lock:
                    self._emitting = False  # the next emitter drains what is left
                raise
            with self._lock:
                if not self._outbox:
                    self._emitting = False
                    return
                call = self._outbox.popleft()

    def _on_error(self, generation: int, err: Exception) -> None:
        with self._lock:
            if self._done or generation != self._generation:
                return
        # Outside the lock: the notifier may call back into _resubscribe from here.
        self._errors.on_next(err)

    def _on_completed(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
        self._terminate(self._observer.on_completed)

    def _terminate(self, signal: Callable[[], None]) -> None:
        """Send one terminal notification downstream (the first one wins) and clean up."""
        with self._lock:
            if self._done:
                return
            self._done = True
            queued = self._emitting
            if queued:  # after the values already on their way, by the thread emitting them
                self._outbox.append(signal)
            else:
                self._emitting = True
        if not queued:
            self._emit(signal)
        self._source_subscription.dispose()
        self._notifier_subscription.dispose()

    def _dispose(self) -> None:
        with self._lock:
            self._done = True
