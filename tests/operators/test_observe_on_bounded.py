"""observe_on_bounded in virtual time: delivery on the scheduler, bounded queue, overflow policies."""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.subscription import Subscription

from rx_spacetimedb.errors import SlowConsumer
from rx_spacetimedb.operators import observe_on_bounded

on_next, on_completed, on_error = ReactiveTest.on_next, ReactiveTest.on_completed, ReactiveTest.on_error


class Deferred(TestScheduler):
    """A virtual-time scheduler whose scheduled work runs one tick later (a busy consumer thread)."""

    def schedule(self, action: Any, state: Any = None) -> Any:
        return self.schedule_relative(1, action, state)


def run(overflow: str, max_pending: int, dropped: list[Any] | None = None) -> list[Any]:
    producer = TestScheduler()
    consumer = Deferred()
    source = producer.create_hot_observable(
        on_next(210, "a"), on_next(210, "b"), on_next(210, "c"), on_next(210, "d"), on_completed(220))
    received: list[Any] = []
    source.pipe(observe_on_bounded(consumer, max_pending, overflow,  # type: ignore[arg-type]
                                   on_drop=None if dropped is None else dropped.append)).subscribe(
        received.append, lambda e: received.append(e), lambda: received.append("|"))
    producer.advance_to(215)  # all four arrive before the consumer runs once
    consumer.advance_by(2)
    producer.advance_to(230)
    consumer.advance_by(2)
    return received


def test_within_the_bound_everything_arrives_in_order() -> None:
    assert run("drop_oldest", 10) == ["a", "b", "c", "d", "|"]


def test_drop_oldest_keeps_the_newest() -> None:
    dropped: list[Any] = []
    assert run("drop_oldest", 2, dropped) == ["c", "d", "|"]
    assert dropped == ["a", "b"]


def test_drop_newest_keeps_the_oldest() -> None:
    dropped: list[Any] = []
    assert run("drop_newest", 2, dropped) == ["a", "b", "|"]
    assert dropped == ["c", "d"]


def test_error_ends_the_subscriber_after_the_queued_items() -> None:
    received = run("error", 2)
    assert received[:2] == ["a", "b"]
    assert isinstance(received[2], SlowConsumer) and len(received) == 3


def test_error_policy_unsubscribes_from_the_source() -> None:
    producer = TestScheduler()
    source = producer.create_hot_observable(on_next(210, 1), on_next(210, 2), on_next(300, 3))
    source.pipe(observe_on_bounded(Deferred(), 1, "error")).subscribe(lambda _: None, lambda _: None)
    producer.advance_to(400)
    assert source.subscriptions == [Subscription(0, 210)]


def test_items_are_delivered_on_the_given_scheduler() -> None:
    scheduler = TestScheduler()
    received: list[Any] = []
    reactivex.of(1, 2).pipe(observe_on_bounded(scheduler, 5)).subscribe(received.append)
    assert received == []  # nothing on the producer's thread: it only queued them
    scheduler.start()
    assert received == [1, 2]


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"max_pending": 0}, "max_pending"),
    ({"overflow": "block"}, "overflow"),
    ({"scheduler": "now"}, "scheduler"),
])
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], name: str) -> None:
    arguments: dict[str, Any] = {"scheduler": TestScheduler(), **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        observe_on_bounded(**arguments)


def test_a_scheduler_that_runs_the_drain_at_once_does_not_deadlock() -> None:
    """The scheduler is called outside the operator's lock (ImmediateScheduler drains right there)."""
    import threading

    import reactivex
    from reactivex.scheduler import ImmediateScheduler

    out: list[int] = []
    worker = threading.Thread(daemon=True, target=lambda: reactivex.of(1, 2, 3).pipe(
        observe_on_bounded(ImmediateScheduler(), 2)).subscribe(out.append))
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "deadlocked: the scheduler ran the drain under the lock"
    assert out == [1, 2, 3]
