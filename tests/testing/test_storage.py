"""The data directory: signing key kept, commits durable before anyone hears of them, replay, torn tails."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

import rx_spacetimedb
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.types import STRING, U64
from rx_spacetimedb.testing import (
    Column,
    Module,
    ReducerContext,
    ReducerError,
    SpacetimeDBEmulator,
    TokenError,
    _storage,
    example_module,
)
from tests.conftest import WAIT, wait_for


def names(server: SpacetimeDBEmulator) -> list[tuple[int, str, int]]:
    return [(p.id, p.name, p.score) for p in server.table_rows("Player")]


def seeded_module(inits: list[int]) -> Module:
    """The example module with an init reducer that seeds one note (and counts its runs)."""
    module = example_module()

    @module.init
    def init(ctx: ReducerContext) -> None:
        inits.append(1)
        ctx.db["Note"].insert({"author": "init", "text": "seeded"})

    return module


def test_rows_updates_deletes_and_sequences_survive_a_new_emulator(tmp_path: Path) -> None:
    with SpacetimeDBEmulator(data_dir=tmp_path) as first:
        assert first.recovery is not None and first.recovery.new
        for name in ("alice", "bob", "carol"):
            first.call_reducer("CreatePlayer", [name])
        first.call_reducer("SetScore", [1, 42])  # an update keeps its place in the table
        first.call_reducer("DeletePlayer", [3])  # the highest id is gone: it must not come back
        first.call_reducer("Deposit", ["rich", 2**100])
        before = names(first)
    with SpacetimeDBEmulator(data_dir=tmp_path) as second:
        assert second.recovery is not None
        assert (second.recovery.new, second.recovery.commits, second.recovery.ignored_bytes) == (False, 7, 0)
        assert names(second) == before == [(1, "alice", 42), (2, "bob", 0)]
        assert second.table_rows("Account")[0].balance == 2**100
        second.call_reducer("CreatePlayer", ["dave"])
        assert names(second)[-1] == (4, "dave", 0)  # the counter survived too


def test_init_runs_only_when_the_data_dir_is_new(tmp_path: Path) -> None:
    inits: list[int] = []
    with SpacetimeDBEmulator(seeded_module(inits), data_dir=tmp_path):
        pass
    with SpacetimeDBEmulator(seeded_module(inits), data_dir=tmp_path) as again:
        assert [n.text for n in again.table_rows("Note")] == ["seeded"]
    assert inits == [1]
    with SpacetimeDBEmulator(seeded_module(inits)) as in_memory:  # no data dir: init every time
        assert [n.text for n in in_memory.table_rows("Note")] == ["seeded"]
    assert inits == [1, 1]


def test_a_new_data_dir_without_init_reducer_is_still_not_new_after(tmp_path: Path) -> None:
    SpacetimeDBEmulator(data_dir=tmp_path).start().stop()
    with SpacetimeDBEmulator(data_dir=tmp_path) as again:
        assert again.recovery is not None and not again.recovery.new


def test_the_signing_key_is_made_once_so_saved_tokens_stay_valid(tmp_path: Path) -> None:
    with SpacetimeDBEmulator(data_dir=tmp_path / "a") as first:
        identity, token = first.mint_token()
        owner_token = first.owner_token
    key = (tmp_path / "a" / "signing-key").read_text()
    with SpacetimeDBEmulator(data_dir=tmp_path / "a") as second:
        assert (tmp_path / "a" / "signing-key").read_text() == key
        assert second.tokens.validate(token).identity == identity
        assert second.owner_token == owner_token
        conn = rx_spacetimedb.connect(second.url, second.database, token=token, reconnect=False)
        with conn:
            assert conn.wait_connected(timeout=WAIT).identity == identity
    with (
        SpacetimeDBEmulator(data_dir=tmp_path / "b") as other,
        pytest.raises(TokenError, match="InvalidSignature"),
    ):
        other.tokens.validate(token)


def test_a_damaged_signing_key_is_refused_with_its_path(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "signing-key").write_text("not hex")
    with pytest.raises(ValueError, match="signing-key does not hold a signing key"):
        SpacetimeDBEmulator(data_dir=tmp_path)


def test_every_commit_is_on_disk_before_any_client_hears_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    append = _storage.CommitLog.append

    def spy_append(self: _storage.CommitLog, record: Any) -> None:
        append(self, record)
        events.append(f"durable {self.path.stat().st_size}")

    monkeypatch.setattr(_storage.CommitLog, "append", spy_append)
    with SpacetimeDBEmulator(data_dir=tmp_path) as server:
        enqueue = server._enqueue

        def spy_enqueue(client: Any, frame: Any) -> None:
            if isinstance(frame, str) and "TransactionUpdate" in frame:
                events.append("sent")
            enqueue(client, frame)

        monkeypatch.setattr(server, "_enqueue", spy_enqueue)
        events.clear()
        with rx_spacetimedb.connect(server.url, server.database, reconnect=False) as conn:
            conn.subscribe_single("SELECT * FROM Player").result(timeout=WAIT)
            conn.call_reducer("CreatePlayer", ["alice"]).result(timeout=WAIT)
    assert [e.split()[0] for e in events] == ["durable", "sent"]


def test_a_commit_the_disk_refuses_is_rolled_back_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: _storage.CommitLog, record: Any) -> None:
        raise OSError(28, "No space left on device")

    with SpacetimeDBEmulator(data_dir=tmp_path) as server:
        monkeypatch.setattr(_storage.CommitLog, "append", full)
        with (
            rx_spacetimedb.connect(server.url, server.database, reconnect=False) as conn,
            pytest.raises(rx_spacetimedb.ReducerFailed, match="No space left on device"),
        ):
            conn.call_reducer("CreatePlayer", ["alice"]).result(timeout=WAIT)
        with pytest.raises(ReducerError, match="could not be written to the data directory"):
            server.call_reducer("CreatePlayer", ["bob"])
        assert server.table_rows("Player") == []


def test_a_stopped_emulator_refuses_writes_to_its_data_dir(tmp_path: Path) -> None:
    server = SpacetimeDBEmulator(data_dir=tmp_path).start()
    server.stop()
    with pytest.raises(ReducerError, match="the emulator is stopped; start it again"):
        server.call_reducer("CreatePlayer", ["alice"])
    server.start()
    server.call_reducer("CreatePlayer", ["alice"])
    server.stop()
    with SpacetimeDBEmulator(data_dir=tmp_path) as again:
        assert names(again) == [(1, "alice", 0)]


def write_three(path: Path) -> int:
    """Three commits (plus the header record); the log's size with the first two only."""
    with SpacetimeDBEmulator(data_dir=path) as server:
        server.call_reducer("CreatePlayer", ["alice"])
        server.call_reducer("CreatePlayer", ["bob"])
        size = (path / "commitlog").stat().st_size
        server.call_reducer("CreatePlayer", ["carol"])
    return size


