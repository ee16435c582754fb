"""The design card's spelling on a live connection: ``conn.messages.pipe(table_diffs("Player"))``.

Each operator of ``rx_spacetimedb.operators`` on a connection's stream needs no schema and gives
exactly what the connection's own method gives, whenever it is subscribed: early, late, behind
other operators, across a reconnect.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import EventLoopScheduler

from rx_spacetimedb.cache import TableDiff, TransactionDiff
from rx_spacetimedb.connection import Connection
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.operators import (
    ReducerResult,
    cache_diffs,
    live_table,
    reducer_results,
    table_diffs,
    transactions,
)
from rx_spacetimedb.testing import SpacetimeDBEmulator
from tests.conftest import WAIT, wait_for
from tests.test_connection import open_conn


def rows(diff: TableDiff[Any]) -> tuple[Any, ...]:
    return (diff.cause, diff.inserts, diff.deletes, diff.updates)


def tx_rows(diff: TransactionDiff) -> tuple[Any, ...]:
    return (diff.cause, tuple((t.table, rows(t)) for t in diff))


def result_of(r: ReducerResult) -> tuple[Any, ...]:
    return (r.reducer, r.args, r.status, r.error, r.caller_connection_id)


class Pair:
    """The card's spelling and the connection's own method, subscribed at the same moment."""

    def __init__(self, card: reactivex.Observable[Any], own: reactivex.Observable[Any],
                 shape: Any = rows) -> None:
        self.card: list[Any] = []
        self.own: list[Any] = []
        self.errors: list[Exception] = []
        card.subscribe(lambda v: self.card.append(shape(v)), self.errors.append)
        own.subscribe(lambda v: self.own.append(shape(v)), self.errors.append)

    def check(self) -> None:
        assert self.errors == []
        assert self.card == self.own


def reconnect_with_a_change_while_away(server: SpacetimeDBEmulator, conn: Connection) -> None:
    """Drop the socket, delete a row meanwhile, wait until the cache has resynced."""
    before = conn.wait_connected(WAIT).connection_id
    server.drop_all()
    server.call_reducer("DeletePlayer", [2])
    wait_for(conn.identity, lambda t: t.connection_id != before)
    wait_for(conn.states, lambda s: s.status == "connected")
    conn.call_reducer("SetScore", [1, 5]).result(WAIT)  # answered after the resubscription's snapshot


def test_table_diffs_early_late_behind_operators_and_across_a_reconnect(
        server: SpacetimeDBEmulator, caplog: pytest.LogCaptureFixture) -> None:
    server.call_reducer("CreatePlayer", ["ann"])  # a row there before we connect
    caplog.set_level(logging.WARNING)
    with open_conn(server) as conn:
        early = Pair(conn.messages.pipe(table_diffs("Player")), conn.table_diffs("Player"))
        passed = Pair(conn.messages.pipe(ops.filter(lambda _: True), ops.skip(0), ops.take(10_000),
                                         table_diffs("Player")), conn.table_diffs("Player"))
        conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        conn.subscribe_multi(["SELECT * FROM Player WHERE score >= 0"]).result(WAIT)  # overlapping
        conn.call_reducer("CreatePlayer", ["bob"]).result(WAIT)
        late = Pair(conn.messages.pipe(table_diffs("Player")), conn.table_diffs("Player"))
        shared = Pair(conn.messages.pipe(ops.share(), table_diffs("Player")), conn.table_diffs("Player"))
        conn.call_reducer("SetScore", [1, 50]).result(WAIT)
        reconnect_with_a_change_while_away(server, conn)
        conn.call_reducer("DeletePlayer", [1]).result(WAIT)
    for pair in (early, passed, late, shared):
        pair.check()
    assert [d[0] for d in early.card][:1] == ["subscribe"]
    # Late: the SetScore of a row subscribed before is an update, not an insert.
    assert late.card[0][0] == "transaction" and len(late.card[0][3]) == 1
    assert late.card[0][3][0][1].score == 50
    # Overlapping queries hold ann twice: one delete comes out, once, at the end.
    assert late.card[-1][2][0].name == "ann" and sum(len(d[2]) for d in late.card) == 2  # bob, ann
    assert any(d[0] == "resync" and d[2][0].name == "bob" for d in late.card)
    assert "occurrence" not in caplog.text  # no "delete of 1 occurrence(s) ... cache holds 0"


def test_behind_observe_on_a_late_table_diffs_and_live_table_equal_the_connection(
        server: SpacetimeDBEmulator) -> None:
    scheduler = EventLoopScheduler()
    try:
        with open_conn(server) as conn:
            conn.subscribe_single("SELECT * FROM Player").result(WAIT)
            conn.call_reducer("CreatePlayer", ["ann"]).result(WAIT)
            hop = Pair(conn.messages.pipe(ops.observe_on(scheduler), table_diffs("Player")),
                       conn.table_diffs("Player"))
            table = conn.messages.pipe(ops.observe_on(scheduler), live_table("Player"))
            for score in range(1, 6):
                conn.call_reducer("SetScore", [1, score]).result(WAIT)
            conn.call_reducer("CreatePlayer", ["bob"]).result(WAIT)
            flushed = threading.Event()
            scheduler.schedule(lambda *_: flushed.set())  # after every item queued before it
            assert flushed.wait(WAIT)
            hop.check()
            assert len(hop.card) == 6 and all(len(d[3]) == 1 for d in hop.card[:5])
            assert table.rows() == conn.table("Player").rows()
            assert [p.score for p in table.rows()] == [5, 0]
    finally:
        scheduler.dispose()


def test_reducer_results_transactions_and_cache_diffs_equal_the_connection(
        server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)  # subscribed late: own=True must still know our connection id
        mine = Pair(conn.messages.pipe(reducer_results(own=True)), conn.reducer_results(own=True),
                    result_of)
        every = Pair(conn.messages.pipe(reducer_results("CreatePlayer")),
                     conn.reducer_results("CreatePlayer"), result_of)
        txs = Pair(conn.messages.pipe(transactions()), conn.transactions(), tx_rows)
        changes = Pair(conn.messages.pipe(cache_diffs()), conn.diffs.pipe(ops.filter(bool)), tx_rows)
        conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        server.call_reducer("CreatePlayer", ["zed"])  # not ours
        conn.call_reducer("CreatePlayer", ["ann"]).result(WAIT)
        with pytest.raises(Exception, match="already taken"):
            conn.call_reducer("CreatePlayer", ["ann"]).result(WAIT)
        conn.call_reducer("SetScore", {"id": 2, "score": 7}).result(WAIT)
    for pair in (mine, every, txs, changes):
        pair.check()
    assert [(r[0], r[2]) for r in mine.card] == [
        ("CreatePlayer", "committed"), ("CreatePlayer", "failed"), ("SetScore", "committed")]
    assert mine.card[0][1].name == "ann" and mine.card[2][1].score == 7  # arguments decoded
    assert [r[1].name for r in every.card] == ["zed", "ann", "ann"]
    assert len(txs.card) == 3  # zed, ann, SetScore: the failed call is no transaction
    assert [c[0] for c in changes.card] == ["transaction"] * 3  # the empty snapshot changed nothing


def test_a_live_table_subscribed_late_starts_from_the_cached_rows(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        for name in ("ann", "bob"):
            conn.call_reducer("CreatePlayer", [name]).result(WAIT)
        table = conn.messages.pipe(live_table("Player"))
        updates: list[Any] = []
        table.updates.subscribe(updates.append)
        assert table.rows() == conn.table("Player").rows() and len(table.rows()) == 2
        conn.call_reducer("SetScore", [2, 9]).result(WAIT)
        assert [(old.score, new.score) for old, new in updates] == [(0, 9)]
        assert table.rows() == conn.table("Player").rows()


def test_wrong_names_fail_at_subscribe_time_on_a_connection_that_knows_its_schema(
        server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)
        for operator in (table_diffs("Players"), reducer_results("SetScores")):
            errors: list[Exception] = []
            conn.messages.pipe(operator).subscribe(on_error=errors.append)
            assert isinstance(errors[0], SchemaError) and "unknown" in str(errors[0])
        with pytest.raises(SchemaError, match="unknown table 'Players'"):
            conn.table("Players")


@pytest.mark.parametrize("operator", [
    table_diffs("Player"), transactions(), cache_diffs(), reducer_results(),
], ids=["table_diffs", "transactions", "cache_diffs", "reducer_results"])
def test_a_stream_without_connection_or_schema_fails_at_subscribe_time(operator: Any) -> None:
    errors: list[Exception] = []
    reactivex.never().pipe(operator).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], TypeError)
    assert "pass schema=" in str(errors[0])


def test_behind_a_share_it_needs_to_be_the_first_subscriber_and_says_so(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        shared = conn.messages.pipe(ops.share())
        shared.subscribe(lambda _: None)
        errors: list[Exception] = []
        shared.pipe(table_diffs("Player")).subscribe(on_error=errors.append)
        assert isinstance(errors[0], TypeError) and "before share()" in str(errors[0])
