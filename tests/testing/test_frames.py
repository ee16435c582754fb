"""Byte-for-byte conformance with the spec's example frames (``shared/spec/examples``).

The scenario replays the spec's story (alice and bob, carol's CreatePlayer, ...) against the minimal
example module with a pinned clock and the client's ConnectionId chosen through ``connection_id``;
only what cannot be reproduced (durations, energy, the client's identity and token) is normalized.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from rx_spacetimedb.protocol.types import I32, IDENTITY, STRING, TIMESTAMP, U64, option_of
from rx_spacetimedb.protocol.values import Identity, Timestamp
from rx_spacetimedb.testing import (
    Column,
    Module,
    OutOfEnergyError,
    ReducerContext,
    SpacetimeDBEmulator,
    example_module,
)
from tests.protocol._examples import EXAMPLES
from tests.testing.helpers import Client, run

ALICE = Identity.from_hex("0xc20071130a560e3f5832e71f59bc7eea12eb08e3c12a8f2464a1bb7ba704976a")
BOB = Identity.from_hex("0xc200c6a52583da9e4abafaff736f162ff8d362069ffb478cdf33d09c06c2e106")
EXAMPLE_CLIENT = "c200ea03bbfbdfa380bd16d6b641122ad6bda68ddb1331198128cc9586c77b4a"
EXAMPLE_CONNECTION = 41279989226247141793968051798400034689
_VOLATILE = re.compile(
    r'("(?:total_host_execution_duration_micros|quanta|__time_duration_micros__|'
    r'total_duration_micros)":)\d+'
)

pytestmark = pytest.mark.skipif(not EXAMPLES.exists(), reason="spec examples not available")


def example(name: str) -> str:
    """The exact text of an example frame."""
    return (EXAMPLES / f"{name}.json").read_text()


def normalized(frame: str, expected: str, identity: str | None = None, token: str | None = None) -> str:
    """``frame`` with durations/energy copied from ``expected`` and the client's identity/token swapped."""
    wanted = iter(m.group(0) for m in _VOLATILE.finditer(expected))
    frame = _VOLATILE.sub(lambda _: next(wanted), frame)
    if identity is not None:
        frame = frame.replace(identity, EXAMPLE_CLIENT)
    if token is not None and expected.startswith('{"IdentityToken"'):
        frame = frame.replace(token, json.loads(expected)["IdentityToken"]["token"])
    return frame


class Clock:
    """A settable clock for the emulator, so timestamps match the examples."""

    def __init__(self) -> None:
        self.now = Timestamp(0)

    def __call__(self) -> Timestamp:
        return self.now


def seed(server: SpacetimeDBEmulator) -> None:
    """Insert alice and bob exactly as the examples show them."""

    def body(ctx: ReducerContext) -> None:
        players = ctx.db["Player"]
        players.insert(
            {
                "id": 1,
                "identity": ALICE,
                "name": "alice",
                "score": 1200,
                "created_at": Timestamp(1787217300123456),
                "location": {"x": 12.5, "y": -3.25},
            }
        )
        players.insert(
            {
                "id": 2,
                "identity": BOB,
                "name": "bob",
                "score": 950,
                "created_at": Timestamp(1787310164500000),
                "location": None,
            }
        )

    server.with_tx(body)


def test_schema_is_byte_identical() -> None:
    with SpacetimeDBEmulator(example_module(minimal=True)) as server:
        url = f"{server.http_url}/v1/database/{server.database}/schema?version=9"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            assert response.read().decode() == example("http-schema-v9-response")


