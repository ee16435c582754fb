"""Tests of ``of_type``: keeps one message class, in order, and passes errors and completion."""

from __future__ import annotations

from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.operators import of_type
from rx_spacetimedb.protocol import IdentityToken, SubscriptionError, TransactionUpdate
from tests.operators._canned import committed, failed, identity_token

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed

BOOM = RuntimeError("boom")


def test_keeps_only_instances_of_the_class() -> None:
    scheduler = TestScheduler()
    token, tx, bad = identity_token(), committed(), failed("no")
    error = SubscriptionError(0, 1, 1, None, "x")
    source = scheduler.create_hot_observable(
        on_next(210, token), on_next(220, tx), on_next(230, error), on_next(240, bad), on_completed(250))
    result = scheduler.start(lambda: source.pipe(of_type(TransactionUpdate)))
    assert result.messages == [on_next(220, tx), on_next(240, bad), on_completed(250)]


def test_errors_pass_through() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, identity_token()), on_error(220, BOOM))
    result = scheduler.start(lambda: source.pipe(of_type(IdentityToken)))
    assert result.messages == [on_next(210, identity_token()), on_error(220, BOOM)]
