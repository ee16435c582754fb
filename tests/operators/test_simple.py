"""Tests of ``subscription_errors``, ``identity_tokens`` and ``one_off_results``."""

from __future__ import annotations

from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.operators import identity_tokens, one_off_results, subscription_errors
from rx_spacetimedb.protocol import OneOffQueryResponse, SubscriptionError, TimeDuration
from tests.operators._canned import OTHER_CONNECTION, committed, identity_token

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed

REQUEST_ERROR = SubscriptionError(143, 9, 3, None, "no such table")
FATAL_ERROR = SubscriptionError(0, None, None, None, "query failed during a transaction")


def answer(message_id: bytes) -> OneOffQueryResponse:
    return OneOffQueryResponse(message_id, None, (), TimeDuration(207))


def test_subscription_errors_all_or_only_the_fatal_ones() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, identity_token()), on_next(220, REQUEST_ERROR), on_next(230, committed()),
        on_next(240, FATAL_ERROR), on_completed(250))
    every = scheduler.start(lambda: source.pipe(subscription_errors()))
    assert every.messages == [on_next(220, REQUEST_ERROR), on_next(240, FATAL_ERROR), on_completed(250)]

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(220, REQUEST_ERROR), on_next(240, FATAL_ERROR), on_completed(250))
    fatal = scheduler.start(lambda: source.pipe(subscription_errors(fatal_only=True)))
    assert fatal.messages == [on_next(240, FATAL_ERROR), on_completed(250)]


def test_identity_tokens_one_per_connection() -> None:
    scheduler = TestScheduler()
    first, second = identity_token(), identity_token(OTHER_CONNECTION)
    source = scheduler.create_hot_observable(
        on_next(210, first), on_next(220, committed()), on_next(230, second))
    result = scheduler.start(lambda: source.pipe(identity_tokens()))
    assert result.messages == [on_next(210, first), on_next(230, second)]


def test_one_off_results_match_the_message_id_as_bytes() -> None:
    scheduler = TestScheduler()
    a, b = answer(bytes.fromhex("a3f1")), answer(bytes.fromhex("b0b0"))
    source = scheduler.create_hot_observable(on_next(210, a), on_next(220, committed()), on_next(230, b))
    every = scheduler.start(lambda: source.pipe(one_off_results()))
    assert every.messages == [on_next(210, a), on_next(230, b)]

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, a), on_next(230, b))
    # An id written in uppercase hex still matches the lowercase answer's bytes.
    one = scheduler.start(lambda: source.pipe(one_off_results(bytes.fromhex("B0B0"))))
    assert one.messages == [on_next(230, b)]
