"""The HTTP endpoints (identity, schema, sql, call, ping, ...) beside the WebSocket on one port.

``HttpConnection`` sniffs each new connection: a WebSocket upgrade goes to websockets, any other
request (websockets parses only body-less GETs) is answered here by ``HttpMixin._http``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection

from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.jsontext import dumps
from rx_spacetimedb.protocol.types import (
    AlgebraicType,
    ArrayType,
    Element,
    ProductType,
    SumType,
    Variant,
    product_to_json,
)
from rx_spacetimedb.protocol.values import ConnectionId, Identity
from rx_spacetimedb.testing._base import FATAL_PREFIX, NO_REDUCER_ID, EmulatedClient, micros_since
from rx_spacetimedb.testing._reducers import ReducersMixin
from rx_spacetimedb.testing.auth import TokenError
from rx_spacetimedb.testing.module import OutOfEnergyError, ProcedureContext, ReducerError
from rx_spacetimedb.testing.sql import Dml, SqlError, compile_statement

__all__ = ["HttpConnection", "HttpMixin", "database_name_error"]

log = logging.getLogger("rx_spacetimedb.testing")

_Reply = tuple[int, str, dict[str, str], bytes]
"""An HTTP answer: status, reason, headers, body."""


class HttpConnection(ServerConnection):
    """A websockets server connection that first sniffs the request: plain HTTP is served directly.

    websockets only parses body-less GET handshakes, so POST endpoints with bodies are answered here
    before the WebSocket machinery sees the bytes.
    """

    emulator: HttpMixin

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sniff: bytearray | None = bytearray()
        self.last_activity = self.loop.time()
        self.client: EmulatedClient | None = None

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self._sniff is None:
            super().data_received(data)
            return
        self._sniff += data
        end = self._sniff.find(b"\r\n\r\n")
        if end < 0:
            if len(self._sniff) > 65536:
                self.transport.abort()
            return
        head = bytes(self._sniff[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method = parts[0] if parts else ""
        is_upgrade = method == "GET" and "websocket" in headers.get("upgrade", "").lower()
        if is_upgrade:
            buffered = bytes(self._sniff)
            self._sniff = None
            super().data_received(buffered)
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunked = _dechunk(bytes(self._sniff[end + 4 :]))
            if chunked is None:
                return  # wait for the last chunk
            body = chunked
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                length = 0
            if len(self._sniff) < end + 4 + length:
                return
            body = bytes(self._sniff[end + 4 : end + 4 + length])
        self._sniff = None
        target = parts[1] if len(parts) > 1 else "/"
        try:
            status, reason, extra, payload = self.emulator._http(method, target, headers, body)
        except Exception as err:  # never let a request crash the server
            log.exception("HTTP handler failed")
            status, reason, extra, payload = 500, "Internal Server Error", {}, str(err).encode()
        out = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            "Access-Control-Allow-Origin: *",
        ]
        out += [f"{k}: {v}" for k, v in extra.items()]
        self.transport.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
        self.transport.close()
        self.logger = _AnsweredAsHttp(self.logger)


class _AnsweredAsHttp(logging.LoggerAdapter[Any]):
    """The logger of a connection answered as plain HTTP, without its handshake error.

    websockets still waits for the WebSocket handshake on that connection; when it closes, 15 and
    16 log "opening handshake failed" as an error with a traceback (17 says nothing). Every schema
    fetch or identity request would print one.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if msg != "opening handshake failed":
            self.logger.log(level, msg, *args, **kwargs)


def _dechunk(data: bytes) -> bytes | None:
    """The body of a chunked HTTP request, or None while its last chunk has not arrived."""
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(data[position:line_end].split(b";")[0], 16)
        except ValueError:
            return bytes(body)  # malformed: answer with what there is
        if size == 0:
            return bytes(body)
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        position = start + size + 2


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    404: "Not Found",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    426: "Upgrade Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
    530: "Reducer Error",
}


