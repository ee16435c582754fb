"""Tests of ``retry_when`` in virtual time: resubscription, termination, disposal, sharing."""

from __future__ import annotations

import threading
from typing import Any

import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import Disposable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from rx_spacetimedb.operators import retry_when

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe

BOOM = RuntimeError("boom")
WAIT = 10.0


def delayed(scheduler: TestScheduler, ticks: float) -> Any:
    """A notifier that retries every error after ``ticks``."""
    return lambda errors: errors.pipe(ops.delay(ticks, scheduler=scheduler))


def test_resubscribes_when_the_notifier_emits() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, 1), on_error(20, BOOM))

    result = scheduler.start(
        lambda: source.pipe(retry_when(delayed(scheduler, 5))), disposed=255
    )

    # Each cycle: value at +10, error at +20, resubscribed 5 ticks later.
    assert result.messages == [on_next(210, 1), on_next(235, 1)]
    assert source.subscriptions == [subscribe(200, 220), subscribe(225, 245), subscribe(250, 255)]


def test_marble_diagram_of_the_docstring() -> None:
    with marbles_testing(timespan=1) as (start, cold, hot, exp):
        attempts = iter([cold("--a--#", None, None), cold("--b--c--|", None, None)])
        source = reactivex.defer(lambda _: next(attempts))
        notifier = hot("--------x", None, None)
        result = start(source.pipe(retry_when(lambda errors: notifier)))
        # Errors are ignored by this notifier: only its own signal at t=8 resubscribes.
        assert result == exp("--a-------b--c--|", None, None)


def test_notifier_error_errors_downstream_and_stops_the_source() -> None:
    scheduler = TestScheduler()
    fatal = ValueError("fatal")
    source = scheduler.create_cold_observable(on_next(10, 1), on_error(20, BOOM))

    def notifier(errors: Observable[Exception]) -> Observable[Any]:
        return errors.pipe(ops.flat_map(lambda e: reactivex.throw(fatal)))

    result = scheduler.start(lambda: source.pipe(retry_when(notifier)))

    assert result.messages == [on_next(210, 1), on_error(220, fatal)]
    assert source.subscriptions == [subscribe(200, 220)]


def test_notifier_completion_completes_downstream() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, 1), on_error(20, BOOM))

    result = scheduler.start(
        lambda: source.pipe(retry_when(lambda errors: errors.pipe(ops.take(2))))
    )

    # take(2): the second error still emits (a resubscription at 240), then the notifier
    # completes at once, which completes downstream and disposes that last subscription.
    assert result.messages == [on_next(210, 1), on_next(230, 1), on_completed(240)]
    assert source.subscriptions == [
        subscribe(200, 220), subscribe(220, 240), subscribe(240, 240),
    ]


def test_source_completion_completes_and_releases_the_notifier() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, 1), on_completed(20))
    signal = scheduler.create_hot_observable(on_next(500, "x"))

    result = scheduler.start(lambda: source.pipe(retry_when(lambda errors: signal)))

    assert result.messages == [on_next(210, 1), on_completed(220)]
    assert signal.subscriptions == [subscribe(200, 220)]
    assert source.subscriptions == [subscribe(200, 220)]


def test_dispose_during_the_delay_stops_retrying() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, 1), on_error(20, BOOM))

    result = scheduler.start(
        lambda: source.pipe(retry_when(delayed(scheduler, 100))), disposed=250
    )
    scheduler.advance_to(1000)

    assert result.messages == [on_next(210, 1)]
    assert source.subscriptions == [subscribe(200, 220)]


def test_notifier_signal_without_error_restarts_the_source() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, 1), on_next(50, 2))
    signal = scheduler.create_hot_observable(on_next(230, "reconnect"))

    result = scheduler.start(lambda: source.pipe(retry_when(lambda errors: signal)))

    # The first subscription is disposed at 230, so its value 2 (due at 250) never arrives.
    assert result.messages == [on_next(210, 1), on_next(240, 1), on_next(280, 2)]
    assert source.subscriptions == [subscribe(200, 230), subscribe(230, 1000)]


def test_synchronous_retries_do_not_recurse() -> None:
    calls = 0

    def failing(_: Any) -> Observable[int]:
        nonlocal calls
        calls += 1
        return reactivex.throw(BOOM)

    completed: list[bool] = []
    reactivex.defer(failing).pipe(
        retry_when(lambda errors: errors.pipe(ops.take(5000)))
    ).subscribe(on_completed=lambda: completed.append(True))

    # 5000 synchronous retries would blow the recursion limit without the trampoline.
    assert calls == 5000
    assert completed == [True]


def test_notifier_factory_raising_errors_downstream() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, 1))

    def notifier(errors: Observable[Exception]) -> Observable[Any]:
        raise KeyError("bad notifier")

    result = scheduler.start(lambda: source.pipe(retry_when(notifier)))

    def is_key_error(err: Exception) -> bool:
        return isinstance(err, KeyError)

    # The predicate form matches only with the expectation on the left.
    assert [on_error(200, is_key_error)] == result.messages  # type: ignore[arg-type]
    assert source.subscriptions == []


