"""Tests of ``LiveTable``: replayed snapshots, change streams, lookups, resync without a flash."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.operators import LiveTable, live_table
from tests.operators._canned import (
    OTHER_CONNECTION,
    SCHEMA,
    committed,
    delta,
    identity_token,
    light,
    log_line,
    player,
    sub_applied,
    tx_table,
)

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed

A, B, B2, C = player(1, "a", 1), player(2, "b", 2), player(2, "b", 20), player(3, "c", 3)


def record(stream: Any) -> list[Any]:
    seen: list[Any] = []
    stream.subscribe(seen.append)
    return seen


def test_marble_diagram_of_the_docstring() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, A, B)),
        on_next(220, committed(tx_table("Player", delta((B,), (B2,))))),
        on_next(230, light(tx_table("Player", delta((A,))))),
        on_completed(240),
    )
    table = source.pipe(live_table("Player", schema=SCHEMA))
    snapshots, inserts, updates, deletes = (record(s) for s in (table.snapshots, table.inserts,
                                                                 table.updates, table.deletes))
    assert snapshots == [()]  # the current (empty) state, replayed at once
    scheduler.start()
    assert snapshots == [(), (A, B), (A, B2), (B2,)]
    assert (inserts, updates, deletes) == ([A, B], [(B, B2)], [A])
    assert table.rows() == (B2,) and table.get(2) == B2 and table.get(1) is None
    assert len(table) == 1 and list(table) == [B2]


def test_late_subscriber_gets_the_latest_snapshot_only() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, A)), on_next(220, light(tx_table("Player", delta((), (C,))))))
    table = source.pipe(live_table("Player", schema=SCHEMA))
    scheduler.start()
    assert record(table.snapshots) == [(A, C)]
    assert record(table.inserts) == []  # change streams are hot: nothing replayed


def test_reconnect_changes_only_what_changed_without_an_empty_snapshot() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(205, identity_token()),
        on_next(210, sub_applied(1, A, B, C)),
        on_next(300, identity_token(OTHER_CONNECTION)),
        on_next(310, sub_applied(1, A, B2)),
    )
    table = source.pipe(live_table("Player", schema=SCHEMA))
    snapshots, deletes, updates = record(table.snapshots), record(table.deletes), record(table.updates)
    scheduler.start()
    assert snapshots == [(), (A, B, C), (A, B2)]  # never () in between
    assert deletes == [C] and updates == [(B, B2)]


def test_table_without_primary_key_is_keyed_by_row() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, log_line("x"), log_line("y"), table="LogLine")),
        on_next(220, light(tx_table("LogLine", delta((log_line("x"),))))))
    table = source.pipe(live_table("LogLine", schema=SCHEMA))
    scheduler.start()
    assert table.rows() == (log_line("y"),)
    assert table.get(log_line("y")) == log_line("y")


class Row(NamedTuple):
    text: str
    level: int


def test_user_row_type() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, log_line("x", 2), table="LogLine")))
    table = source.pipe(live_table("LogLine", schema=SCHEMA, row_type=Row))
    scheduler.start()
    assert table.rows() == (Row("x", 2),)


def test_a_failing_observer_does_not_starve_the_others(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, A, B)))
    table = source.pipe(live_table("Player", schema=SCHEMA))

    def explode(_: Any) -> None:
        raise RuntimeError("user bug")

    table.inserts.subscribe(explode)
    seen = record(table.inserts)
    with caplog.at_level(logging.ERROR):
        scheduler.start()
    assert seen == [A, B]
    assert table.rows() == (A, B)
    assert "user bug" in caplog.text


def test_errors_and_completion_reach_every_stream_and_dispose_stops_following() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("socket gone")
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, A)), on_error(220, boom))
    table = source.pipe(live_table("Player", schema=SCHEMA))
    errors: list[Exception] = []
    table.deletes.subscribe(on_error=errors.append)
    table.snapshots.subscribe(on_error=errors.append)
    scheduler.start()
    assert errors == [boom, boom]
    assert table.rows() == (A,)  # the last state stays readable

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, sub_applied(1, A)), on_next(220, light(tx_table("Player", delta((), (C,))))))
    with LiveTable(source, "Player", schema=SCHEMA) as live:
        assert "not connected" not in repr(live)
        scheduler.advance_to(215)
        assert live.rows() == (A,)
    scheduler.advance_to(230)
    assert live.rows() == (A,)  # disposed before the insert of C
    assert repr(live) == "<LiveTable 'Player' rows=1 disposed>"


def test_connect_is_idempotent_and_repr_says_the_state() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, sub_applied(1, A)))
    live: LiveTable[Any] = LiveTable(source, "Player", schema=SCHEMA)
    assert repr(live) == "<LiveTable 'Player' rows=0 not connected>"
    assert live.connect() is live.connect()
    inserts = record(live.inserts)
    scheduler.start()
    assert inserts == [A]  # one fold: connecting twice did not subscribe twice
    assert repr(live) == "<LiveTable 'Player' rows=1 connected>"


class Stamping:
    """What a Connection does on its I/O thread, without a socket: fold, stamp, emit."""

    def __init__(self) -> None:
        from rx_spacetimedb.cache import ClientCache
        from rx_spacetimedb.delivery import MessageSubject

        self.schema = SCHEMA
        self.cache = ClientCache(SCHEMA)
        self.messages: Any = MessageSubject(self, lambda err: None)

    def fold(self, message: Any) -> Any:
        from rx_spacetimedb.delivery import deliver

        diff = self.cache.apply(message, name_message=False)
        deliver(message, SCHEMA, (diff,), None, self.cache.version)
        return message

    def feed(self, message: Any) -> None:
        self.messages.on_next(self.fold(message))


def test_a_late_live_table_on_a_connection_starts_from_its_cached_rows() -> None:
    conn = Stamping()
    conn.feed(sub_applied(1, A, B))
    live = conn.messages.pipe(live_table("Player"))  # no schema: the connection has it
    snapshots = record(live.snapshots)
    assert snapshots == [(A, B)]
    conn.feed(light(tx_table("Player", delta((B,), (B2,)))))
    assert snapshots == [(A, B), (A, B2)] and live.get(2) == B2


def test_diffs_the_seed_already_holds_are_skipped_however_late_they_arrive() -> None:
    conn = Stamping()
    conn.feed(sub_applied(1, A, B))
    # Folded by the connection but still queued (e.g. behind an observe_on) when the table starts.
    queued = conn.fold(light(tx_table("Player", delta((A,)))))
    live = conn.messages.pipe(live_table("Player"))
    deletes = record(live.deletes)
    assert live.rows() == (B,)
    conn.messages.on_next(queued)
    assert deletes == [] and live.rows() == (B,)  # not deleted twice, nothing resurrected
    conn.feed(light(tx_table("Player", delta((), (A,)))))
    assert live.rows() == (B, A)


def test_a_live_table_on_a_stream_without_connection_or_schema_errors_at_once() -> None:
    import reactivex

    live = reactivex.never().pipe(live_table("Player"))
    errors: list[Exception] = []
    live.snapshots.subscribe(on_error=errors.append)
    assert isinstance(errors[0], TypeError) and "schema=" in str(errors[0])


def test_snapshots_replay_the_final_rows_after_the_source_completed() -> None:
    import reactivex

    table = reactivex.from_iterable([sub_applied(1, A, B)]).pipe(live_table("Player", schema=SCHEMA))
    seen: list[Any] = []
    done: list[bool] = []
    table.snapshots.subscribe(seen.append, on_completed=lambda: done.append(True))
    assert seen == [(A, B)] and done == [True]




def test_a_row_type_may_read_the_live_table_it_builds_rows_for() -> None:
    """User code (a row_type's constructor) never runs under the table's lock: no deadlock."""
    import dataclasses
    import threading

    tables: list[LiveTable[Any]] = []
    seen: list[int] = []

    @dataclasses.dataclass(frozen=True)
    class Looking:
        id: int
        identity: Any
        name: str
        score: int
        created_at: Any
        location: Any

        def __post_init__(self) -> None:
            if tables:
                seen.append(len(tables[0].rows()))  # takes the table's lock

    conn = Stamping()
    conn.feed(sub_applied(1, A))

    def run() -> None:
        tables.append(conn.messages.pipe(live_table("Player", row_type=Looking)))
        conn.feed(light(tx_table("Player", delta((), (B,)))))  # converted while the table exists

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "deadlocked: the row type ran under the table's lock"
    assert [r.name for r in tables[0].rows()] == ["a", "b"] and seen
