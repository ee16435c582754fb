"""An exponential-backoff notifier for ``retry_when``.

Reconnecting right away hammers a server that is down; waiting longer after each failure (with
optional jitter so many clients do not reconnect in lockstep) is the usual cure.
"""

from __future__ import annotations

import math
import random as _random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable
from reactivex.scheduler import TimeoutScheduler

__all__ = ["ExponentialBackoff", "RetryAttempt", "exponential_backoff"]


@dataclass(frozen=True, slots=True)
class RetryAttempt:
    """One scheduled retry: its number (1 for the first retry), its delay in seconds, its cause.

    Passed to ``on_retry`` so the connection can publish "reconnecting (attempt n, in d s)".
    """

    attempt: int
    delay: float
    error: Exception


class ExponentialBackoff:
    """A ``retry_when`` notifier: retry n waits ``min(maximum, initial * factor**(n-1))`` s.

    It is an object rather than a bare function so that the caller can call ``reset()`` when a
    retry has *succeeded* (e.g. the connection received ``IdentityToken``); the next failure then
    waits ``initial`` again instead of continuing to grow.

    One instance drives one retry loop: the attempt counter is shared by every subscription of
    the notifier and starts again from zero each time ``retry_when`` subscribes it (i.e. each time
    the retried stream is subscribed anew). Create it with ``exponential_backoff()``, which
    validates the arguments.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float,
        jitter: float,
        max_attempts: int | None,
        should_retry: Callable[[Exception], bool] | None,
        on_retry: Callable[[RetryAttempt], None] | None,
        random: Callable[[], float],
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.max_attempts = max_attempts
        self._should_retry = should_retry
        self._on_retry = on_retry
        self._random = random
        self._scheduler = scheduler
        self._lock = threading.Lock()  # guards _attempts (reset from any thread, counted by retries)
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """The number of retries scheduled since the last reset (0 after a success)."""
        with self._lock:
            return self._attempts

    def reset(self) -> None:
        """Say "the last retry succeeded": the next failure is attempt 1 with delay ``initial``.

        Safe to call from any thread; it does not cancel a retry that is already scheduled.
        """
        with self._lock:
            self._attempts = 0

    def base_delay(self, attempt: int) -> float:
        """The delay of retry ``attempt`` (1-based) before jitter, capped at ``maximum``."""
        try:
            return min(self.maximum, self.initial * self.factor ** (attempt - 1))
        except OverflowError:
            return self.maximum

    def delay(self, attempt: int) -> float:
        """The delay of retry ``attempt`` with jitter applied, clamped to ``[0, maximum]``."""
        base = self.base_delay(attempt)
        if not self.jitter:
            return base
        jittered = base * (1.0 + self.jitter * (2.0 * self._random() - 1.0))
        return min(self.maximum, max(0.0, jittered))

    def __call__(self, errors: Observable[Exception]) -> Observable[int]:
        """Turn source errors into delayed retry signals (the attempt number) or a final error."""

        def subscribe(
            observer: abc.ObserverBase[int], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            timer_scheduler = self._scheduler or scheduler or TimeoutScheduler.singleton()
            timer = SerialDisposable()
            self.reset()

            def on_error_value(err: Exception) -> None:
                try:
                    if self._should_retry is not None and not self._should_retry(err):
                        observer.on_error(err)
                        return
                    with self._lock:
                        self._attempts += 1
                        attempt = self._attempts
                    if self.max_attempts is not None and attempt > self.max_attempts:
                        observer.on_error(err)
                        return
                    delay = self.delay(attempt)
                    if self._on_retry is not None:
                        self._on_retry(RetryAttempt(attempt, delay, err))
                except Exception as callback_error:
                    # A failing should_retry/on_retry/random must not be swallowed, nor retried.
                    observer.on_error(callback_error)
                    return

                def fire(_: abc.SchedulerBase, __: Any = None) -> None:
                    observer.on_next(attempt)

                timer.disposable = timer_scheduler.schedule_relative(delay, fire)

            subscription = errors.subscribe(
                on_error_value, observer.on_error, observer.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(subscription, timer)

        return Observable(subscribe)

    def __repr__(self) -> str:
        return (
            f"<ExponentialBackoff initial={self.initial} maximum={self.maximum} "
            f"factor={self.factor} jitter={self.jitter} max_attempts={self.max_attempts} "
            f"attempts={self.attempts}>"
        )


def _check_number(name: str, value: object, *, minimum: float, maximum: float = math.inf) -> float:
    """Return ``value`` as a float or raise naming ``name``: the caller's typo shows at once."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        bounds = f"<= {maximum}" if math.isfinite(maximum) else ""
        raise ValueError(f"{name} must be finite, >= {minimum} {bounds}, got {value!r}".rstrip())
    return float(value)


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