def test_retry_upstream_of_share_keeps_one_stream_alive() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        on_next(10, "a"), on_next(20, "b"), on_error(30, BOOM)
    )
    shared = source.pipe(retry_when(delayed(scheduler, 10)), ops.share())
    first = scheduler.create_observer()
    second = scheduler.create_observer()
    scheduler.schedule_absolute(200, lambda *_: shared.subscribe(first))
    scheduler.schedule_absolute(215, lambda *_: shared.subscribe(second))

    scheduler.advance_to(275)

    assert first.messages == [
        on_next(210, "a"), on_next(220, "b"), on_next(250, "a"), on_next(260, "b"),
    ]
    # The late subscriber joins the same stream and keeps receiving after the error.
    assert second.messages == [on_next(220, "b"), on_next(250, "a"), on_next(260, "b")]
    # One source subscription per cycle, not one per subscriber.
    assert source.subscriptions == [subscribe(200, 230), subscribe(240, 270)]


def test_stale_subscription_events_are_ignored() -> None:
    # A source whose events keep coming after disposal, as when they race in from an I/O thread
    # (reactivex's own Observable would drop them, so this one bypasses its auto-detach).
    callbacks: list[tuple[Any, Any, Any]] = []

    class Stubborn(Observable[int]):
        def subscribe(
            self, on_next: Any = None, on_error: Any = None, on_completed: Any = None,
            *, scheduler: Any = None,
        ) -> Any:
            callbacks.append((on_next, on_error, on_completed))
            return Disposable()

    received: list[Any] = []
    signal: Subject[str] = Subject()
    Stubborn().pipe(retry_when(lambda errors: signal)).subscribe(
        received.append, received.append, lambda: received.append("done")
    )

    signal.on_next("restart")
    stale, current = callbacks
    stale[0](1)
    stale[1](BOOM)
    stale[2]()
    current[0](2)

    assert received == [2]


def test_errors_from_another_thread_resubscribe_without_deadlock() -> None:
    # The connection's errors arrive on its I/O thread while users subscribe from theirs.
    subjects: list[Subject[int]] = []

    def make(_: Any) -> Observable[int]:
        subject: Subject[int] = Subject()
        subjects.append(subject)
        return subject

    received: list[Any] = []
    reactivex.defer(make).pipe(
        retry_when(lambda errors: errors.pipe(ops.take(3)))
    ).subscribe(received.append, received.append, lambda: received.append("done"))

    def io_thread() -> None:
        for n in range(4):
            subjects[n].on_next(n)
            subjects[n].on_error(BOOM)

    worker = threading.Thread(target=io_thread)
    worker.start()
    worker.join(5)

    assert not worker.is_alive()
    # The third error is retried (a fourth subscription) and then take(3) completes.
    assert received == [0, 1, 2, "done"]
    assert len(subjects) == 4
    assert all(not subject.observers for subject in subjects)


def test_the_observer_runs_outside_the_lock_so_another_thread_can_end_the_stream_meanwhile() -> None:
    # An observer that waits for another thread which signals the operator (a backoff timer, a
    # user closing the connection) must not deadlock: it is never called under the operator's lock.
    source: Subject[int] = Subject()
    signals: Subject[Any] = Subject()
    received: list[Any] = []
    helpers: list[threading.Thread] = []

    def on_next(value: int) -> None:
        received.append(value)
        helper = threading.Thread(target=signals.on_completed)
        helpers.append(helper)
        helper.start()
        helper.join(WAIT)
        received.append("helper finished" if not helper.is_alive() else "helper blocked")

    source.pipe(retry_when(lambda _: signals)).subscribe(on_next, received.append,
                                                         lambda: received.append("done"))
    source.on_next(1)
    helpers[0].join(WAIT)

    # The completion waited for the value being delivered, then came on the emitting thread.
    assert received == [1, "helper finished", "done"]
    source.on_next(2)
    assert received[-1] == "done"


def test_values_from_two_threads_are_delivered_one_at_a_time_and_in_order() -> None:
    source: Subject[int] = Subject()
    received: list[int] = []
    inside = threading.Event()
    release = threading.Event()

    def on_next(value: int) -> None:
        received.append(value)
        if value == 1:
            inside.set()
            release.wait(WAIT)

    source.pipe(retry_when(lambda errors: errors)).subscribe(on_next)
    first = threading.Thread(target=source.on_next, args=(1,))
    first.start()
    inside.wait(WAIT)
    second = threading.Thread(target=source.on_next, args=(2,))
    second.start()
    second.join(WAIT)  # queued behind 1, not blocked: the first thread delivers it
    assert not second.is_alive() and received == [1]
    release.set()
    first.join(WAIT)
    assert received == [1, 2]
