"""The SQL subset: what parses, how literals are typed, what each query returns, and error texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rx_spacetimedb.protocol.types import BYTES, STRING, U32, Element, ProductType
from rx_spacetimedb.protocol.values import Identity, Timestamp
from rx_spacetimedb.testing import Column, Database, ReducerContext, SqlError, compile_query, example_module

OWNER = Identity(0xC200 << 240)


def database() -> Database:
    """The example module plus a private table and a bytes column, with a few rows."""
    module = example_module()
    module.table("Secret", [Column("id", U32, primary_key=True), Column("blob", BYTES)], public=False)
    module.table("Pair", [Column("left", U32), Column("right", U32, indexed=True)])
    db = Database(module)
    tx = db.begin()
    view = db.view(tx)
    for name, score in (("alice", 1200), ("bob", 950), ("carol", -5)):
        view["Player"].insert(
            {
                "identity": OWNER if name == "alice" else Identity(7),
                "name": name,
                "score": score,
                "created_at": Timestamp(1_000_000 * score),
                "location": {"x": 1.5, "y": 2.0} if name == "bob" else None,
            }
        )
    view["Note"].insert({"author": "alice", "text": "it's"})
    view["Account"].insert({"owner": OWNER, "balance": 2**100, "nickname": "rich"})
    view["Secret"].insert({"id": 1, "blob": b"\xab\xcd"})
    view["Pair"].insert({"left": 1, "right": 2})
    return db


DB = database()


def names(sql: str, **kwargs: object) -> list[str]:
    """Names (or first column) of the rows a query returns."""
    query = compile_query(sql, DB, sender=OWNER, **kwargs)  # type: ignore[arg-type]
    out = []
    for row in query.rows(DB):
        for attr in ("name", "nickname", "text", "id"):
            if hasattr(row, attr):
                out.append(str(getattr(row, attr)))
                break
    return out


def error(sql: str, **kwargs: object) -> str:
    """The error text a query gets."""
    with pytest.raises(SqlError) as caught:
        compile_query(sql, DB, sender=OWNER, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM Player", ["alice", "bob", "carol"]),
        ("select * from Player;", ["alice", "bob", "carol"]),
        ("SELECT Player.* FROM Player", ["alice", "bob", "carol"]),
        ("SELECT p.* FROM Player AS p WHERE p.score > 0", ["alice", "bob"]),
        ('SELECT p.* FROM "Player" p WHERE p."name" = \'bob\'', ["bob"]),
        ("SELECT * FROM Player WHERE score = 950", ["bob"]),
        ("SELECT * FROM Player WHERE score != 950", ["alice", "carol"]),
        ("SELECT * FROM Player WHERE score <> 950", ["alice", "carol"]),
        ("SELECT * FROM Player WHERE score < 950", ["carol"]),
        ("SELECT * FROM Player WHERE score <= 950", ["bob", "carol"]),
        ("SELECT * FROM Player WHERE score >= -5 AND score < 1000", ["bob", "carol"]),
        ("SELECT * FROM Player WHERE score = -5 OR name = 'alice'", ["alice", "carol"]),
        ("SELECT * FROM Player WHERE name = 'bob' OR name = 'carol' AND score > 0", ["bob"]),
        ("SELECT * FROM Player WHERE (name = 'bob' OR name = 'carol') AND score > 0", ["bob"]),
        ("SELECT * FROM Player WHERE 950 = score", ["bob"]),
        ("SELECT * FROM Player WHERE score = '950'", ["bob"]),  # literal typed by the column
        ("SELECT * FROM Player WHERE score = 9.5e2", ["bob"]),
        ("SELECT * FROM Player WHERE score = +950", ["bob"]),
        ("SELECT * FROM Player WHERE id = 1", ["alice"]),
        ("SELECT * FROM Player WHERE TRUE", ["alice", "bob", "carol"]),
        ("SELECT * FROM Player WHERE FALSE", []),
        ("SELECT * FROM Player WHERE identity = :sender", ["alice"]),
        (f"SELECT * FROM Player WHERE identity = 0x{OWNER.hex}", ["alice"]),
        (f"SELECT * FROM Player WHERE identity = X'{OWNER.hex.upper()}'", ["alice"]),
        (f"SELECT * FROM Player WHERE identity = '{OWNER.hex}'", ["alice"]),
        ("SELECT * FROM Player WHERE created_at > '1970-01-01T00:15:00Z'", ["alice", "bob"]),
        ("SELECT * FROM Note WHERE text = 'it''s'", ["it's"]),
        ("SELECT * FROM Note WHERE text = 5", []),
        (f"SELECT * FROM Account WHERE balance = {2**100}", ["rich"]),
        ("SELECT * FROM Account WHERE balance > 1e20", ["rich"]),
        ("SELECT p.* FROM Player p JOIN Account a ON p.identity = a.owner", ["alice"]),
        ("SELECT a.* FROM Player p JOIN Account a ON p.identity = a.owner WHERE p.score > 0", ["rich"]),
        ("SELECT p.* FROM Player p INNER JOIN Account a ON a.owner = p.identity WHERE a.nickname = 'x'", []),
    ],
)
def test_queries(sql: str, expected: list[str]) -> None:
    assert names(sql) == expected


def test_private_tables_and_owner() -> None:
    assert (
        error("SELECT * FROM Secret")
        == "no such table: `Secret`. If the table exists, it may be marked private."
    )
    assert names("SELECT * FROM Secret WHERE blob = X'ABCD'", is_owner=True) == ["1"]
    assert names("SELECT * FROM Secret WHERE blob = 0xabcd", is_owner=True) == ["1"]


def test_names_are_case_sensitive_keywords_are_not() -> None:
    assert error("SELECT * FROM player").startswith("no such table: `player`")
    assert error("SELECT * FROM Player WHERE Score = 1") == "`Score` is not in scope"
    assert names("sElEcT * fRoM Player wHeRe score = 950 AnD name = 'bob'") == ["bob"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "Empty SQL query"),
        ("  ;", "Empty SQL query"),
        ("SELECT * FROM Player; SELECT * FROM Note", "Multiple SQL statements are not supported"),
        ("DELETE FROM Player", "Unsupported: Non-SELECT queries"),
        ("INSERT INTO Note VALUES ('a', 'b')", "Unsupported: Non-SELECT queries"),
        (
            "SELECT name FROM Player",
            "Column projections are not supported in subscriptions; Subscriptions must return a table type",
        ),
        (
            "SELECT COUNT(*) AS n FROM Player",
            "Column projections are not supported in subscriptions; Subscriptions must return a table type",
        ),
        ("SELECT * FROM Playr", "no such table: `Playr`. If the table exists, it may be marked private."),
        ("SELECT name FROM Playr", "no such table: `Playr`. If the table exists, it may be marked private."),
        ("SELECT * FROM Player WHERE scor = 1", "`scor` is not in scope"),
        ("SELECT * FROM Player WHERE q.score = 1", "`q` is not in scope"),
        ("SELECT q.* FROM Player", "`q` is not in scope"),
        ("SELECT * FROM Player WHERE NOT score = 1", "Unsupported expression: NOT score = 1"),
        ("SELECT * FROM Player WHERE name LIKE 'a%'", "Unsupported expression: name LIKE 'a%'"),
        ("SELECT * FROM Player WHERE location IS NULL", "Unsupported expression: location IS NULL"),
        ("SELECT * FROM Player WHERE score IN (1, 2)", "Unsupported expression: score IN ( 1 , 2 )"),
        (
            "SELECT * FROM Player WHERE score = 1.5",
            "The literal expression `1.5` cannot be parsed as type `I32`",
        ),
        (
            "SELECT * FROM Player WHERE score = 'abc'",
            "The literal expression `abc` cannot be parsed as type `I32`",
        ),
        (
            "SELECT * FROM Player WHERE score = 3000000000",
            "The literal expression `3000000000` cannot be parsed as type `I32`",
        ),
        ("SELECT * FROM Player WHERE score = TRUE", "Unexpected type: (expected) Bool != I32 (inferred)"),
        ("SELECT * FROM Player WHERE score", "Unexpected type: (expected) I32 != Bool (inferred)"),
        ("SELECT * FROM Player WHERE 1", "The literal expression `1` cannot be parsed as type `Bool`"),
        ("SELECT * FROM Player WHERE 1 = 1", "Cannot resolve type for literal expression"),
        ("SELECT * FROM Player WHERE score = name", "Unexpected type: (expected) String != I32 (inferred)"),
        (
            "SELECT * FROM Player WHERE score = :sender",
            "Unexpected type: (expected) (__identity__: U256) != I32 (inferred)",
        ),
        (
            "SELECT * FROM Player WHERE identity = 'c200'",
            "The literal expression `c200` cannot be parsed as type `(__identity__: U256)`",
        ),
        (
            "SELECT * FROM Player WHERE location = 1",
            "The literal expression `1` cannot be parsed as type `(some: (x: F32, y: F32) | none: ())`",
        ),
        (
            "SELECT * FROM Player WHERE location = location",
            "Invalid binary operator `=` for type `(some: (x: F32, y: F32) | none: ())`",
        ),
        ("SELECT * FROM Player p JOIN Note n ON p.name = n.text", "SELECT * is not supported for joins"),
        (
            "SELECT p.* FROM Player p JOIN Note n ON p.name = n.text WHERE score > 1",
            "Names must be qualified when using joins",
        ),
        ("SELECT p.* FROM Player p JOIN Note p ON p.name = p.text", "Duplicate name `p`"),
        ("SELECT p.* FROM Player p, Note n", "Implicit joins are not supported"),
        ("SELECT p.* FROM Player p LEFT JOIN Note n ON p.name = n.text", "Non-inner joins are not supported"),
        (
            "SELECT p.* FROM Player p JOIN Note n ON p.score = n.text",
            "Unexpected type: (expected) String != I32 (inferred)",
        ),
        (
            "SELECT p.* FROM Player p JOIN Note n ON p.score > 1",
            "Non-column join constraints are not supported",
        ),
        ("SELECT * FROM Player ORDER BY score", "Unsupported: SELECT * FROM Player ORDER BY score"),
        ("SELECT * FROM Player LIMIT 1", "Unsupported: SELECT * FROM Player LIMIT 1"),
        ("SELECT DISTINCT * FROM Player", "Unsupported SELECT: SELECT DISTINCT * FROM Player"),
        ("SELECT * FROM Player WHERE score = :who", "Unsupported literal expression: :who"),
        ("SELECT * FROM Player WHERE score = NULL", "Unsupported literal expression: NULL"),
        ("SELECT *", "A FROM clause is required"),
        ("SELECT * FROM *", "sql parser error: Expected identifier, found: *"),
        ("SELECT * FROM a.b", "Multi-part names are not supported: a.b"),
        ("SELECT * FROM Player WHERE", "sql parser error: Expected an expression, found: EOF"),
        (
            "SELECT * FROM Player WHERE score = 1 score",
            "sql parser error: Expected end of statement, found: score",
        ),
        ("SELECT * FROM Player WHERE score = 1 ?", "sql parser error: Expected an expression, found: ?"),
    ],
)
def test_errors(sql: str, message: str) -> None:
    assert error(sql) == message


def test_subscription_only_checks() -> None:
    unindexed = "SELECT p.* FROM Player p JOIN Note n ON p.name = n.text"
    assert names(unindexed) == []  # fine for a one-off query
    assert error(unindexed, subscription=True) == "Subscriptions require indexes on join columns"
    assert (
        error("SELECT p.* FROM Player p JOIN Note n", subscription=True)
        == "Subscriptions require indexes on join columns"
    )
    indexed = "SELECT l.* FROM Pair l JOIN Pair r ON l.left = r.right"
    assert compile_query(indexed, DB, subscription=True).rows(DB) == []


@pytest.mark.parametrize(
    ("sql", "plannable"),
    [
        # the right-hand table's join column needs the index (HashToIxJoin) ...
        ("SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname", True),
        ("SELECT a.* FROM Account a JOIN Player p ON a.nickname = p.name", False),
        ("SELECT a.* FROM Account a JOIN Player p ON p.name = a.nickname", False),
        # ... unless only the right-hand table has a constant filter: then the sides swap
        ("SELECT a.* FROM Account a JOIN Player p ON a.nickname = p.name WHERE p.score > 0", True),
        ("SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname WHERE a.balance > 0", False),
        ("SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname WHERE a.owner = :sender", False),
        ("SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname WHERE 0 < a.balance", False),
        # filters on both sides, or ones that are not pushed down (OR, column to column): no swap
        (
            "SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname "
            "WHERE a.balance > 0 AND p.score > 0",
            True,
        ),
        (
            "SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname "
            "WHERE a.balance > 0 OR a.nickname = 'x'",
            True,
        ),
        ("SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname WHERE a.nickname = p.name", True),
        ("SELECT l.* FROM Pair l JOIN Pair r ON l.left = r.right", True),
        ("SELECT l.* FROM Pair l JOIN Pair r ON l.right = r.left", False),
        ("SELECT l.* FROM Pair l JOIN Pair r ON l.right = r.left WHERE r.left = 1", True),
    ],
)
def test_join_index_rule_is_the_server_planners(sql: str, plannable: bool) -> None:
    if plannable:
        compile_query(sql, DB, sender=OWNER, subscription=True)
    else:
        assert error(sql, subscription=True) == "Subscriptions require indexes on join columns"
    compile_query(sql, DB, sender=OWNER)  # one-off queries take any join


def test_subscription_error_text_wraps_the_query() -> None:
    with pytest.raises(SqlError) as caught:
        compile_query("SELECT * FROM Playr", DB)
    assert caught.value.subscription_text("SELECT * FROM Playr") == (
        "no such table: `Playr`. If the table exists, it may be marked private., "
        "executing: `SELECT * FROM Playr`"
    )


def test_queries_over_custom_types() -> None:
    module = example_module()
    pair = module.add_type("Pair", ProductType((Element("a", STRING), Element("b", U32))))
    module.table("Holder", [Column("id", U32, primary_key=True), Column("pair", pair)])
    db = Database(module)
    tx = db.begin()
    db.view(tx)["Holder"].insert({"id": 1, "pair": {"a": "x", "b": 2}})
    assert [r.pair.a for r in compile_query("SELECT * FROM Holder WHERE id = 1", db).rows(db)] == ["x"]
    with pytest.raises(SqlError, match=r"`\(a: String, b: U32\)`"):
        compile_query("SELECT * FROM Holder WHERE pair = 'x'", db)


def test_reducer_context_is_unused_here() -> None:
    """Keep the import honest: ReducerContext is the type reducers get (checked by mypy)."""
    assert ReducerContext.__name__ == "ReducerContext"


_WORDS = [
    "SELECT",
    "*",
    "FROM",
    "Player",
    "Note",
    "p",
    ".",
    "WHERE",
    "JOIN",
    "ON",
    "AND",
    "OR",
    "NOT",
    "(",
    ")",
    "=",
    "<>",
    "<",
    ">=",
    "'x'",
    "1",
    "-",
    "1.5e3",
    "0xff",
    "X'AB'",
    ":sender",
    "TRUE",
    "name",
    "score",
    "identity",
    ";",
    ",",
    "AS",
    "INNER",
    "LIMIT",
    "NULL",
    "IS",
    '"Player"',
    "location",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(_WORDS), max_size=14).map(" ".join)))
def test_any_text_compiles_or_fails_with_sql_error(text: str) -> None:
    try:
        query = compile_query(text, DB, sender=OWNER, subscription=True)
    except SqlError as err:
        assert str(err)
    else:
        query.rows(DB)


def test_joins_are_bags_one_row_per_match() -> None:
    db = database()
    tx = db.begin()
    db.view(tx)["Note"].insert({"author": "alice", "text": "second"})
    query = compile_query("SELECT p.* FROM Player p JOIN Note n ON p.name = n.author", db)
    assert [r.name for r in query.rows(db)] == ["alice", "alice"]
