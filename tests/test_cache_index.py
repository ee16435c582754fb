"""Index lookups on the client cache (UniqueIndex.find, BTreeIndex.filter/range) against a plain scan
of the cached rows, under random inserts, updates, deletes, overlapping queries and reconnect resyncs."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rx_spacetimedb.cache import BTreeIndex, ClientCache, UniqueIndex
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol import ModuleSchema
from tests.operators._canned import _schema_json, delta, light, log_line, player, sub_applied, tx_table
from tests.protocol._strategies import PROPERTY


def _indexed_schema() -> ModuleSchema:
    """The canned schema with Player's name and score, and LogLine's level, btree-indexed."""
    data = copy.deepcopy(_schema_json())
    tables = {t["name"]: t for t in data["tables"]}
    for table, column in (("Player", 2), ("Player", 3), ("LogLine", 1)):
        tables[table].setdefault("indexes", []).append(
            {"name": {"some": f"{table}_{column}_idx_btree"}, "accessor_name": {"some": str(column)},
             "algorithm": {"BTree": [column]}})
    return ModuleSchema.from_json(json.dumps(data))


SCHEMA = _indexed_schema()
PLAYERS = "SELECT * FROM Player"
LOGS = "SELECT * FROM LogLine"
IDS, NAMES, SCORES = range(6), ["a", "b", "c"], range(4)


def scan(cache: ClientCache, table: str, column: str, value: Any) -> list[Any]:
    return [r for r in cache.rows(table) if getattr(r, column) == value]


def check(cache: ClientCache, indexes: dict[str, Any]) -> None:
    """Every lookup equals a scan of the rows the cache shows now."""
    for id_ in IDS:
        assert indexes["id"].find(id_) == next(iter(scan(cache, "Player", "id", id_)), None)
    for name in NAMES:
        assert set(indexes["name"].filter(name)) == set(scan(cache, "Player", "name", name))
    for score in SCORES:
        assert set(indexes["score"].filter(score)) == set(scan(cache, "Player", "score", score))
    for low, high in ((None, None), (1, 3), (2, None), (None, 1), (3, 1)):
        expected = sorted((r for r in cache.rows("Player")
                           if (low is None or r.score >= low) and (high is None or r.score < high)),
                          key=lambda r: r.score)
        found = indexes["score"].range(low, high)
        assert [r.score for r in found] == [r.score for r in expected] and set(found) == set(expected)
    for level in range(3):
        assert set(indexes["level"].filter(level)) == set(scan(cache, "LogLine", "level", level))


step = st.one_of(
    st.tuples(st.just("upsert"), st.sampled_from(IDS), st.sampled_from(NAMES), st.sampled_from(SCORES)),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    st.tuples(st.just("log"), st.sampled_from(NAMES), st.integers(0, 2)),
    st.tuples(st.just("unlog"), st.sampled_from(NAMES), st.integers(0, 2)),
    st.tuples(st.just("reconnect"), st.booleans()),
    st.tuples(st.just("index_now")),
)


@PROPERTY
@given(st.lists(step, max_size=30), st.booleans())
def test_lookups_equal_a_scan_under_random_changes_and_resyncs(steps: list[tuple[Any, ...]],
                                                              early: bool) -> None:
    cache = ClientCache(SCHEMA, auto_resync=False)
    indexes = {"id": UniqueIndex(cache, "Player", "id"), "name": BTreeIndex(cache, "Player", "name"),
               "score": BTreeIndex(cache, "Player", "score"), "level": BTreeIndex(cache, "LogLine", 1)}
    if early:  # built before any row arrives; otherwise from the rows there at their first use
        check(cache, indexes)
    server_players: dict[int, Any] = {}
    server_logs: set[Any] = set()
    cache.note_subscribe_single(1, PLAYERS)
    cache.note_subscribe_single(2, LOGS)
    cache.apply(sub_applied(1, table="Player"))
    cache.apply(sub_applied(2, table="LogLine"))
    away = False  # changes while disconnected reach the server only: the resync brings them
    for kind, *args in steps:
        if kind == "upsert":
            id_, name, score = args
            old, new = server_players.get(id_), player(id_, name, score)
            server_players[id_] = new
            if not away:
                cache.apply(light(tx_table("Player", delta((old,) if old else (), (new,)))))
        elif kind == "delete" and args[0] in server_players:
            old = server_players.pop(args[0])
            if not away:
                cache.apply(light(tx_table("Player", delta((old,), ()))))
        elif kind in ("log", "unlog"):
            row = log_line(*args)
            if (kind == "log") == (row in server_logs):
                continue
            (server_logs.add if kind == "log" else server_logs.remove)(row)
            if not away:
                change = ((), (row,)) if kind == "log" else ((row,), ())
                cache.apply(light(tx_table("LogLine", delta(*change))))
        elif kind == "reconnect":
            away = args[0]
            if not away:  # back: resubscribe, the snapshots end the resync with the net difference
                cache.begin_resync()
                cache.note_subscribe_single(1, PLAYERS)
                cache.note_subscribe_single(2, LOGS)
                assert cache.end_resync_when_applied() is None
                cache.apply(sub_applied(1, *server_players.values(), table="Player"))
                if server_logs:  # a second-to-last step: lookups must still show the old rows
                    check(cache, indexes)
                cache.apply(sub_applied(2, *server_logs, table="LogLine"))
                assert not cache.resyncing
        check(cache, indexes)
    if not away:  # the scenario really moved the cache along with the server
        cached = {r.id: r.score for r in cache.rows("Player")}
        assert cached == {i: r.score for i, r in server_players.items()}


def test_lookups_follow_clear_and_name_the_indexes_a_table_has() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, PLAYERS)
    cache.apply(sub_applied(1, player(1, "a", 3), player(2, "b", 3)))
    by_id = UniqueIndex(cache, "Player", "id")
    found = by_id.find(2)
    assert found is not None and (found.id, found.name) == (2, "b") and by_id.find(9) is None
    assert [r.name for r in BTreeIndex(cache, "Player", "score").filter(3)] == ["a", "b"]
    cache.clear()
    assert by_id.find(2) is None
    with pytest.raises(SchemaError, match=r"no unique column set on \['name'\]; it has \[\['id'\]\]"):
        UniqueIndex(cache, "Player", "name").find("a")
    with pytest.raises(SchemaError, match="no column 'nope'"):
        BTreeIndex(cache, "Player", "nope").filter(1)
    with pytest.raises(SchemaError, match="no index on"):
        BTreeIndex(cache, "Player", "identity").filter(1)
    assert repr(by_id) == "<UniqueIndex Player['id']>"
