"""Tests of ``cache_diffs``: the fold of a message stream, empties, a given cache, decode errors."""

from __future__ import annotations

from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.cache import ClientCache
from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.operators import cache_diffs
from rx_spacetimedb.protocol import QueryUpdate, TableUpdate
from tests.operators._canned import (
    SCHEMA,
    committed,
    delta,
    emitted,
    failed,
    identity_token,
    light,
    player,
    sub_applied,
    tx_table,
    unsub_applied,
)

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed



def test_marble_diagram_of_the_docstring() -> None:
    a, b, b2 = player(1, "a"), player(2, "b", 2), player(2, "b", 3)
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(205, identity_token()), on_next(210, sub_applied(1, a, b)),
        on_next(220, committed(tx_table("Player", delta((b,), (b2,))))), on_next(230, failed("no")),
        on_next(240, unsub_applied(1, a)), on_completed(250))
    result = scheduler.start(lambda: source.pipe(cache_diffs(SCHEMA)))
    out = emitted(result.messages)
    assert [(t, d.cause) for t, d in out] == [(210, "subscribe"), (220, "transaction"), (240, "unsubscribe")]
    assert out[0][1].table("Player").inserts == (a, b)
    assert out[1][1].table("Player").updates == ((b, b2),)
    assert out[2][1].table("Player").deletes == (a,)
    assert result.messages[-1] == on_completed(250)


def test_include_empty_emits_one_diff_per_message() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(205, identity_token()), on_next(210, sub_applied(1, player(1))), on_next(230, failed("no")))
    result = scheduler.start(lambda: source.pipe(cache_diffs(SCHEMA, include_empty=True)))
    assert [(t, d.cause, bool(d)) for t, d in emitted(result.messages)] == [
        (205, "none", False), (210, "subscribe", True), (230, "transaction", False)]


def test_folds_into_a_given_cache_for_synchronous_reads() -> None:
    cache = ClientCache(SCHEMA)
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, player(1))),
        on_next(220, light(tx_table("Player", delta((), (player(2),))))))
    scheduler.start(lambda: source.pipe(cache_diffs(cache=cache)))
    assert cache.rows("Player") == (player(1), player(2))


def test_a_row_that_does_not_decode_errors_the_stream_and_leaves_the_cache_as_it_was() -> None:
    cache = ClientCache(SCHEMA)
    bad = light(TableUpdate(0, "Player", 1, (QueryUpdate((), ('["nope"]',)),)))
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, player(1))), on_next(220, bad))
    result = scheduler.start(lambda: source.pipe(cache_diffs(cache=cache)))
    assert result.messages[-1].time == 220
    assert isinstance(result.messages[-1].value.exception, ProtocolError)
    assert cache.rows("Player") == (player(1),)
