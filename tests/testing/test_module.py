"""Module declarations and the in-memory database: constraints, sequences, rollback, handles."""

from __future__ import annotations

import dataclasses

import pytest

from rx_spacetimedb.protocol.types import F32, I32, IDENTITY, STRING, U64, U128
from rx_spacetimedb.protocol.values import Identity, Timestamp
from rx_spacetimedb.testing import (
    Column,
    Database,
    Module,
    ReducerContext,
    ReducerError,
    SpacetimeDBEmulator,
    example_module,
)


def test_declaration_errors() -> None:
    module = Module()
    module.table("T", [Column("id", U64, primary_key=True)])
    with pytest.raises(ValueError, match="declared twice"):
        module.table("T", [Column("id", U64)])
    with pytest.raises(ValueError, match="at most one primary key"):
        module.table("U", [Column("a", U64, primary_key=True), Column("b", U64, primary_key=True)])
    with pytest.raises(ValueError, match="must be an integer"):
        module.table("V", [Column("a", STRING, auto_inc=True)])
    with pytest.raises(ValueError, match="duplicate column"):
        module.table("W", [Column("a", STRING), Column("a", STRING)])

    @module.reducer("R")
    def r(ctx: ReducerContext) -> None:
        pass

    with pytest.raises(ValueError, match="declared twice"):
        module.reducer("R")(r)
    module.build()
    with pytest.raises(RuntimeError, match="already built"):
        module.table("X", [Column("a", STRING)])


def test_schema_of_constraints_and_lifecycle() -> None:
    module = Module()
    module.table(
        "T",
        [
            Column("id", U64, primary_key=True, auto_inc=True),
            Column("email", STRING, unique=True),
            Column("rank", I32, indexed=True),
        ],
        public=False,
    )

    @module.client_connected
    def hello(ctx: ReducerContext) -> None:
        pass

    raw = module.build().to_json()
    (table,) = raw["tables"]
    assert [i["name"]["some"] for i in table["indexes"]] == [
        "T_id_idx_btree",
        "T_email_idx_btree",
        "T_rank_idx_btree",
    ]
    assert [c["name"]["some"] for c in table["constraints"]] == ["T_id_key", "T_email_key"]
    assert [s["column"] for s in table["sequences"]] == [0]
    assert table["table_access"] == {"Private": []}
    assert raw["reducers"] == [
        {"name": "hello", "params": {"elements": []}, "lifecycle": {"some": {"OnConnect": []}}}
    ]


def test_rows_constraints_and_rollback() -> None:
    db = Database(example_module())
    tx = db.begin()
    players = db.view(tx)["Player"]
    me = Identity(5)
    alice = players.insert(
        {"identity": me, "name": "alice", "score": 1, "created_at": Timestamp(0), "location": None}
    )
    assert alice.id == 1
    with pytest.raises(TypeError, match="not a valid Player row"):
        players.insert({"name": "incomplete"})
    bob = players.insert(dataclasses.replace(alice, id=0, name="bob", location={"x": 0.1, "y": 2}))
    assert bob.id == 2 and bob.location.x == pytest.approx(0.1) and type(bob.location.y) is float
    assert players.find("id", 2) == bob
    with pytest.raises(ReducerError, match=r"duplicate unique column value for Player\.id"):
        players.insert(dataclasses.replace(alice, name="again"))
    updated = players.update(dataclasses.replace(bob, score=9))
    assert [p.name for p in players] == ["alice", "bob"] and players.find("id", 2) == updated
    assert players.delete(alice) and not players.delete(alice)
    assert players.count() == 1 and players.filter(score=9) == [updated]
    changes = tx.changes()["Player"]
    assert [p.name for p in changes[0]] == [] and [p.score for p in changes[1]] == [9]  # net effect only
    tx.rollback()
    assert db.rows("Player") == []
    with pytest.raises(ValueError, match="not unique"):
        db.view()["Player"].find("name", "x")
    with pytest.raises(RuntimeError, match="read-only"):
        db.view()["Player"].insert(alice)
    with pytest.raises(KeyError):
        db.view()["Nope"]
    assert db.view().Player.name == "Player"


def test_tables_without_primary_key_are_sets() -> None:
    db = Database(example_module())
    tx = db.begin()
    notes = db.view(tx).Note
    notes.insert({"author": "a", "text": "t"})
    notes.insert(("a", "t"))  # identical row: no-op
    notes.insert({"author": "a", "text": "u"})
    assert notes.count() == 2
    assert notes.delete({"author": "a", "text": "t"}) and notes.count() == 1
    assert notes.delete_by("author", "a") == 1
    with pytest.raises(ReducerError, match="no primary key"):
        notes.update({"author": "a", "text": "t"})


def test_u128_and_unique_updates() -> None:
    db = Database(example_module())
    tx = db.begin()
    accounts = db.view(tx).Account
    a = accounts.insert({"owner": Identity(1), "balance": 2**127, "nickname": "a"})
    accounts.insert({"owner": Identity(2), "balance": 0, "nickname": "b"})
    with pytest.raises(ReducerError, match=r"Account\.nickname"):
        accounts.update(dataclasses.replace(a, nickname="b"))
    assert accounts.update(dataclasses.replace(a, balance=2**128 - 1)).balance == 2**128 - 1
    with pytest.raises(TypeError):
        accounts.insert({"owner": Identity(3), "balance": 2**128, "nickname": "c"})


def test_reducer_that_raises_rolls_back_through_the_server() -> None:
    module = example_module()

    @module.reducer("Both", [("name", STRING)])
    def both(ctx: ReducerContext, name: str) -> None:
        ctx.db.Note.insert({"author": name, "text": "kept?"})
        raise ValueError("second step failed")

    server = SpacetimeDBEmulator(module)
    with pytest.raises(ReducerError, match="second step failed"):
        server.call_reducer("Both", ["x"])
    assert server.table_rows("Note") == []


def test_init_runs_at_creation_and_type_classes() -> None:
    module = Module()
    module.table("Config", [Column("key", STRING, primary_key=True), Column("value", F32)])
    module.table("Owner", [Column("who", IDENTITY), Column("n", U128)])

    @module.init
    def init(ctx: ReducerContext) -> None:
        ctx.db.Config.insert({"key": "gravity", "value": 9.81})

    server = SpacetimeDBEmulator(module)
    (row,) = server.table_rows("Config")
    assert row.value == 9.81  # an f32, held as the shortest decimal that round-trips (as the wire shows it)
    assert server.sql("SELECT * FROM Config WHERE value = 9.81") == [row]
    assert module.type_class("Config") is type(row)
    with pytest.raises(KeyError):
        module.type_class("Nope")


def test_delete_needs_the_current_row() -> None:
    db = Database(example_module())
    tx = db.begin()
    players = db.view(tx).Player
    row = players.insert(
        {"identity": Identity(1), "name": "a", "score": 1, "created_at": Timestamp(0), "location": None}
    )
    players.update(dataclasses.replace(row, score=2))
    assert not players.delete(row)  # a stale copy deletes nothing
    assert players.delete(dataclasses.replace(row, score=2))
    assert players.count() == 0
