"""Keepalive, close codes, fault injection, recording and thread-safety of the direct API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from rx_spacetimedb.protocol import decode_client_message
from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module
from tests.testing.helpers import Client, RawClient, call, run

PING, PONG, CLOSE, TEXT, CONTINUATION = 0x9, 0xA, 0x8, 0x1, 0x0


async def closed(client: Client) -> ConnectionClosed:
    """Read until the connection closes; return the exception that says how."""
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            await client.recv()
    return caught.value


def test_ping_at_start_and_idle_drop_without_close_frame() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module(), ping_interval=0.05, idle_timeout=0.3) as server:
            raw = await RawClient.connect(server)
            started = time.monotonic()
            seen: list[int] = []
            while (frame := await raw.frame()) is not None:
                seen.append(frame[0])
                if frame[0] == PING:
                    assert frame[2] == b""  # empty payload
            assert seen[:2] in ([TEXT, PING], [PING, TEXT])  # IdentityToken and the first ping at t~0
            assert seen.count(PING) == 1  # the next ping waits for a pong that never comes
            assert CLOSE not in seen  # dropped, no close frame
            assert 0.25 < time.monotonic() - started < 3
            await server.wait_for_clients_async(0)

    run(body)


def test_answered_pings_keep_the_connection_and_repeat() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module(), ping_interval=0.05, idle_timeout=0.3) as server:
            raw = await RawClient.connect(server)
            pings = 0
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                frame = await raw.frame()
                assert frame is not None, "dropped although every ping was answered"
                if frame[0] == PING:
                    pings += 1
                    await raw.send_frame(PONG, frame[2])
            assert pings >= 3
            raw.close()

    run(body)


def test_decode_errors_close_with_1011() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            short = '{"Unsubscribe":{"request_id":1}}'
            with pytest.raises(Exception) as expected:
                decode_client_message(short)
            client = await Client.connect(server)
            await client.send(short)
            error = await closed(client)
            assert error.rcvd is not None and error.rcvd.code == 1011
            assert error.rcvd.reason == str(expected.value)
            # a long decode error (unknown variant lists them all) is cut to 123 bytes
            client = await Client.connect(server)
            await client.send('{"Bogus":{}}')
            error = await closed(client)
            assert error.rcvd is not None and error.rcvd.code == 1011
            assert 0 < len(error.rcvd.reason.encode()) <= 123
            for frame in (
                '{"CallReducer":{"reducer":"x","args":[],"request_id":1,"flags":0}}',
                '{"CallReducer":{"reducer":"x","args":"[]","request_id":1.0,"flags":0}}',
                '{"CallReducer":{"reducer":"x","args":"[]","request_id":1,"flags":2}}',
                "not json",
            ):
                client = await Client.connect(server)
                await client.send(frame)
                error = await closed(client)
                assert error.rcvd is not None and error.rcvd.code == 1011, frame
            client = await Client.connect(server)
            await client.ws.send(b"\x00\x01")
            error = await closed(client)
            assert error.rcvd is not None and error.rcvd.code == 1011
            recorded = [c.received for c in server.history]
            assert recorded[0] == [short] and recorded[-1] == [b"\x00\x01"]

    run(body)


def test_oversized_message_is_refused() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module(), max_message_size=1000) as server:
            client = await Client.connect(server)
            await client.send(call("CreatePlayer", json.dumps(["x" * 2000])))
            error = await closed(client)
            assert error.rcvd is not None and error.rcvd.code == 1009  # emulator deviation: a close frame

    run(body)


def test_drop_all_close_all_and_recording() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            first, second = await Client.connect(server), await Client.connect(server)
            await first.request(call("CreatePlayer", '["a"]', 1))
            assert server.drop_all() == 2
            for client in (first, second):
                error = await closed(client)
                assert error.rcvd is None  # no close frame: 1006
            await server.wait_for_clients_async(0)
            assert [len(c.received) for c in server.history] == [1, 0]
            assert json.loads(server.history[0].received[0])["CallReducer"]["request_id"] == 1
            assert [json.loads(s) for s in server.history[0].sent][1]["TransactionUpdate"]
            third = await Client.connect(server)
            assert server.close_all(4000, "maintenance") == 1
            error = await closed(third)
            assert error.rcvd is not None and (error.rcvd.code, error.rcvd.reason) == (4000, "maintenance")
            fourth = await Client.connect(server)
            server.close_all()
            error = await closed(fourth)
            assert error.rcvd is not None and (error.rcvd.code, error.rcvd.reason) == (1001, "module exited")

    run(body)


def test_delay_inject_pause_resume() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            client = await Client.connect(server)
            server.set_delay(0.2)
            started = time.monotonic()
            await client.request({"OneOffQuery": {"message_id": "01", "query_string": "SELECT * FROM Note"}})
            assert time.monotonic() - started >= 0.2
            server.set_delay(0)
            server.inject('{"Surprise":{}}')
            assert await client.recv_raw() == '{"Surprise":{}}'
            server.inject(b"\x01\x02", server.clients[0])
            assert await client.ws.recv() == b"\x01\x02"
            server.pause()
            assert server.paused
            await client.send({"OneOffQuery": {"message_id": "02", "query_string": "SELECT * FROM Note"}})
            answer = asyncio.ensure_future(client.recv())
            pending = asyncio.ensure_future(Client.connect(server))  # handshakes wait too
            done, _ = await asyncio.wait([answer, pending], timeout=0.2)
            assert not done
            server.resume()
            assert (await answer)["OneOffQueryResponse"]["message_id"] == "02"
            late = await pending
            assert late.identity.startswith("0xc200")

    run(body)


def test_large_messages_are_fragmented_at_4_kib() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            server.call_reducer("AddNote", ["é" * 6000])
            raw = await RawClient.connect(server)
            first = await raw.frame()
            assert first is not None and first[0] == TEXT and first[1]  # IdentityToken: one frame
            query = b'{"OneOffQuery":{"message_id":"","query_string":"SELECT * FROM Note"}}'
            await raw.send_frame(TEXT, query)
            pieces: list[bytes] = []
            while True:
                frame = await raw.frame()
                assert frame is not None
                if frame[0] in (PING, PONG):
                    continue
                assert len(frame[2]) <= 4096
                pieces.append(frame[2])
                if frame[1]:
                    break
            assert len(pieces) >= 3
            assert json.loads(b"".join(pieces))["OneOffQueryResponse"]["error"] == {"none": []}
            raw.close()

    run(body)


def test_sync_server_is_usable_from_other_threads() -> None:
    with SpacetimeDBEmulator(example_module()) as server:

        async def body() -> None:
            client = await Client.connect(server)
            await client.request({"Subscribe": {"query_strings": ["SELECT * FROM Player"], "request_id": 1}})
            server.call_reducer("CreatePlayer", ["threaded"])  # marshalled onto the server's loop
            update = await client.recv()
            assert update["TransactionUpdate"]["reducer_call"]["reducer_name"] == "CreatePlayer"
            await client.close()

        run(body)
        server.wait_for_clients(0)
        assert [p.name for p in server.table_rows("Player")] == ["threaded"]
        assert server.sql("SELECT * FROM Player WHERE name = 'threaded'")[0].id == 1
    with pytest.raises(RuntimeError):
        _ = server.port


def test_many_clients_at_once() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            clients = await asyncio.gather(*(Client.connect(server) for _ in range(30)))
            await asyncio.gather(
                *(
                    c.request({"Subscribe": {"query_strings": ["SELECT * FROM Player"], "request_id": 1}})
                    for c in clients
                )
            )
            await asyncio.gather(
                *(c.send(call("CreatePlayer", json.dumps([f"p{i}"]), i)) for i, c in enumerate(clients))
            )

            async def read_all(client: Client) -> list[dict[str, Any]]:
                return [await client.recv() for _ in range(30)]

            updates = await asyncio.gather(*(read_all(c) for c in clients))
            orders = [
                [
                    json.loads(
                        u["TransactionUpdate"]["status"]["Committed"]["tables"][0]["updates"][0]["inserts"][0]
                    )[0]
                    for u in per_client
                ]
                for per_client in updates
            ]
            assert all(order == orders[0] for order in orders)  # everyone sees one commit order
            assert sorted(orders[0]) == list(range(1, 31))
            assert len({c.connection_id for c in clients}) == 30

    run(body)


def test_cli_serve_prints_its_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rx_spacetimedb.testing", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "ws://127.0.0.1:" in line and "quickstart" in line
        url = line.split("subscribe: ")[1].rstrip(")\n")

        async def body() -> None:
            ws = await websockets.connect(url, subprotocols=[websockets.Subprotocol("v1.json.spacetimedb")])
            assert "IdentityToken" in json.loads(await ws.recv())
            await ws.close()

        run(body)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_queue_limits() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module(), queue_limit=5) as server:
            flooder = await Client.connect(server)
            server.pause()  # nothing is processed: client messages pile up
            for i in range(8):
                await flooder.send(
                    {"OneOffQuery": {"message_id": f"{i:02x}", "query_string": "SELECT * FROM Note"}}
                )
            error = await closed(flooder)
            assert error.rcvd is not None and (error.rcvd.code, error.rcvd.reason) == (
                1013,
                "too many requests",
            )
            server.resume()
            watcher = await Client.connect(server)
            await watcher.request({"Subscribe": {"query_strings": ["SELECT * FROM Player"], "request_id": 1}})
            server.pause()  # nothing is sent: server messages pile up
            for i in range(8):
                server.call_reducer("CreatePlayer", [f"p{i}"])
            error = await closed(watcher)
            assert error.rcvd is None  # outgoing overflow: dropped without a close frame
            server.resume()

    run(body)


def test_drop_or_close_one_client() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            first, second = await Client.connect(server), await Client.connect(server)
            on_server = {c.connection_id.value: c for c in server.clients}
            server.drop_client(on_server[first.connection_id])
            assert (await closed(first)).rcvd is None
            server.close_client(on_server[second.connection_id], 4001, "just you")
            error = await closed(second)
            assert error.rcvd is not None and (error.rcvd.code, error.rcvd.reason) == (4001, "just you")

    run(body)
