"""Client messages and their replies (spec §5-§7): reducers, subscriptions, queries, procedures."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rx_spacetimedb.protocol.types import STRING, U64
from rx_spacetimedb.testing import (
    Column,
    ProcedureContext,
    ReducerContext,
    SpacetimeDBEmulator,
    example_module,
)
from tests.testing.helpers import Client, call, rows, run, sub_multi, sub_single

PLAYERS = "SELECT * FROM Player"


def seeded() -> SpacetimeDBEmulator:
    """The example module with alice (1200), bob (950) and one note."""
    server = SpacetimeDBEmulator(example_module())
    server.call_reducer("CreatePlayer", ["alice"])
    server.call_reducer("SetScore", [1, 1200])
    server.call_reducer("CreatePlayer", ["bob"])
    server.call_reducer("SetScore", [2, 950])
    server.call_reducer("AddNote", ["first"])
    return server


# -- reducers ---------------------------------------------------------------------------------


def test_caller_gets_full_update_others_get_full_or_light() -> None:
    async def body() -> None:
        async with seeded() as server:
            caller = await Client.connect(server)
            full = await Client.connect(server)
            light = await Client.connect(server, "light=true")
            silent = await Client.connect(server)
            for client in (caller, full, light):
                await client.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            await silent.request({"Subscribe": {"query_strings": ["SELECT * FROM Note"], "request_id": 1}})
            mine = (await caller.request(call("SetScore", "[2,1010]", 41)))["TransactionUpdate"]
            assert mine["reducer_call"] == {
                "reducer_name": "SetScore",
                "reducer_id": 1,
                "args": "[2,1010]",
                "request_id": 41,
            }
            assert mine["caller_connection_id"]["__connection_id__"] == caller.connection_id
            (table,) = mine["status"]["Committed"]["tables"]
            assert rows(table, "deletes")[0][3] == 950 and rows(table)[0][3] == 1010
            theirs = (await full.recv())["TransactionUpdate"]
            assert theirs["reducer_call"] == mine["reducer_call"]
            assert theirs["status"] == mine["status"]
            assert (await light.recv()) == {
                "TransactionUpdateLight": {"request_id": 41, "update": mine["status"]["Committed"]}
            }
            await silent.expect_silence()  # not subscribed to Player: hears nothing

    run(body)


def test_caller_without_subscription_gets_empty_committed() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            reply = await client.request(call("CreatePlayer", '["carol"]', 5))
            assert reply["TransactionUpdate"]["status"] == {"Committed": {"tables": []}}

    run(body)


def test_failed_reducer_goes_to_caller_only_and_rolls_back() -> None:
    async def body() -> None:
        async with seeded() as server:
            caller = await Client.connect(server)
            other = await Client.connect(server)
            await other.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            reply = (await caller.request(call("CreatePlayer", '["alice"]', 7)))["TransactionUpdate"]
            assert reply["status"] == {"Failed": 'name "alice" is already taken'}
            assert reply["reducer_call"]["request_id"] == 7
            assert reply["energy_quanta_used"]["quanta"] > 0
            await other.expect_silence()
            assert [p.name for p in server.table_rows("Player")] == ["alice", "bob"]

    run(body)


def test_calls_that_cannot_start() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            for reducer, args, flags, name, reducer_id, error in [
                ("Nope", "[]", 0, "Nope", 4294967295, "no such reducer"),
                ("Nope", "[]", 1, "Nope", 4294967295, "no such reducer"),
                ("not valid!", "[]", 0, "", 4294967295, "no such reducer"),
                ("CreatePlayer", "[1]", 1, "CreatePlayer", 0, "invalid arguments for reducer CreatePlayer: "),
                ("CreatePlayer", "[]", 0, "CreatePlayer", 0, "invalid arguments for reducer CreatePlayer: "),
                ("SetScore", '{"id":1}', 0, "SetScore", 1, "invalid arguments for reducer SetScore: "),
                ("SetScore", "[1.0, 3]", 0, "SetScore", 1, "invalid arguments for reducer SetScore: "),
            ]:
                reply = (await client.request(call(reducer, args, 99, flags)))["TransactionUpdate"]
                assert reply["status"]["Failed"].startswith(error), reply
                assert reply["reducer_call"] == {
                    "reducer_name": name,
                    "reducer_id": reducer_id,
                    "args": "[]",
                    "request_id": 0,
                }
                assert reply["energy_quanta_used"] == {"quanta": 0}
                assert reply["total_host_execution_duration"] == {"__time_duration_micros__": 0}

    run(body)


def test_lifecycle_reducer_cannot_be_called() -> None:
    module = example_module()

    @module.client_connected
    def connected(ctx: ReducerContext) -> None:
        pass

    async def body() -> None:
        async with SpacetimeDBEmulator(module) as server:
            client = await Client.connect(server)
            reply = (await client.request(call("connected", "[]")))["TransactionUpdate"]
            assert reply["status"] == {"Failed": "can't directly call special OnConnect lifecycle reducer"}
            assert reply["reducer_call"]["reducer_id"] == server.schema.reducer_ids["connected"]

    run(body)


def test_args_by_name_option_null_and_verbatim_echo() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            args = '{"score": 5, "id": 1}'
            reply = (await client.request(call("SetScore", args, 3)))["TransactionUpdate"]
            assert "Committed" in reply["status"]
            assert reply["reducer_call"]["args"] == args  # verbatim
            assert server.table_rows("Player")[0].score == 5  # updates keep the row's place

    run(body)


def test_no_success_notify() -> None:
    async def body() -> None:
        async with seeded() as server:
            quiet = await Client.connect(server)
            # flag 1 and no subscription: nothing on success, nothing on failure
            await quiet.send(call("CreatePlayer", '["carol"]', 1, flags=1))
            await quiet.send(call("CreatePlayer", '["carol"]', 2, flags=1))
            await quiet.expect_silence()
            assert [p.name for p in server.table_rows("Player")][-1] == "carol"
            # flag 1 with a subscription: the caller hears it like any subscriber
            await quiet.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            reply = await quiet.request(call("SetScore", "[3, 7]", 8, flags=1))
            assert reply["TransactionUpdate"]["reducer_call"]["request_id"] == 8
            light = await Client.connect(server, "light=true")
            await light.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            assert "TransactionUpdateLight" in await light.request(call("SetScore", "[3, 9]", 9, flags=1))

    run(body)


def test_hide_reducer_details_sends_light_to_everyone_else() -> None:
    async def body() -> None:
        server = SpacetimeDBEmulator(example_module(), hide_reducer_details=True)
        async with server:
            caller = await Client.connect(server)
            other = await Client.connect(server)
            await other.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            assert "TransactionUpdate" in await caller.request(call("CreatePlayer", '["x"]', 4))
            assert (await other.recv())["TransactionUpdateLight"]["request_id"] == 4

    run(body)


def test_system_transactions_reach_subscribers() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            await client.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            server.call_reducer("SetScore", {"id": 1, "score": 3})
            update = (await client.recv())["TransactionUpdate"]
            assert update["caller_connection_id"] == {"__connection_id__": 0}
            assert update["caller_identity"]["__identity__"] == f"0x{server.identity.hex}"
            assert update["reducer_call"] == {
                "reducer_name": "SetScore",
                "reducer_id": 1,
                "args": "[1,3]",
                "request_id": 0,
            }
            server.with_tx(lambda ctx: ctx.db["Player"].delete_by("name", "bob"))
            update = (await client.recv())["TransactionUpdate"]
            assert update["reducer_call"]["reducer_name"] == ""
            assert rows(update["status"]["Committed"]["tables"][0], "deletes")[0][2] == "bob"

    run(body)


# -- subscriptions ----------------------------------------------------------------------------


def test_snapshot_grouping_vs_transaction_grouping() -> None:
    high, alice = "SELECT * FROM Player WHERE score >= 1000", "SELECT * FROM Player WHERE name = 'alice'"

    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            initial = (
                await client.request(
                    {"Subscribe": {"query_strings": [high, alice, "SELECT * FROM Note"], "request_id": 1}}
                )
            )["InitialSubscription"]
            tables = initial["database_update"]["tables"]
            assert [t["table_name"] for t in tables] == ["Player", "Player", "Note"]
            assert all(len(t["updates"]) == 1 and t["num_rows"] == 1 for t in tables)
            assert json.loads(tables[0]["updates"][0]["inserts"][0])["name"] == "alice"  # form B
            update = (await client.request(call("SetScore", "[1, 1300]", 2)))["TransactionUpdate"]
            (table,) = update["status"]["Committed"]["tables"]  # Player once ...
            assert table["num_rows"] == 4 and len(table["updates"]) == 2  # ... one QueryUpdate per query
            assert all(json.loads(u["inserts"][0])[3] == 1300 for u in table["updates"])  # form C

    run(body)


def test_empty_tables_and_empty_matches_in_snapshots() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            server.call_reducer("CreatePlayer", ["a"])
            client = await Client.connect(server)
            initial = await client.request(
                {
                    "Subscribe": {
                        "query_strings": ["SELECT * FROM Note", "SELECT * FROM Player WHERE score > 5"],
                        "request_id": 1,
                    }
                }
            )
            (table,) = initial["InitialSubscription"]["database_update"]["tables"]  # Note is empty: no entry
            assert table == {
                "table_id": 4097,
                "table_name": "Player",
                "num_rows": 0,
                "updates": [{"deletes": [], "inserts": []}],
            }
            applied = (await client.request(sub_single("SELECT * FROM Note", 1)))["SubscribeApplied"]
            assert applied["rows"]["table_rows"]["updates"] == [{"deletes": [], "inserts": []}]
            assert applied["rows"]["table_id"] == 4098

    run(body)


def test_legacy_subscribe_replaces_and_repeats() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            initial = await client.request(
                {"Subscribe": {"query_strings": [PLAYERS, f"  {PLAYERS} "], "request_id": 1}}
            )
            tables = initial["InitialSubscription"]["database_update"]["tables"]
            assert len(tables) == 2  # listed twice: rows twice ...
            update = (await client.request(call("SetScore", "[1, 5]", 2)))["TransactionUpdate"]
            assert len(update["status"]["Committed"]["tables"][0]["updates"]) == 1  # ... held once
            await client.request({"Subscribe": {"query_strings": ["SELECT * FROM Note"], "request_id": 3}})
            update = (await client.request(call("SetScore", "[1, 6]", 4)))["TransactionUpdate"]
            assert update["status"]["Committed"]["tables"] == []  # Player no longer subscribed

    run(body)


def test_select_star_from_star() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            initial = await client.request(
                {"Subscribe": {"query_strings": ["select  *  FROM *"], "request_id": 1}}
            )
            names = [t["table_name"] for t in initial["InitialSubscription"]["database_update"]["tables"]]
            assert names == ["Player", "Note"]  # Account is empty
            multi = await client.request(sub_multi(["SELECT * FROM *"], 1))
            assert [t["table_name"] for t in multi["SubscribeMultiApplied"]["update"]["tables"]] == [
                "Player",
                "Note",
            ]
            single = await client.request(sub_single("SELECT * FROM *", 2))
            assert single["SubscriptionError"]["query_id"] == {"some": 2}
            one_off = await client.request(
                {"OneOffQuery": {"message_id": "01", "query_string": "SELECT * FROM *"}}
            )
            assert one_off["OneOffQueryResponse"]["error"]["some"]

    run(body)


def test_query_ref_counting_single_and_multi() -> None:
    high = "SELECT * FROM Player WHERE score >= 1000"

    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            first = (await client.request(sub_single(high, 1, 10)))["SubscribeApplied"]
            again = (await client.request(sub_single(high, 2, 11)))["SubscribeApplied"]
            assert first["rows"] == again["rows"]  # SubscribeSingle always repeats the rows
            update = (await client.request(call("SetScore", "[1, 1500]", 3)))["TransactionUpdate"]
            assert len(update["status"]["Committed"]["tables"][0]["updates"]) == 1  # one delta stream
            # a multi holding an already-held text does not repeat its rows
            multi = (await client.request(sub_multi([high, PLAYERS, PLAYERS], 3, 12)))[
                "SubscribeMultiApplied"
            ]
            (table,) = multi["update"]["tables"]
            assert table["num_rows"] == 2  # only PLAYERS, once
            # Unsubscribe of a text still held elsewhere releases nothing: error, but the id is gone
            error = await client.request({"Unsubscribe": {"request_id": 13, "query_id": {"id": 1}}})
            assert error["SubscriptionError"]["error"] == "Internal error"
            assert error["SubscriptionError"]["request_id"] == {"some": 13}
            assert error["SubscriptionError"]["query_id"] == {"some": 1}
            gone = await client.request({"Unsubscribe": {"request_id": 14, "query_id": {"id": 1}}})
            assert gone["SubscriptionError"]["error"].startswith("Subscription not found")
            # Unsubscribe of a multi set that releases exactly one query (high is still held by 2) works
            released = await client.request({"Unsubscribe": {"request_id": 15, "query_id": {"id": 3}}})
            assert released["UnsubscribeApplied"]["rows"]["table_rows"]["num_rows"] == 2
            # ... one that releases several does not: error, id gone, no rows
            await client.request(sub_multi(["SELECT * FROM Note", PLAYERS], 4, 17))
            error = await client.request({"Unsubscribe": {"request_id": 18, "query_id": {"id": 4}}})
            assert error["SubscriptionError"]["error"] == "Internal error"
            assert "SubscribeMultiApplied" in await client.request(sub_multi([PLAYERS], 4, 19))
            await client.request({"UnsubscribeMulti": {"request_id": 20, "query_id": {"id": 4}}})
            # query id 2 now holds `high` alone: its Unsubscribe releases it with the rows
            released = await client.request({"Unsubscribe": {"request_id": 16, "query_id": {"id": 2}}})
            deletes = rows(released["UnsubscribeApplied"]["rows"]["table_rows"], "deletes")
            assert [r["name"] for r in deletes] == ["alice"]  # form B, current state
            update = (await client.request(call("SetScore", "[1, 1600]", 4)))["TransactionUpdate"]
            assert update["status"]["Committed"]["tables"] == []

    run(body)


def test_unsubscribe_multi_only_returns_released_queries() -> None:
    alice, bob = "SELECT * FROM Player WHERE id = 1", "SELECT * FROM Player WHERE id = 2"

    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            await client.request(sub_single(alice, 1))
            applied = (await client.request(sub_multi([alice, bob], 2)))["SubscribeMultiApplied"]
            assert [rows(t)[0]["name"] for t in applied["update"]["tables"]] == ["bob"]
            released = await client.request({"UnsubscribeMulti": {"request_id": 5, "query_id": {"id": 2}}})
            tables = released["UnsubscribeMultiApplied"]["update"]["tables"]
            assert [rows(t, "deletes")[0]["name"] for t in tables] == ["bob"]
            # UnsubscribeMulti works on a SubscribeSingle's id too
            released = await client.request({"UnsubscribeMulti": {"request_id": 6, "query_id": {"id": 1}}})
            assert len(released["UnsubscribeMultiApplied"]["update"]["tables"]) == 1
            missing = await client.request({"UnsubscribeMulti": {"request_id": 7, "query_id": {"id": 1}}})
            assert "Subscription not found" in missing["SubscriptionError"]["error"]

    run(body)


def test_duplicate_query_id_and_bad_sql() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            await client.request(sub_single(PLAYERS, 1))
            duplicate = (await client.request(sub_multi(["SELECT * FROM Note"], 1, 2)))["SubscriptionError"]
            assert "Subscription with id QueryId { id: 1 } already exists" in duplicate["error"]
            assert (duplicate["request_id"], duplicate["query_id"]) == ({"some": 2}, {"some": 1})
            bad = await client.request(sub_multi(["SELECT * FROM Note", "SELECT * FROM Nope"], 5, 3))
            assert bad["SubscriptionError"]["error"].endswith(", executing: `SELECT * FROM Nope`")
            legacy = await client.request({"Subscribe": {"query_strings": ["SELECT nope"], "request_id": 4}})
            assert legacy["SubscriptionError"]["request_id"] == {"some": 4}
            assert legacy["SubscriptionError"]["query_id"] == {"none": []}
            assert legacy["SubscriptionError"]["table_id"] == {"none": []}
            # nothing was subscribed by the failed requests: id 5 is free
            assert "SubscribeMultiApplied" in await client.request(sub_multi(["SELECT * FROM Note"], 5))

    run(body)


def test_transaction_time_subscription_failure() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            await client.request(sub_single(PLAYERS, 1))
            server.break_subscriptions()
            error = (await client.recv())["SubscriptionError"]
            assert error["request_id"] == {"none": []} and error["query_id"] == {"none": []}
            assert (await client.request(call("SetScore", "[1, 2]", 1)))["TransactionUpdate"]["status"] == {
                "Committed": {"tables": []}
            }
            failed = await client.request({"Unsubscribe": {"request_id": 2, "query_id": {"id": 1}}})
            assert failed["SubscriptionError"]["error"].startswith("Client not found")
            assert "SubscribeApplied" in await client.request(sub_single(PLAYERS, 1))  # id 1 was cleared
            update = (await client.request(call("SetScore", "[1, 3]", 3)))["TransactionUpdate"]
            assert len(update["status"]["Committed"]["tables"]) == 1

    run(body)


def test_join_subscription_deltas() -> None:
    query = "SELECT p.* FROM Player p JOIN Account a ON p.name = a.nickname"

    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            unindexed = await client.request(
                sub_single("SELECT p.* FROM Player p JOIN Note n ON p.name = n.text", 9)
            )
            assert unindexed["SubscriptionError"]["error"].startswith(
                "Subscriptions require indexes on join columns"
            )
            applied = (await client.request(sub_single(query, 1)))["SubscribeApplied"]
            assert applied["rows"]["table_rows"]["num_rows"] == 0
            update = (await client.request(call("Deposit", '["bob", 5]', 2)))["TransactionUpdate"]
            (table,) = update["status"]["Committed"]["tables"]
            assert table["table_name"] == "Player"
            assert rows(table)[0]["name"] == "bob"  # join rows come from committed tables: form B
            update = (await client.request(call("Deposit", '["carl", 5]', 3)))["TransactionUpdate"]
            (table,) = update["status"]["Committed"]["tables"]
            assert rows(table, "deletes")[0]["name"] == "bob" and rows(table) == []

    run(body)


# -- one-off queries and procedures ------------------------------------------------------------


def test_one_off_query_message_id_and_errors() -> None:
    async def body() -> None:
        async with seeded() as server:
            client = await Client.connect(server)
            for sent in ("A3F1", [163, 241]):
                reply = (
                    await client.request({"OneOffQuery": {"message_id": sent, "query_string": PLAYERS}})
                )["OneOffQueryResponse"]
                assert reply["message_id"] == "a3f1" and reply["error"] == {"none": []}
                (table,) = reply["tables"]
                assert [json.loads(r)["name"] for r in table["rows"]] == ["alice", "bob"]
            reply = await client.request(
                {"OneOffQuery": {"message_id": "", "query_string": "DELETE FROM Player"}}
            )
            assert reply["OneOffQueryResponse"]["tables"] == []
            assert reply["OneOffQueryResponse"]["error"] == {"some": "Unsupported: Non-SELECT queries"}

    run(body)


def test_procedures() -> None:
    module = example_module()

    @module.procedure("Rename", [("id", U64), ("name", STRING)])
    def rename(ctx: ProcedureContext, id: int, name: str) -> Any:
        def tx(inner: ReducerContext) -> None:
            row = inner.db["Player"].find("id", id)
            assert row is not None
            inner.db["Player"].update(dataclasses.replace(row, name=name))

        ctx.with_tx(tx)
        if name == "boom":
            raise RuntimeError("exploded after commit")
        return ()

    async def body() -> None:
        server = SpacetimeDBEmulator(module)
        server.call_reducer("CreatePlayer", ["alice"])
        async with server:
            client = await Client.connect(server)
            await client.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            await client.send(
                {"CallProcedure": {"procedure": "Rename", "args": '[1,"ann"]', "request_id": 5, "flags": 0}}
            )
            committed = (await client.recv())["TransactionUpdate"]  # the commit comes first ...
            assert committed["reducer_call"]["reducer_name"] == ""
            assert committed["caller_connection_id"] == {"__connection_id__": 0}
            result = (await client.recv())["ProcedureResult"]  # ... then the result
            assert result["status"] == {"Returned": "[]"} and result["request_id"] == 5
            assert result["timestamp"]["__timestamp_micros_since_unix_epoch__"] > 0
            await client.send(
                {"CallProcedure": {"procedure": "Rename", "args": '[1,"boom"]', "request_id": 6, "flags": 0}}
            )
            await client.recv()
            failed = (await client.recv())["ProcedureResult"]
            assert failed == {
                "status": {
                    "InternalError": "The module instance encountered a fatal error: exploded after commit"
                },
                "timestamp": {"__timestamp_micros_since_unix_epoch__": 0},
                "total_host_execution_duration": {"__time_duration_micros__": 0},
                "request_id": 6,
            }
            missing = (
                await client.request(
                    {"CallProcedure": {"procedure": "Nope", "args": "[]", "request_id": 7, "flags": 0}}
                )
            )["ProcedureResult"]
            assert missing["status"] == {"InternalError": "No such procedure"} and missing["request_id"] == 7
            bad = (
                await client.request(
                    {"CallProcedure": {"procedure": "FindPlayer", "args": "[1]", "request_id": 8, "flags": 0}}
                )
            )["ProcedureResult"]
            assert bad["status"]["InternalError"].startswith("invalid arguments for procedure FindPlayer: ")
            found = (
                await client.request(
                    {
                        "CallProcedure": {
                            "procedure": "FindPlayer",
                            "args": '["zed"]',
                            "request_id": 9,
                            "flags": 0,
                        }
                    }
                )
            )["ProcedureResult"]
            assert found["status"] == {"Returned": "[1,[]]"}  # None, form C

    run(body)


def test_two_clients_see_each_others_transactions_in_order() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            a, b = await Client.connect(server), await Client.connect(server)
            for client in (a, b):
                await client.request({"Subscribe": {"query_strings": [PLAYERS], "request_id": 1}})
            await a.send(call("CreatePlayer", '["from-a"]', 1))
            await b.send(call("CreatePlayer", '["from-b"]', 1))
            seen_by_a = [
                rows((await a.recv())["TransactionUpdate"]["status"]["Committed"]["tables"][0])[0][2]
                for _ in range(2)
            ]
            seen_by_b = [
                rows((await b.recv())["TransactionUpdate"]["status"]["Committed"]["tables"][0])[0][2]
                for _ in range(2)
            ]
            assert seen_by_a == seen_by_b  # commit order, identical everywhere

    run(body)


def test_private_tables_only_for_the_owner() -> None:
    module = example_module()
    module.table("Secret", [Column("text", STRING)], public=False)

    async def body() -> None:
        server = SpacetimeDBEmulator(module)
        server.with_tx(lambda ctx: ctx.db.Secret.insert({"text": "hidden"}))
        assert server.owner_token is not None
        async with server:
            stranger = await Client.connect(server)
            owner = await Client.connect(server, token=server.owner_token)
            assert owner.identity == f"0x{server.owner.hex}"
            denied = await stranger.request(sub_single("SELECT * FROM Secret", 1))
            assert denied["SubscriptionError"]["error"].startswith("no such table: `Secret`")
            allowed = (await owner.request(sub_single("SELECT * FROM Secret", 1)))["SubscribeApplied"]
            assert rows(allowed["rows"]["table_rows"]) == [{"text": "hidden"}]
            star = await stranger.request(
                {"Subscribe": {"query_strings": ["SELECT * FROM *"], "request_id": 2}}
            )
            assert "Secret" not in [
                t["table_name"] for t in star["InitialSubscription"]["database_update"]["tables"]
            ]
            star = await owner.request({"Subscribe": {"query_strings": ["SELECT * FROM *"], "request_id": 2}})
            assert "Secret" in [
                t["table_name"] for t in star["InitialSubscription"]["database_update"]["tables"]
            ]

    run(body)
