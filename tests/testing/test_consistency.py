"""Randomized consistency: snapshots plus deltas always rebuild exactly what the queries select.

A client cache that counts row occurrences per table (spec §7.5) is fed every snapshot and delta the
emulator sends while random transactions run; after each one it must equal the multiset of rows the
held queries select on the server, joins and overlapping queries included.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections import Counter
from typing import Any

import pytest

from rx_spacetimedb.protocol.jsontext import dumps
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.testing import SpacetimeDBEmulator, compile_query, example_module
from tests.testing.helpers import Client, call, run, sub_multi

MULTI = [
    "SELECT * FROM Player WHERE score > 10",
    "SELECT * FROM Player WHERE score <= 50",
    "SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname",
    "SELECT * FROM Account",
]
LEGACY = ["SELECT * FROM Player WHERE score > 10", "SELECT * FROM Note WHERE text = 'b'"]


def apply(cache: dict[str, Counter[Any]], schema: ModuleSchema, tables: list[dict[str, Any]]) -> None:
    """Fold TableUpdates into per-table occurrence counts."""
    for table in tables:
        counts = cache.setdefault(table["table_name"], Counter())
        for update in table["updates"]:
            for text in update["deletes"]:
                row = schema.decode_row(table["table_name"], text)
                counts[row] -= 1
                assert counts[row] >= 0, f"delete of a row the cache does not hold: {row}"
            for text in update["inserts"]:
                counts[schema.decode_row(table["table_name"], text)] += 1


def expected(server: SpacetimeDBEmulator, schema: ModuleSchema, texts: list[str]) -> dict[str, Counter[Any]]:
    """What the held queries select now, as the client decodes it."""
    result: dict[str, Counter[Any]] = {}
    for text in texts:
        query = compile_query(text, server.db)
        codec = server.db.stores[query.table_name].encoder_c
        counts = result.setdefault(query.table_name, Counter())
        for row in query.rows(server.db):
            counts[schema.decode_row(query.table_name, dumps(codec(row)))] += 1
    return result


def same(left: dict[str, Counter[Any]], right: dict[str, Counter[Any]]) -> bool:
    names = set(left) | set(right)
    return all(+left.get(n, Counter()) == +right.get(n, Counter()) for n in names)


async def settle(observer: Client, cache: dict[str, Counter[Any]], schema: ModuleSchema) -> None:
    """Apply every update queued for the observer, up to the answer of a probe sent now."""
    await observer.send({"OneOffQuery": {"message_id": "ff", "query_string": "SELECT * FROM Note"}})
    while "OneOffQueryResponse" not in (frame := await observer.recv()):
        update = frame.get("TransactionUpdate")
        if update is not None:
            tables = update["status"]["Committed"]["tables"]
        else:
            tables = frame["TransactionUpdateLight"]["update"]["tables"]
        assert len({t["table_name"] for t in tables}) == len(tables)  # each table once
        apply(cache, schema, tables)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_snapshots_and_deltas_rebuild_the_query_results(seed: int) -> None:
    rng = random.Random(seed)
    names = list("abcdefgh")
    reducers = ["CreatePlayer"] * 3 + ["SetScore"] * 3 + ["DeletePlayer", "Deposit", "Deposit", "AddNote"]
    with SpacetimeDBEmulator(example_module()) as server:
        with urllib.request.urlopen(f"{server.http_url}/v1/database/{server.database}/schema?version=9") as r:
            schema = ModuleSchema.from_json(r.read())

        async def body() -> None:
            observer = await Client.connect(server, "light=true" if seed == 2 else "")
            actors = [observer, await Client.connect(server), await Client.connect(server)]
            cache: dict[str, Counter[Any]] = {}
            applied = (await observer.request(sub_multi(MULTI, 1)))["SubscribeMultiApplied"]
            apply(cache, schema, applied["update"]["tables"])
            initial = await observer.request({"Subscribe": {"query_strings": LEGACY, "request_id": 2}})
            apply(cache, schema, initial["InitialSubscription"]["database_update"]["tables"])
            held = MULTI + LEGACY
            busiest = 0
            for step in range(60):
                name = rng.choice(names)
                player_ids = [p.id for p in server.table_rows("Player")] or [999]
                reducer = rng.choice(reducers)
                args: list[Any] = {
                    "CreatePlayer": [name],
                    "SetScore": [rng.choice(player_ids), rng.randrange(100)],
                    "DeletePlayer": [rng.choice(player_ids)],
                    "Deposit": [name, rng.randrange(5)],
                    "AddNote": [name],
                }[reducer]
                actor = rng.choice(actors)
                reply = (await actor.request(call(reducer, json.dumps(args), step)))["TransactionUpdate"]
                if actor is observer and "Committed" in reply["status"]:
                    apply(cache, schema, reply["status"]["Committed"]["tables"])
                await settle(observer, cache, schema)
                assert same(cache, expected(server, schema, held)), f"step {step}: {reducer}{args}"
                busiest = max(busiest, sum(sum(c.values()) for c in cache.values()))
                if step == 40:  # release the multi set: its rows go, the legacy ones stay
                    released = await observer.request(
                        {"UnsubscribeMulti": {"request_id": 3, "query_id": {"id": 1}}}
                    )
                    apply(cache, schema, released["UnsubscribeMultiApplied"]["update"]["tables"])
                    held = LEGACY
                    assert same(cache, expected(server, schema, held))
            assert busiest >= 6  # the run did exercise the cache
            for actor in actors:
                await actor.close()

        run(body)
