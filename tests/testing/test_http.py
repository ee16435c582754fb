"""The HTTP endpoints (spec §2): identity, schema, sql, call, ping, database info, CORS, errors."""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from rx_spacetimedb.protocol.types import STRING
from rx_spacetimedb.protocol.values import Identity
from rx_spacetimedb.testing import (
    OutOfEnergyError,
    ProcedureContext,
    ReducerContext,
    ReducerError,
    SpacetimeDBEmulator,
    example_module,
)


@pytest.fixture(scope="module")
def server() -> Iterator[SpacetimeDBEmulator]:
    """One background emulator for the whole module (HTTP calls are independent)."""
    module = example_module()

    @module.procedure("Explode", [("how", STRING)])
    def explode(ctx: ProcedureContext, how: str) -> None:
        if how == "energy":
            raise OutOfEnergyError
        raise RuntimeError(how)

    with SpacetimeDBEmulator(module) as emulator:
        emulator.call_reducer("CreatePlayer", ["alice"])
        yield emulator


def request(
    server: SpacetimeDBEmulator,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request (errors included)."""
    req = urllib.request.Request(server.http_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_identity_and_its_token_work_everywhere(server: SpacetimeDBEmulator) -> None:
    status, headers, body = request(server, "POST", "/v1/identity")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    created = json.loads(body)
    assert Identity.from_hex(created["identity"]).hex == created["identity"]
    status, headers, _ = request(
        server,
        "POST",
        f"/v1/database/{server.database}/sql",
        b"SELECT * FROM Note",
        {"Authorization": f"Bearer {created['token']}"},
    )
    assert status == 200 and headers["spacetime-identity"] == created["identity"]
    status, _, body = request(
        server, "POST", "/v1/identity/websocket-token", b"", {"Authorization": f"Bearer {created['token']}"}
    )
    assert status == 200 and "token" in json.loads(body)
    assert request(server, "GET", "/v1/identity")[0] == 405


def test_anonymous_database_requests_get_minted_identity(server: SpacetimeDBEmulator) -> None:
    status, headers, _ = request(server, "GET", f"/v1/database/{server.database}/schema?version=9")
    assert status == 200
    assert len(headers["spacetime-identity"]) == 64 and headers["spacetime-identity-token"].count(".") == 2


def test_schema_errors(server: SpacetimeDBEmulator) -> None:
    status, _, body = request(server, "GET", f"/v1/database/{server.database}/schema")
    assert status == 400 and body.startswith(b"Failed to deserialize query string")
    assert request(server, "GET", f"/v1/database/{server.database}/schema?version=10")[0] == 400
    status, _, body = request(server, "GET", "/v1/database/nope/schema?version=9")
    assert (status, body) == (404, b"`nope` not found")
    by_identity = request(server, "GET", f"/v1/database/{server.identity.hex}/schema?version=9")
    assert by_identity[0] == 200
    schema = json.loads(by_identity[2])
    assert [t["name"] for t in schema["tables"]] == ["Player", "Note", "Account"]
    assert [r["name"] for r in schema["reducers"]][:3] == ["CreatePlayer", "SetScore", "DeletePlayer"]
    assert [e["Procedure"]["name"] for e in schema["misc_exports"]] == ["FindPlayer", "Explode"]


def test_sql(server: SpacetimeDBEmulator) -> None:
    path = f"/v1/database/{server.database}/sql"
    status, headers, body = request(server, "POST", path, b"SELECT * FROM Player WHERE name = 'alice';")
    assert status == 200 and int(headers["spacetime-execution-duration-micros"]) > 0
    (result,) = json.loads(body)
    assert list(result) == ["schema", "rows", "total_duration_micros", "stats"]
    assert result["rows"][0][2] == "alice"  # untyped form C
    assert [e["name"]["some"] for e in result["schema"]["elements"]][:3] == ["id", "identity", "name"]
    assert "Ref" not in json.dumps(result["schema"])  # fully resolved
    status, _, body = request(server, "POST", path, b"SELECT * FROM Player; SELECT * FROM Note")
    assert (status, body) == (400, b"Multiple SQL statements are not supported")
    status, _, body = request(server, "POST", path, b"SELECT * FROM Nope")
    assert status == 400 and body.startswith(b"no such table: `Nope`")
    status, _, body = request(server, "POST", path, b"SELECT * FROM Note", {"Authorization": "Basic x"})
    assert (status, body) == (400, b"Authorization is invalid: malformed token")
    status, _, body = request(server, "POST", path, b"SELECT * FROM Note", {"Authorization": "Bearer a.b.c"})
    assert status == 401 and body.startswith(b"Invalid token")


def test_call(server: SpacetimeDBEmulator) -> None:
    base = f"/v1/database/{server.database}/call"
    json_type = {"Content-Type": "application/json"}
    assert request(server, "POST", f"{base}/CreatePlayer", b'["http"]', json_type)[:1] == (200,)
    assert "http" in [p.name for p in server.table_rows("Player")]
    assert request(server, "POST", f"{base}/CreatePlayer", b'{"name": "http2"}', json_type)[0] == 200
    status, _, body = request(server, "POST", f"{base}/CreatePlayer", b'["http"]', json_type)
    assert (status, body) == (530, b'name "http" is already taken')
    status, _, body = request(server, "POST", f"{base}/CreatePlayer", b"[1]", json_type)
    assert status == 400 and body.startswith(b"invalid arguments for reducer CreatePlayer: ")
    assert request(server, "POST", f"{base}/CreatePlayer", b'["x"]')[0] == 415  # urllib sends a form type
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection.request("POST", f"{base}/CreatePlayer", body=b'["x"]')  # no Content-Type at all
    response = connection.getresponse()
    assert (response.status, response.read()) == (400, b"Missing `Content-Type` header")
    connection.close()
    assert request(server, "POST", f"{base}/CreatePlayer", b'["x"]', {"Content-Type": "text/plain"})[0] == 415
    status, _, body = request(server, "POST", f"{base}/Nope", b"[]", json_type)
    assert (status, body) == (404, b"No such procedure")
    status, _, body = request(server, "POST", f"{base}/FindPlayer", b'["alice"]', json_type)
    assert status == 200 and json.loads(body)[0] == 0 and json.loads(body)[1][2] == "alice"
    assert request(server, "POST", f"{base}/Explode", b'["energy"]', json_type)[0] == 402
    status, _, body = request(server, "POST", f"{base}/Explode", b'["boom"]', json_type)
    assert status == 500 and body.endswith(b"boom")


def test_misc_routes(server: SpacetimeDBEmulator) -> None:
    assert request(server, "GET", "/v1/ping")[:1] == (200,)
    status, _, body = request(server, "GET", f"/v1/database/{server.database}/identity")
    assert (status, body.decode()) == (200, server.identity.hex)
    status, _, body = request(server, "GET", f"/v1/database/{server.database}")
    assert status == 200 and json.loads(body)["database_identity"]["__identity__"].startswith("0xc200")
    assert request(server, "GET", "/nothing/here")[0] == 404
    assert request(server, "GET", f"/v1/database/{server.database}/subscribe")[0] == 426
    assert request(server, "OPTIONS", f"/v1/database/{server.database}/sql")[0] == 200


def test_identity_verify(server: SpacetimeDBEmulator) -> None:
    identity, token = server.mint_token()
    _, other = server.mint_token()
    path = f"/v1/identity/{identity.hex}/verify"
    assert request(server, "GET", path, headers={"Authorization": f"Bearer {token}"})[0] == 204
    assert request(server, "GET", path, headers={"Authorization": f"Bearer {other}"})[0] == 400
    assert request(server, "GET", path)[0] == 401


def test_call_runs_inside_its_own_connection() -> None:
    module = example_module()
    seen: list[str] = []

    @module.client_connected
    def connected(ctx: ReducerContext) -> None:
        seen.append(f"connected {ctx.connection_id is not None}")
        if ctx.db.Note.filter(text="closed"):
            raise ReducerError("we are closed")

    @module.client_disconnected
    def disconnected(ctx: ReducerContext) -> None:
        seen.append("disconnected")

    with SpacetimeDBEmulator(module) as emulator:
        path = f"/v1/database/{emulator.database}/call/AddNote"
        assert request(emulator, "POST", path, b'["hi"]', {"Content-Type": "application/json"})[0] == 200
        assert seen == ["connected True", "disconnected"]
        emulator.call_reducer("AddNote", ["closed"])
        status, _, body = request(emulator, "POST", path, b'["x"]', {"Content-Type": "application/json"})
        assert (status, body) == (403, b"we are closed")


def test_chunked_request_body(server: SpacetimeDBEmulator) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    body = iter([b"SELECT * FROM ", b"Player WHERE name = 'alice'"])
    connection.request(
        "POST",
        f"/v1/database/{server.database}/sql",
        body=body,
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())[0]["rows"][0][2] == "alice"
    connection.close()


def test_plain_http_requests_log_no_handshake_error(caplog: pytest.LogCaptureFixture) -> None:
    # websockets 15 and 16 logged "opening handshake failed" (an ERROR, with a traceback) for
    # every connection answered as plain HTTP; the demo printed it on stderr.
    with caplog.at_level(logging.INFO), SpacetimeDBEmulator(example_module()) as emulator:
        assert request(emulator, "GET", f"/v1/database/{emulator.database}/schema?version=9")[0] == 200
        assert request(emulator, "POST", "/v1/identity")[0] == 200
    # stopped: every connection handler has returned, so whatever it logs is in
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "server closed" in caplog.messages  # the server's logger is the one captured
