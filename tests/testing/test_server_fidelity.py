"""Where the emulator answers as the real server does: database names, auth, token expiry, HTTP calls."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

import rx_spacetimedb
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.types import STRING
from rx_spacetimedb.testing import (
    ProcedureContext,
    SpacetimeDBEmulator,
    TokenError,
    TokenIssuer,
)
from rx_spacetimedb.testing.server import database_name_error
from tests.conftest import WAIT
from tests.testing.helpers import lifecycle_module


@pytest.fixture(scope="module")
def server() -> Iterator[SpacetimeDBEmulator]:
    with SpacetimeDBEmulator() as emulator:
        yield emulator


def request(
    server: SpacetimeDBEmulator, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    req = urllib.request.Request(server.http_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("quickstart", None),
        ("my-game-2", None),
        ("a", None),
        ("", "database names cannot be empty"),
        ("My_DB", "invalid characters in database name"),
        ("my_db", "invalid characters in database name"),
        ("-db", "invalid hyphen in database name"),
        ("db-", "invalid hyphen in database name"),
        ("d--b", "invalid hyphen in database name"),
        ("ab" * 32, "database names cannot be identities"),
    ],
)
def test_database_names_follow_the_server_rule(name: str, problem: str | None) -> None:
    assert database_name_error(name) == problem


def test_the_emulator_refuses_a_name_the_server_would_refuse() -> None:
    with pytest.raises(ValueError, match=r"database='My_DB': invalid characters in database name; the"):
        SpacetimeDBEmulator(database="My_DB")


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/v1/database/nope/schema?version=9", 404, b"`nope` not found"),
        (f"/v1/database/{'ab' * 32}/schema?version=9", 404, b"No such database."),
        (f"/v1/database/0x{'ab' * 32}/identity", 404, b"No such database."),
        ("/v1/database/My_DB/schema?version=9", 400, b"Invalid URL: invalid characters in database name"),
        ("/v1/database/a--b/identity", 400, b"Invalid URL: invalid hyphen in database name"),
    ],
)
def test_unknown_or_invalid_databases_over_http(
    server: SpacetimeDBEmulator, path: str, status: int, text: bytes
) -> None:
    assert request(server, "GET", path) == (status, text)


def test_an_unknown_database_identity_is_fatal_for_the_client(server: SpacetimeDBEmulator) -> None:
    conn = rx_spacetimedb.connect(server.url, "ab" * 32, reconnect_delay=0.01)
    with conn, pytest.raises(rx_spacetimedb.DatabaseNotFound):
        conn.wait_connected(timeout=WAIT)


def test_websocket_token_requires_credentials(server: SpacetimeDBEmulator) -> None:
    assert request(server, "POST", "/v1/identity/websocket-token", b"") == (401, b"Authorization required")
    status, body = request(server, "POST", "/v1/identity/websocket-token", b"", {"Authorization": "Bearer x"})
    assert status == 401 and body.startswith(b"Invalid token")
    _, token = server.mint_token()
    status, _ = request(server, "POST", f"/v1/identity/websocket-token?token={token}", b"")
    assert status == 200


def test_ping_checks_a_token_when_one_is_given(server: SpacetimeDBEmulator) -> None:
    assert request(server, "GET", "/v1/ping") == (200, b"")
    _, token = server.mint_token()
    assert request(server, "GET", "/v1/ping", headers={"Authorization": f"Bearer {token}"}) == (200, b"")
    status, body = request(server, "GET", "/v1/ping", headers={"Authorization": "Bearer a.b.c"})
    assert status == 401 and body.startswith(b"Invalid token")
    status, body = request(server, "GET", "/v1/ping?token=a.b.c")
    assert status == 401 and body.startswith(b"Invalid token")
    assert request(server, "GET", "/v1/ping", headers={"Authorization": "Basic x"}) == (
        400, b"Authorization is invalid: malformed token")
    assert request(server, "POST", "/v1/ping", b"")[0] == 405


def test_tokens_get_the_servers_60_second_expiry_leeway() -> None:
    issuer = TokenIssuer(secret=b"k" * 32)
    _, just_expired = issuer.mint("a", expires_in=-30)
    _, long_expired = issuer.mint("b", expires_in=-61)
    issuer.validate(just_expired)
    with pytest.raises(TokenError, match="ExpiredSignature"):
        issuer.validate(long_expired)


def test_with_tx_broadcasts_carry_reducer_id_0(server: SpacetimeDBEmulator) -> None:
    with rx_spacetimedb.connect(server.url, server.database, reconnect=False) as conn:
        conn.subscribe_single("SELECT * FROM Note").result(timeout=WAIT)
        seen: list[m.TransactionUpdate] = []
        conn.messages.subscribe(lambda msg: isinstance(msg, m.TransactionUpdate) and seen.append(msg))
        server.with_tx(lambda ctx: ctx.db["Note"].insert({"author": "sys", "text": "hello"}))
        conn.call_reducer("AddNote", ["barrier"]).result(timeout=WAIT)
    system = next(u for u in seen if u.reducer_call.reducer_name == "")
    assert system.reducer_call.reducer_id == 0


def test_http_calls_of_procedures_run_in_their_own_connection_too() -> None:
    seen: list[str] = []
    module = lifecycle_module(seen)

    @module.procedure("WhoCalls", [], returns=STRING)
    def who_calls(ctx: ProcedureContext) -> str:
        seen.append(f"procedure {ctx.connection_id is not None}")
        return "me"

    @module.procedure("Fails", [], returns=STRING)
    def fails(ctx: ProcedureContext) -> str:
        raise RuntimeError("boom")

    json_type = {"Content-Type": "application/json"}
    with SpacetimeDBEmulator(module) as emulator:
        base = f"/v1/database/{emulator.database}/call"
        assert request(emulator, "POST", f"{base}/WhoCalls", b"[]", json_type) == (200, b'"me"')
        assert seen == ["connected True", "procedure True", "disconnected"]
        seen.clear()
        assert request(emulator, "POST", f"{base}/Fails", b"[]", json_type) == (
            500, b"The module instance encountered a fatal error: boom")
        assert request(emulator, "POST", f"{base}/Nope", b"[]", json_type) == (404, b"No such procedure")
        assert seen == ["connected True", "disconnected"] * 2  # around failures and unknown names too
