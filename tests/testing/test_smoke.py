"""Smoke tests of the emulator core: start/stop both ways, handshake, a reducer round trip."""

from __future__ import annotations

from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module
from tests.testing.helpers import Client, call, run


def test_sync_start_stop_and_direct_api() -> None:
    with SpacetimeDBEmulator(example_module()) as server:
        assert server.url == f"ws://127.0.0.1:{server.port}"
        assert server.database == "quickstart"
        server.call_reducer("CreatePlayer", ["alice"])
        (row,) = server.table_rows("Player")
        assert (row.id, row.name, row.score) == (1, "alice", 0)


def test_async_round_trip() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            client = await Client.connect(server)
            assert client.identity.startswith("0xc200")
            await client.request({"Subscribe": {"query_strings": ["SELECT * FROM Player"], "request_id": 1}})
            reply = await client.request(call("CreatePlayer", '["carol"]', 6))
            update = reply["TransactionUpdate"]
            assert update["reducer_call"]["request_id"] == 6
            assert update["status"]["Committed"]["tables"][0]["table_name"] == "Player"
            await client.close()

    run(body)
