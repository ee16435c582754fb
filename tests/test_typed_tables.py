"""Typed rows end to end: tables without a primary key, u128 and Identity columns, user row types,
module refusals, and remembered credentials."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from reactivex.subject import ReplaySubject

import rx_spacetimedb
from rx_spacetimedb import ConnectionRejected, SchemaError
from rx_spacetimedb.protocol.values import Identity, Timestamp
from rx_spacetimedb.testing import ReducerContext, ReducerError, SpacetimeDBEmulator, example_module
from tests.conftest import WAIT, wait_for


def open_conn(server: SpacetimeDBEmulator, **options: Any) -> rx_spacetimedb.Connection:
    options.setdefault("reconnect_delay", 0.02)
    return rx_spacetimedb.connect(server.url, server.database, **options)


def test_table_without_primary_key_is_keyed_by_the_whole_row(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as writer, open_conn(server) as reader:
        # Two overlapping queries: a row matched by both is held twice and shown once (§7.5).
        reader.subscribe_multi(["SELECT * FROM Note", "SELECT * FROM Note WHERE text = 'hi'"]).result(WAIT)
        diffs: list[Any] = []
        reader.table_diffs("Note").subscribe(diffs.append)
        notes = reader.table("Note")
        writer.call_reducer("AddNote", ["hi"]).result(WAIT)
        reader.call_reducer("AddNote", ["ho"]).result(WAIT)
        rows = wait_for(notes.snapshots, lambda r: len(r) == 2)
        assert sorted(n.text for n in rows) == ["hi", "ho"]
        hi = next(n for n in rows if n.text == "hi")
        assert hi.author == writer.identity_token.identity.hex  # type: ignore[union-attr]
        assert reader.cache.ref_count("Note", hi) == 2
        assert reader.cache.ref_count("Note", next(n for n in rows if n.text == "ho")) == 1
        assert [len(d.inserts) for d in diffs] == [1, 1]  # each row inserted once, never duplicated
        assert not any(d.updates for d in diffs)  # no primary key: never an update
        assert sorted(n.text for n in server.table_rows("Note")) == ["hi", "ho"]


def test_u128_and_identity_columns_are_exact(server: SpacetimeDBEmulator) -> None:
    big = 2**127 + 12345
    with open_conn(server) as conn:
        me = conn.wait_connected(WAIT).identity
        conn.subscribe_single("SELECT * FROM Account").result(WAIT)
        conn.call_reducer("Deposit", ["rich", big]).result(WAIT)
        conn.call_reducer("Deposit", ["richer", 1]).result(WAIT)
        accounts = conn.table("Account")
        account = wait_for(accounts.snapshots, lambda r: bool(r) and r[0].nickname == "richer")[0]
        assert account.owner == me and isinstance(account.owner, Identity)
        assert account.balance == big + 1 and type(account.balance) is int
        assert conn.table("Account").get(me) == account  # keyed by the Identity primary key
        results: ReplaySubject[Any] = ReplaySubject()
        conn.reducer_results("Deposit", own=True).subscribe(results)
        conn.call_reducer("Deposit", {"nickname": "x", "amount": 2**128 - 2 - big}).result(WAIT)
        result = wait_for(results, lambda r: True)
        assert result.args.amount == 2**128 - 2 - big and result.caller_identity == me
        assert conn.table("Account").rows()[0].balance == 2**128 - 1


@dataclasses.dataclass(frozen=True)
class Player:
    id: int
    identity: Identity
    name: str
    score: int
    created_at: Timestamp
    location: Any


class Note(NamedTuple):
    author: str
    text: str


def test_user_row_types_are_used_and_checked(server: SpacetimeDBEmulator) -> None:
    with open_conn(server, row_types={"Player": Player, "Note": Note}) as conn:
        conn.subscribe_multi(["SELECT * FROM Player", "SELECT * FROM Note"]).result(WAIT)
        conn.call_reducer("CreatePlayer", ["una"]).result(WAIT)
        conn.call_reducer("AddNote", ["n"]).result(WAIT)
        assert type(conn.table("Player").rows()[0]) is Player
        assert conn.table("Note").rows()[0] == Note(conn.identity_token.identity.hex, "n")  # type: ignore[union-attr]

    @dataclasses.dataclass(frozen=True)
    class Wrong:
        id: int
        name: str

    conn = open_conn(server, row_types={"Player": Wrong})
    with pytest.raises(SchemaError, match="Wrong"):
        conn.wait_connected(WAIT)
    conn.close()


def test_a_module_that_refuses_the_client_is_reported_as_such() -> None:
    module = example_module()

    @module.client_connected
    def refuse(ctx: ReducerContext) -> None:
        raise ReducerError("no entry")

    with SpacetimeDBEmulator(module) as server:
        conn = open_conn(server, reconnect=False)
        with pytest.raises(ConnectionRejected, match="refused"):
            conn.wait_connected(WAIT)
        conn.close()


def test_credentials_true_keeps_one_file_per_server_and_database(
        server: SpacetimeDBEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with open_conn(server, credentials=True) as conn:
        first = conn.wait_connected(WAIT)
    saved = list((tmp_path / "rx_spacetimedb" / "credentials").iterdir())
    assert len(saved) == 1 and server.database in saved[0].name and saved[0].read_text() == first.token
    with open_conn(server, credentials=True) as again:
        assert again.wait_connected(WAIT).identity == first.identity
