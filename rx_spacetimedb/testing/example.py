"""The example module of the spec: a ``Player`` table with reducers, a procedure and test tables.

It is what ``python -m rx_spacetimedb.testing serve`` runs and what the README demo uses. Besides the
spec's ``Player`` (table id 4097, reducers ``CreatePlayer``=0, ``SetScore``=1, ``DeletePlayer``=2 and
the ``FindPlayer`` procedure) it has two tables that exercise other shapes in tests: ``Note`` (no
primary key) and ``Account`` (``u128`` and ``Identity`` columns, a unique column).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rx_spacetimedb.protocol.types import (
    F32,
    I32,
    IDENTITY,
    STRING,
    TIMESTAMP,
    U64,
    U128,
    Element,
    ProductType,
    option_of,
)
from rx_spacetimedb.testing.module import Column, Module, ProcedureContext, ReducerContext, ReducerError

__all__ = ["example_module"]


def example_module(name: str = "quickstart", *, minimal: bool = False) -> Module:
    """A fresh example module (a module may be served by several emulators; each has its own data).

    ``minimal=True`` gives exactly the spec's module (``Player``, ``CreatePlayer``, ``SetScore``,
    ``FindPlayer``), whose schema JSON is byte-identical to ``examples/http-schema-v9-response.json``.
    """
    module = Module(name)
    location = module.add_type("Location", ProductType((Element("x", F32), Element("y", F32))))
    player = module.table(
        "Player",
        [
            Column("id", U64, primary_key=True, auto_inc=True),
            Column("identity", IDENTITY),
            Column("name", STRING),
            Column("score", I32),
            Column("created_at", TIMESTAMP),
            Column("location", option_of(location)),
        ],
    )
    if not minimal:
        module.table("Note", [Column("author", STRING), Column("text", STRING)])
        module.table(
            "Account",
            [
                Column("owner", IDENTITY, primary_key=True),
                Column("balance", U128),
                Column("nickname", STRING, unique=True),
            ],
        )

    @module.reducer("CreatePlayer", [("name", STRING)])
    def create_player(ctx: ReducerContext, name: str) -> None:
        if not name:
            raise ReducerError("name must not be empty")
        if ctx.db["Player"].filter(name=name):
            raise ReducerError(f'name "{name}" is already taken')
        ctx.db["Player"].insert(
            {
                "id": 0,
                "identity": ctx.sender,
                "name": name,
                "score": 0,
                "created_at": ctx.timestamp,
                "location": None,
            }
        )

    @module.reducer("SetScore", [("id", U64), ("score", I32)])
    def set_score(ctx: ReducerContext, id: int, score: int) -> None:
        row = ctx.db["Player"].find("id", id)
        if row is None:
            raise ReducerError(f"no player with id {id}")
        ctx.db["Player"].update(dataclasses.replace(row, score=score))

    @module.procedure("FindPlayer", [("name", STRING)], returns=option_of(player.provisional_ref))
    def find_player(ctx: ProcedureContext, name: str) -> Any:
        return next(iter(ctx.db["Player"].filter(name=name)), None)

    if not minimal:
        _add_extras(module)
    return module


def _add_extras(module: Module) -> None:
    """Reducers beyond the spec's module: deleting players and writing the test tables."""

    @module.reducer("DeletePlayer", [("id", U64)])
    def delete_player(ctx: ReducerContext, id: int) -> None:
        row = ctx.db["Player"].find("id", id)
        if row is None:
            raise ReducerError(f"no player with id {id}")
        ctx.db["Player"].delete(row)

    @module.reducer("AddNote", [("text", STRING)])
    def add_note(ctx: ReducerContext, text: str) -> None:
        ctx.db["Note"].insert({"author": ctx.sender.hex, "text": text})

    @module.reducer("Deposit", [("nickname", STRING), ("amount", U128)])
    def deposit(ctx: ReducerContext, nickname: str, amount: int) -> None:
        accounts = ctx.db["Account"]
        row = accounts.find("owner", ctx.sender)
        if row is None:
            accounts.insert({"owner": ctx.sender, "balance": amount, "nickname": nickname})
        else:
            accounts.update(dataclasses.replace(row, balance=row.balance + amount, nickname=nickname))
