"""Soak: forced disconnects of every kind while rows keep changing; nothing lost, nothing duplicated.

One client under test subscribes to ``Player`` (twice, overlapping: every player, and the players
with a high score) and ``Note`` (no primary key). A second client and the server itself keep
creating, updating and deleting rows while the emulator cuts the connections over and over: TCP
drops without a Close frame, Close 1001/1011/1013, and refused reconnects (HTTP 503). At the end:

* the client's live tables and its cache hold exactly the server's rows, each row once, with the
  reference count the overlapping queries call for;
* the stream of diffs (``conn.diffs`` for every table, ``conn.table_diffs("Player")``), replayed
  over the empty initial state, gives the same rows, and never deletes a row it does not hold nor
  inserts one it already holds.

The short run is part of the regular suite; the 1,000-disconnect run is marked ``slow``
(``pytest --runslow tests/test_soak.py``) and prints how long it took.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import rx_spacetimedb
from rx_spacetimedb import ConnectionState, HandshakeError, SpacetimeDBError
from rx_spacetimedb.cache import TableDiff, TransactionDiff
from rx_spacetimedb.connection import Connection
from rx_spacetimedb.operators import LiveTable
from rx_spacetimedb.protocol.values import ConnectionId
from rx_spacetimedb.testing import ReducerError, SpacetimeDBEmulator
from tests.conftest import WAIT

HIGH_SCORE = 50
QUERIES = ("SELECT * FROM Player", "SELECT * FROM Note")
HIGH_QUERY = f"SELECT * FROM Player WHERE score > {HIGH_SCORE}"
FAULTS = ("drop", "close 1001", "close 1011", "close 1013", "refuse")
CLOSE_REASONS = {1001: "module exited", 1011: "internal error", 1013: "too many requests"}


def values(row: Any) -> tuple[Any, ...]:
    """A row's column values: client and server rows are different classes with the same fields."""
    return tuple(getattr(row, f.name) for f in dataclasses.fields(row))


class Watch:
    """Wait for a condition on the connection, re-checked after every message (no sleeps)."""

    def __init__(self, conn: Connection) -> None:
        self._changed = threading.Condition()
        conn.messages.subscribe(self._notify, lambda _: self._notify(None), lambda: self._notify(None))
        conn.states.subscribe(self._notify)

    def _notify(self, _: object) -> None:
        with self._changed:
            self._changed.notify_all()

    def until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError(f"{what}: not within {timeout} s")


class Replay:
    """Folds a diff stream over the initial (empty) state, refusing any loss or duplicate."""

    def __init__(self, keys: dict[str, Callable[[Any], Any]]) -> None:
        self.keys = keys
        self.rows: dict[str, dict[Any, tuple[Any, ...]]] = {name: {} for name in keys}
        self.problems: list[str] = []
        self.applied = 0

    def table(self, diff: TableDiff[Any]) -> None:
        rows, key_of = self.rows[diff.table], self.keys[diff.table]
        for row in diff.deletes:
            key = key_of(row)
            if rows.pop(key, None) != values(row):
                self.problems.append(f"{diff.cause}: deleted {row!r}, which was not held as such")
        for old, new in diff.updates:
            key = key_of(old)
            if rows.pop(key, None) != values(old):
                self.problems.append(f"{diff.cause}: updated {old!r}, which was not held as such")
            rows[key_of(new)] = values(new)
        for row in diff.inserts:
            key = key_of(row)
            if key in rows:
                self.problems.append(f"{diff.cause}: inserted {row!r} twice")
            rows[key] = values(row)
        self.applied += 1

    def transaction(self, diff: TransactionDiff) -> None:
        for table in diff:
            if table.table in self.rows:
                self.table(table)


def by_key(rows: Iterable[Any], key_of: Callable[[Any], Any]) -> dict[Any, tuple[Any, ...]]:
    result: dict[Any, tuple[Any, ...]] = {}
    for row in rows:
        key = key_of(row)
        assert key not in result, f"row {row!r} held twice"
        result[key] = values(row)
    return result