@pytest.mark.parametrize("damage", ["cut", "flip", "garbage"])
def test_a_torn_last_record_is_ignored_and_reported_never_fatal(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_three(tmp_path)
    log_file = tmp_path / "commitlog"
    data = log_file.read_bytes()
    if damage == "cut":  # a crash in the middle of writing the last record
        data = data[:-5]
    elif damage == "flip":  # its bytes reached the disk only in part
        data = data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:]
    else:  # a length prefix and nothing else
        data = data + b"\x00\x00\x01"
        good = len(data) - 3
    log_file.write_bytes(data)
    with (
        caplog.at_level(logging.WARNING, logger="rx_spacetimedb.testing"),
        SpacetimeDBEmulator(data_dir=tmp_path) as server,
    ):
        assert server.recovery is not None
        assert server.recovery.ignored_bytes == len(data) - good
        expected = ["alice", "bob"] if damage != "garbage" else ["alice", "bob", "carol"]
        assert [p.name for p in server.table_rows("Player")] == expected
        server.call_reducer("CreatePlayer", ["dave"])  # appends after the cut, not after the junk
    assert "ignored a torn or corrupt last record" in caplog.text
    with SpacetimeDBEmulator(data_dir=tmp_path) as again:
        assert again.recovery is not None and again.recovery.ignored_bytes == 0
        assert [p.name for p in again.table_rows("Player")] == [*expected, "dave"]


def test_a_log_torn_while_it_was_created_is_a_new_data_dir(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "commitlog").write_bytes(_storage.MAGIC[:7])
    with SpacetimeDBEmulator(data_dir=tmp_path) as server:
        assert server.recovery is not None
        assert (server.recovery.new, server.recovery.ignored_bytes) == (True, 7)


