"""``POST /v1/database/{db}/sql``: the server's /sql grammar (projections, COUNT, LIMIT, owner DML)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import rx_spacetimedb
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.testing import SpacetimeDBEmulator
from tests.conftest import WAIT
from tests.testing.helpers import lifecycle_module


@pytest.fixture
def server() -> Iterator[SpacetimeDBEmulator]:
    with SpacetimeDBEmulator() as emulator:
        for name in ("alice", "bob", "carol"):
            emulator.call_reducer("CreatePlayer", [name])
        emulator.call_reducer("SetScore", [2, 7])
        yield emulator


def sql(server: SpacetimeDBEmulator, text: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        f"{server.http_url}/v1/database/{server.database}/sql", data=text.encode(), method="POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def columns(result: Any) -> list[tuple[str, str]]:
    return [(e["name"]["some"], next(iter(e["algebraic_type"]))) for e in result[0]["schema"]["elements"]]


def test_column_projections_with_and_without_as(server: SpacetimeDBEmulator) -> None:
    status, result = sql(server, "SELECT name, score AS s, Player.id i FROM Player WHERE id > 1")
    assert status == 200
    assert columns(result) == [("name", "String"), ("s", "I32"), ("i", "U64")]
    assert result[0]["rows"] == [["bob", 7, 2], ["carol", 0, 3]]


def test_projections_over_a_join(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("Deposit", ["rich", 5])
    status, result = sql(
        server,
        "SELECT a.nickname, a.balance FROM Account a JOIN Player p ON a.owner = p.identity "
        "WHERE p.name = 'alice'",
    )
    assert status == 200 and columns(result) == [("nickname", "String"), ("balance", "U128")]
    assert result[0]["rows"] == [["rich", 5]]


def test_count_and_limit(server: SpacetimeDBEmulator) -> None:
    status, result = sql(server, "SELECT COUNT(*) AS n FROM Player WHERE score = 0")
    assert (status, columns(result), result[0]["rows"]) == (200, [("n", "U64")], [[2]])
    assert sql(server, "SELECT count(*) total FROM Player LIMIT 1")[1][0]["rows"] == [[3]]
    status, result = sql(server, "SELECT * FROM Player LIMIT 2")
    assert [row[2] for row in result[0]["rows"]] == ["alice", "bob"]
    assert sql(server, "SELECT name FROM Player LIMIT 1")[1][0]["rows"] == [["alice"]]
    assert sql(server, "SELECT * FROM Player LIMIT 0")[1][0]["rows"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT COUNT(*) FROM Player", "Aggregate expressions must have column aliases"),
        ("SELECT * FROM Player LIMIT x", "Unsupported LIMIT expression: x"),
        ("SELECT nope FROM Player", "`nope` is not in scope"),
        ("SELECT name, COUNT(*) AS n FROM Player", "Unsupported projection expression: COUNT(*)"),
        ("SELECT SUM(score) AS s FROM Player", "Unsupported aggregate function: SUM(score)"),
        (
            "SELECT COUNT(DISTINCT name) AS n FROM Player",
            "Unsupported aggregate function: COUNT(DISTINCT name)",
        ),
        ("SELECT SUM(score) FROM Player", "Aggregate expressions must have column aliases"),
        ("SELECT name, * FROM Player", "Mixed wildcard projections are not supported"),
        ("SELECT name, p.* FROM Player p", "Mixed wildcard projections are not supported"),
        ("SELECT 1 AS one FROM Player", "Unsupported projection expression: 1"),
    ],
)
def test_select_errors(server: SpacetimeDBEmulator, text: str, message: str) -> None:
    assert sql(server, text) == (400, message)


def test_dml_is_for_the_owner_only(server: SpacetimeDBEmulator) -> None:
    identity, token = server.mint_token()
    status, body = sql(server, "DELETE FROM Player", token)
    assert (status, body) == (400, f"Caller {identity.hex} is not authorized to run SQL DML statements")
    assert len(server.table_rows("Player")) == 3


def test_owner_dml_changes_rows_and_reports_counts(server: SpacetimeDBEmulator) -> None:
    owner = server.owner_token
    status, result = sql(server, "INSERT INTO Note (author, text) VALUES ('a', 'one'), ('b', 'two')", owner)
    assert status == 200 and result[0]["schema"] == {"elements": []} and result[0]["rows"] == []
    assert result[0]["stats"] == {"rows_inserted": 2, "rows_deleted": 0, "rows_updated": 0}
    updated = sql(server, "UPDATE Player SET score = 9 WHERE score = 0", owner)[1][0]["stats"]
    assert updated["rows_updated"] == 2
    deleted = sql(server, "DELETE FROM Player WHERE name = 'bob'", owner)[1][0]["stats"]
    assert deleted["rows_deleted"] == 1
    players = [(p.id, p.name, p.score) for p in server.table_rows("Player")]
    assert players == [(1, "alice", 9), (3, "carol", 9)]
    assert [n.text for n in server.table_rows("Note")] == ["one", "two"]
    text = "INSERT INTO Account (owner, balance, nickname) VALUES (0x01, 1, 'x')"
    status, result = sql(server, text, owner)
    assert status == 400 and result.endswith("cannot be parsed as type `(__identity__: U256)`")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "INSERT INTO Note VALUES ('a', 'b')",
            "The number of fields (0) in the INSERT does not match the number of columns (2) of the table "
            "`Note`",
        ),
        (
            "INSERT INTO Note (author, text) VALUES ('a')",
            "Inserting a row with 1 values into `Note` which has 2 fields",
        ),
        ("UPDATE Player SET nope = 1", "`Player` does not have a field `nope`"),
        ("UPDATE Player SET score = 'x'", "Unexpected type: (expected) String != I32 (inferred)"),
        ("UPDATE Player SET score = true", "Unexpected type: (expected) Bool != I32 (inferred)"),
        ("DELETE FROM Nope", "no such table: `Nope`. If the table exists, it may be marked private."),
        ("INSERT INTO Account (owner, balance, nickname) VALUES (0x" + "00" * 32 + ", 'lots', 'x')",
         "Unexpected type: (expected) String != U128 (inferred)"),
    ],
)
def test_dml_errors(server: SpacetimeDBEmulator, text: str, message: str) -> None:
    assert sql(server, text, server.owner_token) == (400, message)


def test_a_unique_violation_rolls_the_statement_back(server: SpacetimeDBEmulator) -> None:
    owner = server.owner_token
    status, body = sql(server, "UPDATE Player SET id = 1", owner)
    assert status == 400 and "1" in body
    assert sorted(p.id for p in server.table_rows("Player")) == [1, 2, 3]


def test_dml_reaches_subscribers_as_a_transaction_without_reducer(server: SpacetimeDBEmulator) -> None:
    with rx_spacetimedb.connect(server.url, server.database, reconnect=False) as conn:
        conn.subscribe_single("SELECT * FROM Note").result(timeout=WAIT)
        seen: list[m.TransactionUpdate] = []
        conn.messages.subscribe(lambda msg: isinstance(msg, m.TransactionUpdate) and seen.append(msg))
        sql(server, "INSERT INTO Note (author, text) VALUES ('sql', 'hi')", server.owner_token)
        conn.call_reducer("AddNote", ["barrier"]).result(timeout=WAIT)
        assert [n.text for n in conn.cache.rows("Note")] == ["hi", "barrier"]
    update = seen[0]
    assert (update.reducer_call.reducer_name, update.reducer_call.reducer_id) == ("", 4294967295)
    assert update.caller_identity == server.owner


def test_each_request_runs_the_lifecycle_reducers() -> None:
    seen: list[str] = []
    module = lifecycle_module(seen)

    with SpacetimeDBEmulator(module) as emulator:
        assert sql(emulator, "SELECT * FROM Note")[0] == 200
        assert sql(emulator, "SELECT * FROM Nope")[0] == 400
    assert seen == ["connected True", "disconnected"] * 2