KEYS: dict[str, Callable[[Any], Any]] = {"Player": lambda row: row.id, "Note": values}


class Writer(threading.Thread):
    """Another client changing rows through reducers until told to stop (its calls may be cut)."""

    def __init__(self, server: SpacetimeDBEmulator, seed: int) -> None:
        super().__init__(name="soak-writer", daemon=True)
        self.server = server
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.calls = 0
        self.outcomes: dict[str, int] = {}
        self.unexpected: list[BaseException] = []
        self.conn = connect(server)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                name, args = mutation(self.server, self.rng, f"w{self.calls}")
                self.calls += 1
                try:
                    self.conn.call_reducer(name, args).result(WAIT)
                    outcome = "committed"
                except (rx_spacetimedb.RequestAborted, rx_spacetimedb.ReducerFailed) as err:
                    outcome = type(err).__name__  # cut off by a fault, or raced by the server side
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        except BaseException as err:  # surfaces in the test, never silently
            self.unexpected.append(err)
        finally:
            self.conn.close()


def mutation(server: SpacetimeDBEmulator, rng: random.Random, tag: str) -> tuple[str, list[Any]]:
    """A random change: create a player, set a score (crossing HIGH_SCORE both ways), delete, add a note."""
    players = server.table_rows("Player")
    roll = rng.random()
    if roll < 0.3 or len(players) < 5:
        return "CreatePlayer", [f"p-{tag}"]
    if roll < 0.75:
        return "SetScore", [rng.choice(players).id, rng.randrange(2 * HIGH_SCORE)]
    if roll < 0.9:
        return "DeletePlayer", [rng.choice(players).id]
    return "AddNote", [f"n-{tag}"]


def connect(server: SpacetimeDBEmulator, *, light: bool = False) -> Connection:
    return rx_spacetimedb.connect(server.url, server.database, reconnect_delay=0.001,
                                  max_reconnect_delay=0.02, light=light)


def inflict(server: SpacetimeDBEmulator, fault: str, rng: random.Random) -> None:
    if fault == "drop":
        server.drop_all()
    elif fault == "refuse":
        server.refuse_connections(rng.randint(2, 4))  # shared with the writer: enough for both
        server.drop_all()
    else:
        code = int(fault.split()[1])
        server.close_all(code, CLOSE_REASONS[code])


def reconnected(conn: Connection, before: ConnectionId, *, resynced: bool) -> Callable[[], bool]:
    def check() -> bool:
        return conn.connection_id != before and not (resynced and conn.cache.resyncing)

    return check


