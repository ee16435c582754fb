"""Tests of ``exponential_backoff`` in virtual time: delays to the tick, reset, jitter, limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.errors import AuthenticationFailed, TransportError
from rx_spacetimedb.operators import RetryAttempt, exponential_backoff, retry_when

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe

DROPPED = TransportError("dropped")


def failing_source(scheduler: TestScheduler, after: int = 1) -> Any:
    """A cold source that emits "up" at once and fails ``after`` ticks later."""
    return scheduler.create_cold_observable(on_next(0, "up"), on_error(after, DROPPED))


def starts(source: Any) -> list[float]:
    """The virtual times at which the source was (re)subscribed."""
    return [s.subscribe for s in source.subscriptions]


def test_delays_grow_exponentially_and_are_capped_exactly() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    attempts: list[RetryAttempt] = []
    backoff = exponential_backoff(
        10, 50, 2, on_retry=attempts.append, scheduler=scheduler
    )

    scheduler.start(lambda: source.pipe(retry_when(backoff)), disposed=400)

    # Fail 1 tick after each start; then wait 10, 20, 40, 50 (capped), 50 ...
    assert starts(source)[:6] == [200, 211, 232, 273, 324, 375]
    assert [a.delay for a in attempts[:5]] == [10, 20, 40, 50, 50]
    assert [a.attempt for a in attempts[:3]] == [1, 2, 3]
    assert attempts[0].error is DROPPED


def test_reset_after_success_starts_again_at_initial() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(10, 1000, 2, scheduler=scheduler)
    # A success (here: the "up" value) says the connection worked.
    resetting = source.pipe(ops.do_action(on_next=lambda _: backoff.reset()))

    scheduler.start(lambda: resetting.pipe(retry_when(backoff)), disposed=260)

    # Every retry is attempt 1 again: a constant 10-tick wait.
    assert starts(source) == [200, 211, 222, 233, 244, 255]
    assert backoff.attempts == 1


def test_without_reset_the_delays_keep_growing() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(10, 1000, 2, scheduler=scheduler)

    scheduler.start(lambda: source.pipe(retry_when(backoff)), disposed=260)

    assert starts(source) == [200, 211, 232]
    assert backoff.attempts == 3


def test_jitter_uses_the_injected_random_source() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    randoms: Iterator[float] = iter([0.0, 1.0, 0.5, 0.75])
    attempts: list[RetryAttempt] = []
    backoff = exponential_backoff(
        10, 100, 2, jitter=0.5, random=lambda: next(randoms),
        on_retry=attempts.append, scheduler=scheduler,
    )

    scheduler.start(lambda: source.pipe(retry_when(backoff)), disposed=300)

    # 10*(1-0.5)=5, 20*(1+0.5)=30, 40*1=40, 80*(1+0.25)=100 (clamped to maximum 100)
    assert [a.delay for a in attempts] == [5, 30, 40, 100]
    assert starts(source) == [200, 206, 237, 278]


def test_jitter_is_clamped_to_maximum() -> None:
    backoff = exponential_backoff(10, 10, 2, jitter=1.0, random=lambda: 0.999)
    assert backoff.delay(1) == 10
    assert backoff.delay(5) == 10


def test_fatal_errors_pass_through_without_retry() -> None:
    scheduler = TestScheduler()
    rejected = AuthenticationFailed(401, "Invalid token")
    source = scheduler.create_cold_observable(on_next(0, "up"), on_error(5, rejected))
    retried: list[RetryAttempt] = []
    backoff = exponential_backoff(
        10, should_retry=lambda e: not isinstance(e, AuthenticationFailed),
        on_retry=retried.append, scheduler=scheduler,
    )

    result = scheduler.start(lambda: source.pipe(retry_when(backoff)))

    assert result.messages == [on_next(200, "up"), on_error(205, rejected)]
    assert retried == []
    assert source.subscriptions == [subscribe(200, 205)]


def test_max_attempts_then_the_error_passes_through() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(10, 100, 1, max_attempts=2, scheduler=scheduler)

    result = scheduler.start(lambda: source.pipe(retry_when(backoff)))

    assert starts(source) == [200, 211, 222]
    assert result.messages[-1] == on_error(223, DROPPED)
    assert len(result.messages) == 4  # three "up" and the error


def test_max_attempts_zero_never_retries() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(max_attempts=0, scheduler=scheduler)

    result = scheduler.start(lambda: source.pipe(retry_when(backoff)))

    assert result.messages == [on_next(200, "up"), on_error(201, DROPPED)]


def test_max_attempts_counts_from_the_last_reset() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(10, 100, 1, max_attempts=1, scheduler=scheduler)
    resetting = source.pipe(ops.do_action(on_next=lambda _: backoff.reset()))

    result = scheduler.start(lambda: resetting.pipe(retry_when(backoff)), disposed=250)

    # One retry allowed per failure streak; every success resets it, so it never gives up.
    assert starts(source) == [200, 211, 222, 233, 244]
    assert result.messages == [on_next(t, "up") for t in (200, 211, 222, 233, 244)]


def test_dispose_cancels_the_pending_retry() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    retried: list[RetryAttempt] = []
    backoff = exponential_backoff(100, 1000, on_retry=retried.append, scheduler=scheduler)

    scheduler.start(lambda: source.pipe(retry_when(backoff)), disposed=250)
    scheduler.advance_to(2000)

    assert starts(source) == [200]
    assert len(retried) == 1  # the retry was announced but never ran


def test_a_new_subscription_starts_from_attempt_one() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(10, 1000, 2, scheduler=scheduler)
    retried = source.pipe(retry_when(backoff))

    scheduler.start(lambda: retried, disposed=250)  # attempts 1..3 happen
    assert backoff.attempts == 3
    observer = scheduler.create_observer()
    retried.subscribe(observer)
    assert backoff.attempts == 0


def test_callback_errors_error_downstream() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    broken = ZeroDivisionError("on_retry broke")

    def on_retry(_: RetryAttempt) -> None:
        raise broken

    backoff = exponential_backoff(on_retry=on_retry, scheduler=scheduler)
    result = scheduler.start(lambda: source.pipe(retry_when(backoff)))

    assert result.messages == [on_next(200, "up"), on_error(201, broken)]


def test_uses_the_subscription_scheduler_when_none_is_given() -> None:
    scheduler = TestScheduler()
    source = failing_source(scheduler)
    backoff = exponential_backoff(7, 100, 1)

    scheduler.start(lambda: source.pipe(retry_when(backoff)), disposed=220)

    assert starts(source) == [200, 208, 216]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    backoff = exponential_backoff(1, 30, 10)
    assert backoff.delay(10_000) == 30


def test_retry_attempt_is_frozen() -> None:
    attempt = RetryAttempt(1, 0.5, DROPPED)
    with pytest.raises(AttributeError):
        attempt.delay = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"initial": -1}, ValueError, "initial"),
        ({"initial": "1"}, TypeError, "initial"),
        ({"initial": True}, TypeError, "initial"),
        ({"initial": float("nan")}, ValueError, "initial"),
        ({"maximum": 0.1}, ValueError, "maximum"),
        ({"maximum": float("inf")}, ValueError, "maximum"),
        ({"factor": 0.5}, ValueError, "factor"),
        ({"jitter": 1.5}, ValueError, "jitter"),
        ({"jitter": -0.1}, ValueError, "jitter"),
        ({"max_attempts": -1}, ValueError, "max_attempts"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts"),
        ({"should_retry": 3}, TypeError, "should_retry"),
        ({"on_retry": "x"}, TypeError, "on_retry"),
        ({"random": 0.5}, TypeError, "random"),
        ({"scheduler": object()}, TypeError, "scheduler"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        exponential_backoff(**kwargs)


def test_repr_shows_the_settings_and_attempts() -> None:
    text = repr(exponential_backoff(1, 8, 2, max_attempts=3))
    assert "initial=1.0" in text and "maximum=8.0" in text and "attempts=0" in text
