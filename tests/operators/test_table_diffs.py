"""Tests of ``table_diffs``: typed per-table changes folded through the client cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from rx_spacetimedb.cache import ClientCache, TableDiff
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.operators import table_diffs
from rx_spacetimedb.protocol import Identity
from tests.operators._canned import (
    OTHER_CONNECTION,
    SCHEMA,
    balance,
    committed,
    delta,
    failed,
    identity_token,
    light,
    log_line,
    multi_applied,
    player,
    snapshot_update,
    sub_applied,
    tx_table,
    unsub_applied,
)

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed


def changes(diff: TableDiff[Any]) -> tuple[object, ...]:
    return (diff.cause, diff.inserts, diff.deletes, diff.updates)


def emitted(records: list[Any]) -> list[tuple[int, Any]]:
    """(time, value) of every on_next."""
    return [(r.time, r.value.value) for r in records if r.value.kind == "N"]


def test_marble_diagram_of_the_docstring() -> None:
    a, b, b2 = player(1, "a", 1), player(2, "b", 2), player(2, "b", 20)
    messages = {
        "S": sub_applied(1, a, b),
        "T": committed(tx_table("Player", delta((b,), (b2,)))),
        "O": light(tx_table("LogLine", delta((), (log_line("x"),)))),
        "D": light(tx_table("Player", delta((a,)))),
    }
    with marbles_testing(timespan=1) as (start, _cold, hot, _exp):
        source = hot("--S--T--O--D--|", messages, None)
        result = start(source.pipe(table_diffs("Player", schema=SCHEMA)))
    diffs = emitted(result)
    assert [t for t, _ in diffs] == [202, 205, 211]  # S, T and D; O touches another table
    assert [changes(d) for _, d in diffs] == [
        ("subscribe", (a, b), (), ()),
        ("transaction", (), (), ((b, b2),)),
        ("transaction", (), (a,), ()),
    ]
    assert diffs[1][1].reducer_call == messages["T"].reducer_call  # type: ignore[union-attr]
    assert result[-1].value.kind == "C"


def test_one_diff_per_table_per_transaction_and_none_for_failed_calls() -> None:
    scheduler = TestScheduler()
    both = committed(tx_table("Player", delta((), (player(1),))),
                     tx_table("Balance", delta((), (balance(2**70, 1),))))
    source = scheduler.create_hot_observable(on_next(210, both), on_next(220, failed("nope")))
    players = scheduler.start(lambda: source.pipe(table_diffs("Player", schema=SCHEMA)))
    assert [changes(d) for _, d in emitted(players.messages)] == [("transaction", (player(1),), (), ())]

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, both), on_next(220, failed("nope")))
    balances = scheduler.start(lambda: source.pipe(table_diffs("Balance", schema=SCHEMA)))
    assert [t for t, _ in emitted(balances.messages)] == [210]
    assert emitted(balances.messages)[0][1].inserts == (balance(2**70, 1),)


def test_overlapping_queries_are_reference_counted() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, player(1), player(2))),
        on_next(220, sub_applied(2, player(1))),  # another query holding row 1: no second insert
        on_next(230, unsub_applied(1, player(1), player(2))),  # row 1 still held by query 2
        on_next(240, unsub_applied(2, player(1))),
    )
    result = scheduler.start(lambda: source.pipe(table_diffs("Player", schema=SCHEMA)))
    assert [(t, changes(d)) for t, d in emitted(result.messages)] == [
        (210, ("subscribe", (player(1), player(2)), (), ())),
        (230, ("unsubscribe", (), (player(2),), ())),
        (240, ("unsubscribe", (), (player(1),), ())),
    ]


def test_reconnect_emits_only_the_net_diff() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(205, identity_token()),
        on_next(210, sub_applied(1, player(1), player(2, "b", 2), player(3))),
        on_next(300, identity_token(OTHER_CONNECTION)),  # reconnected: the same query id re-sent
        # While away 2 changed, 3 was deleted and 4 added.
        on_next(310, sub_applied(1, player(1), player(2, "b", 22), player(4))),
    )
    result = scheduler.start(lambda: source.pipe(table_diffs("Player", schema=SCHEMA)))
    assert [(t, changes(d)) for t, d in emitted(result.messages)] == [
        (210, ("subscribe", (player(1), player(2, "b", 2), player(3)), (), ())),
        (310, ("resync", (player(4),), (player(3),), ((player(2, "b", 2), player(2, "b", 22)),))),
    ]


def test_table_without_primary_key_and_multi_fragments() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, multi_applied(1, snapshot_update(log_line("x")), snapshot_update(log_line("x")))),
        on_next(220, light(tx_table("LogLine", delta((log_line("x"),))))),
        on_next(230, light(tx_table("LogLine", delta((log_line("x"),))))),
    )
    result = scheduler.start(lambda: source.pipe(table_diffs("LogLine", schema=SCHEMA)))
    # Held twice (two fragments): only the second delete removes it.
    assert [(t, changes(d)) for t, d in emitted(result.messages)] == [
        (210, ("subscribe", (log_line("x"),), (), ())),
        (230, ("transaction", (), (log_line("x"),), ())),
    ]


@dataclass(frozen=True)
class MyBalance:
    account: int
    owner: Identity
    amount: int


class MyLogLine(NamedTuple):
    text: str
    level: int


def test_user_row_types_receive_the_rows() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, balance(2**100, 5), table="Balance")),
        on_next(220, light(tx_table("Balance", delta((balance(2**100, 5),), (balance(2**100, 6),))))),
    )
    result = scheduler.start(lambda: source.pipe(table_diffs("Balance", schema=SCHEMA, row_type=MyBalance)))
    first, second = (d for _, d in emitted(result.messages))
    assert first.inserts == (MyBalance(2**100, balance(0, 0).owner, 5),)
    assert second.updates == ((MyBalance(2**100, balance(0, 0).owner, 5),
                               MyBalance(2**100, balance(0, 0).owner, 6)),)

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, log_line("x", 3), table="LogLine")))
    result = scheduler.start(lambda: source.pipe(table_diffs("LogLine", schema=SCHEMA, row_type=MyLogLine)))
    assert emitted(result.messages)[0][1].inserts == (MyLogLine("x", 3),)


def test_wrong_names_fail_early_and_clearly() -> None:
    with pytest.raises(SchemaError, match="unknown table 'Players'"):
        table_diffs("Players", schema=SCHEMA)
    with pytest.raises(SchemaError, match=r"fields \['text', 'level'\].*columns \['account'"):
        table_diffs("Balance", schema=SCHEMA, row_type=MyLogLine)


def test_schema_provider_errors_on_the_stream_and_a_missing_schema_at_subscribe_time() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, player(1))))
    result = scheduler.start(lambda: source.pipe(table_diffs("Players", schema=lambda: SCHEMA)))
    assert len(result.messages) == 1 and isinstance(result.messages[0].value.exception, SchemaError)

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, player(1))))
    result = scheduler.start(lambda: source.pipe(table_diffs("Player")))
    assert result.messages[0].time == 200  # subscribed: no connection behind it, nothing to decode with
    error = result.messages[0].value.exception
    assert isinstance(error, TypeError) and "pass schema=" in str(error)


def test_diffs_of_a_shared_cache_pass_through() -> None:
    cache = ClientCache(SCHEMA)
    gone = light(tx_table("Player", delta((player(1),))))
    folded = [cache.apply(sub_applied(1, player(1))), cache.apply(gone)]
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, folded[0]), on_next(220, folded[1]))
    result = scheduler.start(lambda: source.pipe(table_diffs("Player", schema=SCHEMA)))
    assert [changes(d) for _, d in emitted(result.messages)] == [
        ("subscribe", (player(1),), (), ()), ("transaction", (), (player(1),), ())]


def test_each_subscription_folds_its_own_cache() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, player(1))), on_next(220, light(tx_table("Player", delta((player(1),))))))
    diffs = source.pipe(table_diffs("Player", schema=SCHEMA))
    seen: list[list[object]] = [[], []]
    diffs.subscribe(lambda d: seen[0].append(changes(d)))
    diffs.subscribe(lambda d: seen[1].append(changes(d)))
    scheduler.start()
    assert seen[0] == seen[1] == [("subscribe", (player(1),), (), ()), ("transaction", (), (player(1),), ())]


def test_rows_of_a_schema_row_class_that_is_not_a_dataclass_convert_by_column_name() -> None:
    class Plain:
        def __init__(self, text: str, level: int) -> None:
            self.text, self.level = text, level

    from rx_spacetimedb.protocol import ModuleSchema

    schema = ModuleSchema.from_json(SCHEMA.to_json(), row_classes={"LogLine": Plain})
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, log_line("x", 4), table="LogLine")))
    result = scheduler.start(lambda: source.pipe(table_diffs("LogLine", schema=schema, row_type=MyLogLine)))
    assert emitted(result.messages)[0][1].inserts == (MyLogLine("x", 4),)