def soak(server: SpacetimeDBEmulator, disconnects: int, seed: int,
         mode: str = "multi+single") -> dict[str, Any]:
    """``mode``: ``multi+single`` (SubscribeMulti and an overlapping SubscribeSingle), ``light``
    (the same with ``TransactionUpdateLight`` for others' transactions), ``legacy`` (one Subscribe)."""
    rng = random.Random(seed)
    for i in range(12):
        server.call_reducer("CreatePlayer", [f"seed-{i}"])
        server.call_reducer("AddNote", [f"seed-note-{i}"])
    started = time.perf_counter()
    conn = connect(server, light=mode == "light")
    replay = Replay(KEYS)
    players_only = Replay({"Player": KEYS["Player"]})
    states: list[ConnectionState] = []
    conn.states.subscribe(states.append)
    conn.diffs.subscribe(replay.transaction)
    conn.table_diffs("Player").subscribe(players_only.table)
    watch = Watch(conn)
    if mode == "legacy":
        conn.subscribe([*QUERIES, HIGH_QUERY]).result(WAIT)
    else:
        conn.subscribe_multi(list(QUERIES)).result(WAIT)
        conn.subscribe_single(HIGH_QUERY).result(WAIT)
    live: dict[str, LiveTable[Any]] = {name: conn.table(name) for name in KEYS}
    writer = Writer(server, seed + 1)
    writer.start()
    try:
        for i in range(disconnects):
            before = conn.connection_id
            assert before is not None
            for n in range(rng.randint(0, 2)):  # the server side changes rows too
                name, args = mutation(server, rng, f"s{i}.{n}")
                with contextlib.suppress(ReducerError):  # raced by the writer (that player is gone)
                    server.call_reducer(name, args)
            inflict(server, FAULTS[i % len(FAULTS)], rng)
            # Every third time the next fault waits for the end of the resync; otherwise it may
            # land in the middle of it (snapshots half in), which is the harder case.
            watch.until(reconnected(conn, before, resynced=i % 3 == 2), f"reconnect after disconnect {i}")
    finally:
        writer.stop.set()
        writer.join(WAIT)
    assert not writer.is_alive() and not writer.unexpected, writer.unexpected

    expected = {name: by_key(server.table_rows(name), KEYS[name]) for name in KEYS}

    def settled() -> bool:
        return (conn.state.status == "connected" and not conn.cache.resyncing
                and all(by_key(live[name].rows(), KEYS[name]) == expected[name] for name in KEYS))

    watch.until(settled, "the live tables to equal the server's tables")
    elapsed = time.perf_counter() - started
    try:
        for name in KEYS:
            assert by_key(conn.cache.rows(name), KEYS[name]) == expected[name]
            assert replay.rows[name] == expected[name]
        assert players_only.rows["Player"] == expected["Player"]
        assert replay.problems == [] and players_only.problems == []
        for player in server.table_rows("Player"):  # the overlapping query counts a row twice
            held = 2 if player.score > HIGH_SCORE else 1
            assert conn.cache.ref_count("Player", player.id) == held, (mode, player)
        connected = [s for s in states if s.status == "connected"]
        assert len({s.connection_id for s in connected}) == disconnects + 1
        assert len({s.identity for s in connected}) == 1  # the same identity throughout
        codes = {s.close_code for s in states if s.status == "disconnected"}
        assert {1001, 1011, 1013} <= codes
        assert any(s.close_code == 1006 for s in states if s.status == "disconnected")  # the drops
        refused = [s for s in states if s.status == "reconnecting" and isinstance(s.error, HandshakeError)]
        assert refused and all(s.error.status == 503 for s in refused)  # type: ignore[union-attr]
        assert all(isinstance(s.error, SpacetimeDBError) for s in states if s.error is not None)
    finally:
        conn.close()
    return {
        "seconds": elapsed,
        "disconnects": disconnects,
        "diffs": replay.applied,
        "writer_calls": writer.calls,
        "writer_outcomes": writer.outcomes,
        "players": len(expected["Player"]),
        "notes": len(expected["Note"]),
        "refused": len(refused),
    }


@pytest.mark.parametrize("mode", ["multi+single", "light", "legacy"])
def test_soak_short(server: SpacetimeDBEmulator, mode: str) -> None:
    report = soak(server, disconnects=30, seed=7, mode=mode)
    assert report["diffs"] > 25


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_1000_disconnects(server: SpacetimeDBEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    report = soak(server, disconnects=1000, seed=1000)
    with capsys.disabled():
        print(f"\nsoak: {report}")


def test_soak_sees_a_transaction_diff_per_committed_change(server: SpacetimeDBEmulator) -> None:
    """Sanity check of the harness: without faults, every server change reaches the replay once."""
    conn = connect(server)
    replay = Replay(KEYS)
    conn.diffs.subscribe(replay.transaction)
    watch = Watch(conn)
    try:
        conn.subscribe_multi(list(QUERIES)).result(WAIT)
        for i in range(5):
            server.call_reducer("CreatePlayer", [f"x{i}"])
        expected = by_key(server.table_rows("Player"), KEYS["Player"])
        watch.until(lambda: replay.rows["Player"] == expected, "five inserts")
        assert replay.applied == 5 and replay.problems == []
        row: Any = conn.table("Player").rows()[0]
        replay.table(TableDiff("Player", inserts=(row,)))  # the same row again: flagged
        replay.table(TableDiff("Player", deletes=(row, row)))  # deleted twice: flagged
        assert len(replay.problems) == 2
    finally:
        conn.close()
