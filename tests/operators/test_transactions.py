"""Tests of ``transactions``: one emission per committed transaction, every table together."""

from __future__ import annotations

from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.operators import transactions
from tests.operators._canned import (
    SCHEMA,
    balance,
    committed,
    delta,
    emitted,
    failed,
    light,
    out_of_energy,
    player,
    sub_applied,
    tx_table,
)

on_next = ReactiveTest.on_next



def test_each_committed_transaction_is_one_emission_with_all_its_tables() -> None:
    scheduler = TestScheduler()
    both = committed(tx_table("Player", delta((player(1, "a", 1),), (player(1, "a", 2),))),
                     tx_table("Balance", delta((), (balance(9, 100),))))
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, player(1, "a", 1))),  # a snapshot is not a transaction
        on_next(220, both),
        on_next(230, failed("no")),
        on_next(235, out_of_energy()),
        on_next(240, light(tx_table("Player", delta((), (player(2),))))),
    )
    result = scheduler.start(lambda: source.pipe(transactions(SCHEMA)))
    out = emitted(result.messages)
    assert [t for t, _ in out] == [220, 240]
    first = out[0][1]
    assert [t.table for t in first.tables] == ["Player", "Balance"]
    assert first.table("Player").updates == ((player(1, "a", 1), player(1, "a", 2)),)
    assert first.table("Balance").inserts == (balance(9, 100),)
    assert first.reducer_call == both.reducer_call
    assert out[1][1].table("Player").inserts == (player(2),)


def test_a_committed_transaction_that_touches_no_subscribed_row_still_emits() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, committed()))
    out = emitted(scheduler.start(lambda: source.pipe(transactions(SCHEMA))).messages)
    assert len(out) == 1 and not out[0][1] and out[0][1].tables == ()