def exponential_backoff(
    initial: float = 0.5,
    maximum: float = 30.0,
    factor: float = 2.0,
    *,
    jitter: float = 0.0,
    max_attempts: int | None = None,
    should_retry: Callable[[Exception], bool] | None = None,
    on_retry: Callable[[RetryAttempt], None] | None = None,
    random: Callable[[], float] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> ExponentialBackoff:
    """Build a ``retry_when`` notifier that retries with exponentially growing delays.

    Retry ``n`` (1-based) waits ``min(maximum, initial * factor**(n-1))`` seconds, then with
    jitter ``delay * (1 + jitter * (2*random() - 1))`` clamped to ``[0, maximum]``. Call
    ``.reset()`` on the result after a success so the next failure starts again at ``initial``::

        backoff = exponential_backoff(0.5, 30, jitter=0.2, should_retry=is_transient)
        session.pipe(ops.do_action(on_next=lambda m: backoff.reset()), retry_when(backoff), share())

    Args:
        initial: Delay of the first retry in seconds (>= 0).
        maximum: Upper bound of every delay in seconds (>= ``initial``).
        factor: Growth per attempt (>= 1).
        jitter: Random spread as a fraction of the delay, in ``[0, 1]``; 0 means none.
        max_attempts: Retries allowed between two resets; the next error passes through. ``None``
            retries forever, 0 never retries.
        should_retry: ``False`` for an error makes it pass through at once (fatal errors such as
            a rejected token). ``None`` retries every error.
        on_retry: Called with a ``RetryAttempt`` when a retry is scheduled (before the wait),
            on the thread that delivered the error.
        random: Source of floats in ``[0, 1)`` for the jitter; defaults to ``random.random``.
            Inject one for deterministic tests.
        scheduler: Where the delays run; defaults to the subscription's scheduler, then
            ``TimeoutScheduler``.

    Returns:
        An ``ExponentialBackoff``: call it with the errors Observable (``retry_when`` does).

    Raises:
        TypeError: an argument has the wrong type (named in the message).
        ValueError: an argument is out of range (named in the message).
    """
    initial = _check_number("initial", initial, minimum=0.0)
    maximum = _check_number("maximum", maximum, minimum=0.0)
    if maximum < initial:
        raise ValueError(f"maximum must be >= initial ({initial}), got {maximum}")
    factor = _check_number("factor", factor, minimum=1.0)
    jitter = _check_number("jitter", jitter, minimum=0.0, maximum=1.0)
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError(
                f"max_attempts must be an int or None, not {type(max_attempts).__name__}"
            )
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
    _check_callable("should_retry", should_retry)
    _check_callable("on_retry", on_retry)
    _check_callable("random", random)
    if scheduler is not None and not isinstance(scheduler, abc.SchedulerBase):
        raise TypeError(f"scheduler must be a reactivex scheduler, not {type(scheduler).__name__}")
    return ExponentialBackoff(
        initial,
        maximum,
        factor,
        jitter,
        max_attempts,
        should_retry,
        on_retry,
        random if random is not None else _random.random,
        scheduler,
    )