def test_a_data_dir_that_is_a_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"data_dir='.*file' is a file; give a directory"):
        SpacetimeDBEmulator(data_dir=tmp_path / "file")


def test_a_file_that_is_not_a_commit_log_is_refused(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "commitlog").write_bytes(b"something else entirely, longer than the magic")
    with pytest.raises(ValueError, match="is not an rx_spacetimedb emulator commit log"):
        SpacetimeDBEmulator(data_dir=tmp_path)


def test_a_data_dir_serves_one_database_and_one_schema(tmp_path: Path) -> None:
    SpacetimeDBEmulator(data_dir=tmp_path).start().stop()
    with pytest.raises(ValueError, match="not database 'other'"):
        SpacetimeDBEmulator(database="other", data_dir=tmp_path)
    changed = Module("quickstart")
    changed.table("Player", [Column("id", U64, primary_key=True), Column("name", STRING)])
    with pytest.raises(ValueError, match="with this schema; use another data_dir"):
        SpacetimeDBEmulator(changed, data_dir=tmp_path)


def test_two_emulators_never_share_a_data_dir(tmp_path: Path) -> None:
    with (
        SpacetimeDBEmulator(data_dir=tmp_path),
        pytest.raises(RuntimeError, match="in use by another emulator"),
    ):
        SpacetimeDBEmulator(data_dir=tmp_path)


def test_restart_keeps_port_and_data_and_the_client_its_identity(tmp_path: Path) -> None:
    with SpacetimeDBEmulator(data_dir=tmp_path) as server:
        port = server.port
        conn = rx_spacetimedb.connect(
            server.url, server.database, credentials=tmp_path / "token", reconnect_delay=0.02
        )
        with conn:
            first = conn.wait_connected(timeout=WAIT)
            identity = first.identity
            conn.subscribe_single("SELECT * FROM Player").result(timeout=WAIT)
            conn.call_reducer("CreatePlayer", ["alice"]).result(timeout=WAIT)
            server.restart()
            assert server.port == port
            assert server.recovery is not None and server.recovery.commits == 2
            # A call made before the client noticed the drop would go out on the dead socket and
            # fail with RequestAborted, as documented: wait for the new socket first.
            wait_for(conn.identity, lambda token: token.connection_id != first.connection_id)
            update = conn.call_reducer("CreatePlayer", ["bob"]).result(timeout=WAIT)
            assert isinstance(update.status, m.Committed)
            assert conn.identity_token is not None and conn.identity_token.identity == identity
            assert [p.name for p in conn.cache.rows("Player")] == ["alice", "bob"]


def test_restart_in_memory_keeps_the_rows(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["alice"])
    port = server.port
    server.restart()
    assert server.port == port and server.recovery is None
    assert [p.name for p in server.table_rows("Player")] == ["alice"]


def test_restart_async_on_the_running_loop(tmp_path: Path) -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(data_dir=tmp_path) as server:
            server.call_reducer("CreatePlayer", ["alice"])
            port = server.port
            await server.restart_async()
            assert server.port == port
            assert [p.name for p in server.table_rows("Player")] == ["alice"]
            with pytest.raises(RuntimeError, match="await restart_async"):
                server.restart()

    asyncio.run(body())


def test_replayed_rows_equal_the_rows_before(tmp_path: Path) -> None:
    with SpacetimeDBEmulator(data_dir=tmp_path) as server:
        server.call_reducer("CreatePlayer", ["alice"])
        server.with_tx(lambda ctx: ctx.db["Note"].insert({"author": "x", "text": "é ☃ \u0000"}))
        before = [dataclasses.astuple(r) for r in server.table_rows("Note")]
    with SpacetimeDBEmulator(data_dir=tmp_path) as server:
        assert [dataclasses.astuple(r) for r in server.table_rows("Note")] == before


def test_a_failed_init_leaves_the_data_dir_new(tmp_path: Path) -> None:
    module = example_module()
    runs: list[int] = []

    @module.init
    def init(ctx: ReducerContext) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ReducerError("not yet")

    with pytest.raises(ReducerError, match="init reducer failed"):
        SpacetimeDBEmulator(module, data_dir=tmp_path)
    with SpacetimeDBEmulator(module, data_dir=tmp_path) as server:
        assert server.recovery is not None and server.recovery.new
    assert runs == [1, 1]