class HttpMixin(ReducersMixin):
    """Answers plain HTTP requests as the server's ``client-api`` routes do."""

    def _check_database(self, name: str) -> tuple[int, str] | None:
        """None if ``name`` is this database; else (status, body) as the real server answers.

        An unknown name or identity is a 404 (fatal for clients: ``DatabaseNotFound``), a name the
        server cannot parse a 400 (axum's path rejection).
        """
        text = name[2:] if name.startswith(("0x", "0X")) else name
        if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            return None if int(text, 16) == self.identity.value else (404, "No such database.")
        problem = database_name_error(name)
        if problem is not None:
            return 400, f"Invalid URL: {problem}"
        if name != self.database:
            return 404, f"`{name}` not found"
        return None

    def _http(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, dict[str, str], bytes]:
        """Answer one plain HTTP request: (status, reason, headers, body)."""
        split = urlsplit(target)
        segments = split.path.split("/")
        params = dict(parse_qsl(split.query, keep_blank_values=True))

        def reply(
            status: int,
            payload: bytes | str = b"",
            extra: dict[str, str] | None = None,
            json_body: bool = False,
        ) -> tuple[int, str, dict[str, str], bytes]:
            data = payload.encode() if isinstance(payload, str) else payload
            hdrs = dict(extra or {})
            hdrs.setdefault("Content-Type", "application/json" if json_body else "text/plain; charset=utf-8")
            return status, _REASONS.get(status, "Unknown"), hdrs, data

        if method == "OPTIONS":
            return reply(
                200,
                extra={
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "*",
                },
            )
        if split.path == "/v1/ping":
            if method != "GET":
                return reply(405)
            if "authorization" in headers or "token" in params:  # checked when given, as the server does
                auth = self._http_auth(headers, params)
                if isinstance(auth, str):
                    return reply(401 if auth.startswith("Invalid token") else 400, auth)
            return reply(200)
        if split.path == "/v1/identity":
            if method != "POST":
                return reply(405)
            identity, token = self.tokens.mint()
            return reply(200, dumps({"identity": identity.hex, "token": token}), json_body=True)
        if len(segments) == 5 and segments[:3] == ["", "v1", "identity"] and segments[4] == "verify":
            if method != "GET":
                return reply(405)
            has_credentials = "authorization" in headers or "token" in params
            auth = self._http_auth(headers, params) if has_credentials else ""
            if not isinstance(auth, tuple):
                return reply(401 if auth.startswith("Invalid token") or not auth else 400, auth)
            try:
                claimed = Identity.from_hex(segments[3])
            except ValueError:
                return reply(400, f"Invalid identity: {segments[3]}")
            return reply(204) if claimed == auth[0] else reply(400)
        if split.path == "/v1/identity/websocket-token" and method == "POST":
            if "authorization" not in headers and "token" not in params:
                return reply(401, "Authorization required")
            auth = self._http_auth(headers, params)
            if not isinstance(auth, tuple):
                return reply(401 if auth else 400, auth or "Authorization is invalid: malformed token")
            claims = self.tokens.validate(auth[1])
            _, short = self.tokens.mint(claims.subject, issuer=claims.issuer, expires_in=60)
            return reply(200, dumps({"token": short}), json_body=True)
        if len(segments) >= 4 and segments[:3] == ["", "v1", "database"]:
            name = unquote(segments[3])
            problem = self._check_database(name)
            if problem is not None:
                return reply(*problem)
            rest = segments[4:]
            if rest == ["subscribe"]:
                return reply(426 if method == "GET" else 405, "upgrade required" if method == "GET" else "")
            auth = self._http_auth(headers, params)
            if isinstance(auth, str):
                return reply(401 if auth.startswith("Invalid token") else 400, auth)
            identity, token = auth
            ident_headers = {"spacetime-identity": identity.hex, "spacetime-identity-token": token}
            if rest in ([], [""]) and method == "GET":
                info = {
                    "database_identity": {"__identity__": f"0x{self.identity.value:x}"},
                    "owner_identity": {"__identity__": f"0x{(self.owner or self.identity).value:x}"},
                    "host_type": {"Wasm": []},
                    "initial_program": "0x0",
                }
                return reply(200, dumps(info), ident_headers, json_body=True)
            if rest == ["identity"] and method == "GET":
                return reply(200, self.identity.hex, ident_headers)
            if rest == ["schema"] and method == "GET":
                if "version" not in params:
                    return reply(400, "Failed to deserialize query string: missing field `version`")
                if params["version"] != "9":
                    return reply(
                        400,
                        f"Failed to deserialize query string: the emulator serves only version=9, "
                        f"got {params['version']}",
                    )
                return reply(200, dumps(self.schema.to_json()), ident_headers, json_body=True)
            if rest == ["sql"] and method == "POST":
                return self._http_sql(body, identity, ident_headers, reply)
            if len(rest) == 2 and rest[0] == "call" and method == "POST":
                return self._http_call(unquote(rest[1]), headers, body, identity, ident_headers, reply)
            return reply(404)
        return reply(404)

    def _http_auth(self, headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[Identity, str] | str:
        """(identity, token) of the request, minting an anonymous one; or the error text."""
        auth = headers.get("authorization")
        token: str | None = None
        if auth is not None:
            if not auth.startswith("Bearer "):
                return "Authorization is invalid: malformed token"
            token = auth[len("Bearer ") :].strip()
        elif "token" in params:
            token = params["token"]
        if token is None:
            return self.tokens.mint()
        try:
            return self.tokens.validate(token).identity, token
        except TokenError as err:
            return str(err)

    def _http_sql(
        self,
        body: bytes,
        identity: Identity,
        ident_headers: dict[str, str],
        reply: Callable[..., _Reply],
    ) -> _Reply:
        """``POST /sql``: one statement of the /sql grammar, inside its own short-lived connection."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return reply(400, "Request body didn't contain valid UTF-8")
        return self._in_connection(
            identity, ident_headers, reply, lambda _: self._run_sql(text, identity, ident_headers, reply)
        )

    def _run_sql(
        self, text: str, identity: Identity, ident_headers: dict[str, str], reply: Callable[..., _Reply]
    ) -> _Reply:
        start = time.perf_counter()
        stats = {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0}
        schema: dict[str, Any] = {"elements": []}
        rows: list[Any] = []
        try:
            statement = compile_statement(text, self.db, sender=identity, is_owner=identity == self.owner)
            if isinstance(statement, Dml):
                counts = self._system_tx(lambda ctx: statement.apply(ctx.db), identity, NO_REDUCER_ID)
                stats = dict(zip(stats, counts, strict=True))
            elif statement.outputs is not None:
                resolve = self.schema.codec.resolve
                outputs = ProductType(tuple(Element(n, ty) for n, _, _, ty in statement.outputs))
                schema = product_to_json(_inline(outputs, resolve))
                encoders = [self.schema.codec.encoder(ty, "C") for _, _, _, ty in statement.outputs]
                rows = [
                    [encode(v) for encode, v in zip(encoders, values, strict=True)]
                    for values in statement.values(self.db)
                ]
            else:
                encoder = self.db.stores[statement.table_name].encoder_c
                assert statement.table.ref is not None
                schema = product_to_json(
                    _inline(self.schema.codec.resolve(statement.table.ref), self.schema.codec.resolve)
                )
                found = statement.rows(self.db)
                rows = [encoder(r) for r in found[: statement.limit]]
        except (SqlError, ReducerError) as err:
            return reply(400, str(err))
        micros = micros_since(start)
        result = [{"schema": schema, "rows": rows, "total_duration_micros": micros, "stats": stats}]
        return reply(
            200,
            dumps(result),
            {**ident_headers, "spacetime-execution-duration-micros": str(micros)},
            json_body=True,
        )

    def _in_connection(
        self,
        identity: Identity,
        ident_headers: dict[str, str],
        reply: Callable[..., _Reply],
        run: Callable[[ConnectionId], _Reply],
    ) -> _Reply:
        """Answer an HTTP request inside its own short-lived connection, as the server does for
        ``/call`` and ``/sql`` (``with_connection``): a new connection id, ``client_connected`` first
        (its refusal is a 403), ``client_disconnected`` afterwards whatever happened.
        """
        connection_id = ConnectionId(secrets.randbits(128) or 1)
        connected = self.module.lifecycle("OnConnect")
        if connected is not None:
            hello = self._run_reducer_tx(connected.name, (), identity, connection_id, 0, "[]")
            if isinstance(hello, m.Failed):
                return reply(403, hello.message, ident_headers)
            if isinstance(hello, m.OutOfEnergy):
                return reply(503, "out of energy", ident_headers)
        try:
            return run(connection_id)
        finally:
            disconnected = self.module.lifecycle("OnDisconnect")
            if disconnected is not None:
                self._run_reducer_tx(disconnected.name, (), identity, connection_id, 0, "[]")

    def _http_call(
        self,
        name: str,
        headers: Mapping[str, str],
        body: bytes,
        identity: Identity,
        ident_headers: dict[str, str],
        reply: Callable[..., tuple[int, str, dict[str, str], bytes]],
    ) -> tuple[int, str, dict[str, str], bytes]:
        content_type = headers.get("content-type")
        if content_type is None:
            return reply(400, "Missing `Content-Type` header")
        if content_type != "application/json":
            return reply(415, "Expected request with `Content-Type: application/json`")
        text = body.decode(errors="replace")
        # reducer or procedure, found or not: the call runs in its own connection
        return self._in_connection(
            identity,
            ident_headers,
            reply,
            lambda connection_id: self._http_invoke(
                name, text, identity, connection_id, ident_headers, reply
            ),
        )

    def _http_invoke(
        self,
        name: str,
        text: str,
        identity: Identity,
        connection_id: ConnectionId,
        ident_headers: dict[str, str],
        reply: Callable[..., tuple[int, str, dict[str, str], bytes]],
    ) -> tuple[int, str, dict[str, str], bytes]:
        """Find and run the reducer or procedure of an HTTP call inside its connection."""
        procedure = self.module.procedure_spec(name)
        reducer = self.module.reducer_spec(name)
        if reducer is None and procedure is None:
            return reply(404, "No such procedure")
        kind = "reducer" if reducer is not None else "procedure"
        params = reducer.params if reducer is not None else procedure.params  # type: ignore[union-attr]
        if reducer is not None and reducer.lifecycle is not None:
            return reply(400, f"can't directly call special {reducer.lifecycle} lifecycle reducer")
        try:
            values = self._decode_args(params, text)
        except ValueError as err:
            return reply(400, f"invalid arguments for {kind} {name}: {err}")
        if reducer is not None:
            status = self._run_reducer_tx(name, values, identity, connection_id, 0, text)
            extra = {
                **ident_headers,
                "spacetime-energy-used": "0",
                "spacetime-execution-duration-micros": "0",
            }
            if isinstance(status, m.Failed):
                return reply(530, status.message, extra)
            if isinstance(status, m.OutOfEnergy):
                return reply(402, "Module energy budget exhausted.", extra)
            return reply(200, b"", extra)
        assert procedure is not None
        ctx = ProcedureContext(
            identity,
            connection_id,
            self.clock(),
            self.db.view(),
            self.identity,
            lambda b: self._system_tx(b),
        )
        try:
            result = procedure.func(ctx, *values)
            returned = dumps(self.schema.codec.encoder(procedure.returns, "C")(result))
        except OutOfEnergyError:
            return reply(402, "Procedure terminated due to insufficient budget", ident_headers)
        except Exception as err:
            return reply(500, f"{FATAL_PREFIX}{str(err) or type(err).__name__}", ident_headers)
        return reply(200, returned, ident_headers, json_body=True)


def _inline(ty: AlgebraicType, resolve: Callable[[AlgebraicType], AlgebraicType]) -> ProductType:
    """A product type with every Ref replaced by its definition (the /sql ``schema``)."""

    def go(t: AlgebraicType) -> AlgebraicType:
        t = resolve(t)
        if isinstance(t, ArrayType):
            return ArrayType(go(t.elem))
        if isinstance(t, ProductType):
            return ProductType(tuple(Element(e.name, go(e.type)) for e in t.elements))
        if isinstance(t, SumType):
            return SumType(tuple(Variant(v.name, go(v.type)) for v in t.variants))
        return t

    result = go(ty)
    assert isinstance(result, ProductType)
    return result


def database_name_error(name: str) -> str | None:
    """Why the server would refuse ``name`` as a database name (``parse_database_name``), or None.

    Names are lowercase ASCII letters and digits, with single hyphens between them.
    """
    if not name:
        return "database names cannot be empty"
    if len(name) == 64 and all(c in "0123456789abcdefABCDEF" for c in name):
        return "database names cannot be identities"
    for index, char in enumerate(name):
        if char == "-":
            if index == 0 or index == len(name) - 1 or name[index + 1] == "-":
                return "invalid hyphen in database name"
        elif not ("a" <= char <= "z" or "0" <= char <= "9"):
            return "invalid characters in database name"
    return None
