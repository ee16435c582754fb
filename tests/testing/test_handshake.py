"""The WebSocket handshake (spec §1): success headers, identities and tokens, and every failure."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rx_spacetimedb.testing import ReducerContext, ReducerError, SpacetimeDBEmulator, example_module
from tests.testing.helpers import SUBPROTOCOL, Client, run


async def rejection(
    url: str, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None
) -> tuple[int, str]:
    """The status and body of a refused handshake."""
    protocols = [
        websockets.Subprotocol(p) for p in (subprotocols if subprotocols is not None else [SUBPROTOCOL])
    ]
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(
            url, subprotocols=protocols or None, additional_headers=headers, open_timeout=5
        )
    response = caught.value.response
    return response.status_code, response.body.decode()


def test_success_headers_identity_and_connection_id() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            client = await Client.connect(server)
            response = client.ws.response
            assert response is not None and response.status_code == 101
            assert client.ws.subprotocol == SUBPROTOCOL
            assert response.headers["spacetime-identity"] == client.identity[2:]
            assert response.headers["spacetime-identity-token"] == client.identity_token["token"]
            assert "Sec-WebSocket-Extensions" not in response.headers
            assert list(client.identity_token) == ["identity", "token", "connection_id"]
            ids = [client.connection_id]
            for _ in range(4):
                other = await Client.connect(server)
                ids.append(other.connection_id)
                await other.close()
            assert len(set(ids)) == 5 and max(ids) > 2**64

    run(body)


def test_same_token_same_identity_header_or_query() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            first = await Client.connect(server)
            token = first.identity_token["token"]
            by_header = await Client.connect(server, token=token)
            by_query = await Client.connect(server, f"token={token}")
            assert first.identity == by_header.identity == by_query.identity
            assert by_header.identity_token["token"] == token
            assert len({first.connection_id, by_header.connection_id, by_query.connection_id}) == 3
            identity, minted = server.mint_token()
            mine = await Client.connect(server, token=minted)
            assert mine.identity == f"0x{identity.hex}"

    run(body)


def test_header_takes_precedence_over_query_token() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            _, header_token = server.mint_token()
            client = await Client.connect(server, "token=garbage", token=header_token)
            assert client.identity_token["token"] == header_token

    run(body)


@pytest.mark.parametrize(
    ("query", "headers", "status", "body"),
    [
        ("", {"Authorization": "Basic abc"}, 400, "Authorization is invalid: malformed token"),
        ("", {"Authorization": "Bearer not.a.token"}, 401, "Invalid token: "),
        ("token=abc", None, 401, "Invalid token: "),
        ("light=yes", None, 400, "Failed to deserialize query string: "),
        ("confirmed=1", None, 400, "Failed to deserialize query string: "),
        ("compression=brotli", None, 400, "Failed to deserialize query string: "),
        (
            "connection_id=00000000000000000000000000000000",
            None,
            400,
            "Invalid connection ID: the all-zeros ConnectionId is reserved.",
        ),
        ("connection_id=xyz", None, 400, "Failed to deserialize query string: "),
    ],
)
def test_handshake_failures(query: str, headers: dict[str, str] | None, status: int, body: str) -> None:
    async def check() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            got = await rejection(f"{server.subscribe_url}?{query}", headers)
            assert got[0] == status
            assert got[1].startswith(body), got

    run(check)


def test_unknown_database_and_paths() -> None:
    async def check() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            assert await rejection(f"{server.url}/v1/database/nope/subscribe") == (404, "`nope` not found")
            status, text = await rejection(f"{server.url}/v1/database/{'ab' * 32}/subscribe")
            assert (status, text) == (404, "No such database.")
            status, text = await rejection(f"{server.url}/v1/database/bad%20name/subscribe")
            assert (status, text) == (400, "Invalid URL: invalid characters in database name")
            status, text = await rejection(f"{server.url}/v1/database/My_DB/subscribe")
            assert (status, text) == (400, "Invalid URL: invalid characters in database name")
            status, _ = await rejection(f"{server.url}/database/subscribe/{server.database}")
            assert status == 404
            # the database identity works as well as its name, with or without 0x
            for name in (server.identity.hex, "0x" + server.identity.hex):
                ws = await websockets.connect(
                    f"{server.url}/v1/database/{name}/subscribe",
                    subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
                )
                assert "IdentityToken" in json.loads(await ws.recv())
                await ws.close()

    run(check)


def test_subprotocol_negotiation() -> None:
    async def check() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            assert await rejection(server.subscribe_url, subprotocols=[]) == (
                400,
                "no valid protocol selected",
            )
            status, text = await rejection(
                server.subscribe_url, subprotocols=["v2.bsatn.spacetimedb", SUBPROTOCOL]
            )
            assert status == 400 and "v2.bsatn.spacetimedb" in text
            status, _ = await rejection(server.subscribe_url, subprotocols=["graphql-ws"])
            assert status == 400

    run(check)


def test_refuse_connections_then_accept() -> None:
    async def check() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            server.refuse_connections(2)
            assert (await rejection(server.subscribe_url))[0] == 503
            assert (await rejection(server.subscribe_url))[0] == 503
            client = await Client.connect(server)
            assert client.identity.startswith("0xc200")

    run(check)


def test_rejecting_client_connected_drops_tcp_without_message() -> None:
    module = example_module()

    @module.client_connected
    def connected(ctx: ReducerContext) -> None:
        if ctx.db["Player"].count() == 0:
            raise ReducerError("no players, no entry")

    async def check() -> None:
        async with SpacetimeDBEmulator(module) as server:
            ws = await websockets.connect(
                server.subscribe_url, subprotocols=[websockets.Subprotocol(SUBPROTOCOL)]
            )
            with pytest.raises(ConnectionClosed) as caught:
                await asyncio.wait_for(ws.recv(), 5)
            assert caught.value.rcvd is None  # no close frame: abnormal closure (1006)
            assert server.clients == []
            server.call_reducer("CreatePlayer", ["x"])
            client = await Client.connect(server)
            assert client.identity.startswith("0xc200")

    run(check)


def test_lifecycle_reducers_run_and_broadcast() -> None:
    module = example_module()

    @module.client_connected
    def connected(ctx: ReducerContext) -> None:
        ctx.db["Note"].insert({"author": ctx.sender.hex, "text": "hello"})

    @module.client_disconnected
    def disconnected(ctx: ReducerContext) -> None:
        ctx.db["Note"].insert({"author": ctx.sender.hex, "text": "bye"})

    async def check() -> None:
        async with SpacetimeDBEmulator(module) as server:
            watcher = await Client.connect(server)
            await watcher.request({"Subscribe": {"query_strings": ["SELECT * FROM Note"], "request_id": 1}})
            other = await Client.connect(server)
            hello = (await watcher.recv())["TransactionUpdate"]
            assert hello["reducer_call"]["reducer_name"] == "connected"
            assert hello["caller_connection_id"]["__connection_id__"] == other.connection_id
            await other.close()
            bye = (await watcher.recv())["TransactionUpdate"]
            assert bye["reducer_call"]["reducer_name"] == "disconnected"
            texts = sorted(row.text for row in server.table_rows("Note"))
            assert texts == ["bye", "hello", "hello"]

    run(check)


def test_short_lived_websocket_token_keeps_the_identity_and_is_echoed() -> None:
    with SpacetimeDBEmulator(example_module()) as server:
        identity, token = server.mint_token()
        request = urllib.request.Request(
            f"{server.http_url}/v1/identity/websocket-token",
            data=b"",
            method="POST",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            short = json.loads(response.read())["token"]
        assert short != token
        claims = json.loads(base64.urlsafe_b64decode(short.split(".")[1] + "=="))
        assert claims["exp"] - claims["iat"] == 60

        async def body() -> None:
            client = await Client.connect(server, f"token={short}")
            assert client.identity == f"0x{identity.hex}"
            assert client.identity_token["token"] == short  # the short-lived token comes back
            await client.close()

        run(body)


def test_identity_token_comes_first_even_if_the_client_talks_first() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(example_module()) as server:
            client = await Client.connect(server, read_identity=False)
            await client.send({"OneOffQuery": {"message_id": "01", "query_string": "SELECT * FROM Note"}})
            assert "IdentityToken" in await client.recv()
            assert "OneOffQueryResponse" in await client.recv()

    run(body)