def test_sql_response_is_byte_identical() -> None:
    with SpacetimeDBEmulator(example_module(minimal=True)) as server:
        seed(server)
        request = urllib.request.Request(
            f"{server.http_url}/v1/database/{server.database}/sql",
            data=b"SELECT * FROM Player",
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
            assert int(response.headers["spacetime-execution-duration-micros"]) >= 0
        expected = example("http-sql-response")
        assert normalized(body, expected) == expected


def test_identity_response_shape() -> None:
    with SpacetimeDBEmulator(example_module(minimal=True)) as server:
        request = urllib.request.Request(f"{server.http_url}/v1/identity", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
        expected = json.loads(example("http-identity-response"))
        assert list(body) == list(expected)
        assert re.fullmatch(r"c200[0-9a-f]{60}", body["identity"])
        header, payload, _signature = body["token"].split(".")
        claims = json.loads(_unb64(payload))
        expected_claims = json.loads(_unb64(expected["token"].split(".")[1]))
        assert list(claims) == list(expected_claims)
        assert claims["hex_identity"] == body["identity"]
        assert claims["aud"] == ["spacetimedb"] and claims["exp"] is None
        assert json.loads(_unb64(header)) == json.loads(_unb64(expected["token"].split(".")[0]))


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_the_spec_story_frame_by_frame() -> None:
    async def body() -> None:
        clock = Clock()
        server = SpacetimeDBEmulator(example_module(minimal=True), clock=clock)
        seed(server)
        async with server:
            client = await Client.connect(
                server, f"connection_id={EXAMPLE_CONNECTION:032x}", read_identity=False
            )
            first = await client.recv_raw()
            token = json.loads(first)["IdentityToken"]["token"]
            me = json.loads(first)["IdentityToken"]["identity"]["__identity__"][2:]

            def check(frame: str, name: str) -> None:
                expected = example(name)
                assert normalized(frame, expected, me, token) == expected, name

            check(first, "server-IdentityToken")
            await client.send(example("client-Subscribe"))
            check(await client.recv_raw(), "server-InitialSubscription")
            await client.send(example("client-SubscribeSingle"))
            check(await client.recv_raw(), "server-SubscribeApplied")
            await client.send(example("client-Unsubscribe"))
            check(await client.recv_raw(), "server-UnsubscribeApplied")
            await client.send(example("client-SubscribeMulti"))
            check(await client.recv_raw(), "server-SubscribeMultiApplied")
            await client.send(example("client-UnsubscribeMulti"))
            check(await client.recv_raw(), "server-UnsubscribeMultiApplied")

            clock.now = Timestamp(1787409005250000)
            await client.send(example("client-CallReducer"))
            check(await client.recv_raw(), "server-TransactionUpdate-committed")

            clock.now = Timestamp(1787409009731002)
            await client.send(example("client-CallReducer").replace('"request_id":6', '"request_id":7'))
            check(await client.recv_raw(), "server-TransactionUpdate-failed")

            await client.send(
                '{"SubscribeSingle":{"query":"SELECT * FROM Playr","request_id":9,"query_id":{"id":3}}}'
            )
            check(await client.recv_raw(), "server-SubscriptionError")

            await client.send(example("client-OneOffQuery"))
            check(await client.recv_raw(), "server-OneOffQueryResponse")

            clock.now = Timestamp(1787409130000100)
            await client.send(example("client-CallProcedure"))
            check(await client.recv_raw(), "server-ProcedureResult")
            await client.close()

    run(body)


def test_light_update_to_another_client() -> None:
    async def body() -> None:
        server = SpacetimeDBEmulator(example_module(minimal=True))
        seed(server)
        async with server:
            watcher = await Client.connect(server, "light=true")
            await watcher.request({"Subscribe": {"query_strings": ["SELECT * FROM Player"], "request_id": 1}})
            actor = await Client.connect(server)
            await actor.request(
                {"CallReducer": {"reducer": "SetScore", "args": "[2,1010]", "request_id": 41, "flags": 0}}
            )
            assert await watcher.recv_raw() == example("server-TransactionUpdateLight")

    run(body)


def test_out_of_energy_frame() -> None:
    module = Module()
    module.table(
        "Player",
        [
            Column("id", U64, primary_key=True, auto_inc=True),
            Column("identity", IDENTITY),
            Column("name", STRING),
            Column("score", I32),
            Column("created_at", TIMESTAMP),
            Column("location", option_of(STRING)),
        ],
    )

    @module.reducer("CreatePlayer", [("name", STRING)])
    def create_player(ctx: ReducerContext, name: str) -> None:
        ctx.db["Player"].insert(
            {"identity": ctx.sender, "name": name, "score": 0, "created_at": ctx.timestamp, "location": None}
        )
        raise OutOfEnergyError

    async def body() -> None:
        clock = Clock()
        clock.now = Timestamp(1787409060000513)
        async with SpacetimeDBEmulator(module, clock=clock) as server:
            client = await Client.connect(server, f"connection_id={EXAMPLE_CONNECTION:032x}")
            frame = await client.request(
                '{"CallReducer":{"reducer":"CreatePlayer","args":"[\\"dave\\"]","request_id":8,"flags":0}}'
            )
            expected = example("server-TransactionUpdate-outofenergy")
            raw = json.dumps(frame, separators=(",", ":"))
            assert normalized(raw, expected, client.identity[2:]) == expected
            assert server.table_rows("Player") == []  # rolled back

    run(body)


def test_client_examples_are_accepted() -> None:
    """Every client example frame is a valid message: the server answers instead of closing."""

    async def body() -> None:
        server = SpacetimeDBEmulator(example_module(minimal=True))
        seed(server)
        async with server:
            client = await Client.connect(server)
            for name in (
                "Subscribe",
                "SubscribeSingle",
                "Unsubscribe",
                "SubscribeMulti",
                "UnsubscribeMulti",
                "CallReducer",
                "OneOffQuery",
                "CallProcedure",
            ):
                reply: dict[str, Any] = await client.request(example(f"client-{name}"))
                assert "SubscriptionError" not in reply, (name, reply)

    run(body)
