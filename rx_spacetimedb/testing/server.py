"""The emulator server: ``v1.json.spacetimedb`` over WebSocket plus the HTTP endpoints, on loopback.

``SpacetimeDBEmulator`` runs one database of a ``Module`` on 127.0.0.1 with an ephemeral port::

    with SpacetimeDBEmulator(example_module()) as server:      # background thread, own event loop
        connect(server.url, server.database)                   # ws://127.0.0.1:PORT, "quickstart"

    async with SpacetimeDBEmulator(example_module()) as server:  # on the running loop
        ...

Everything the spec describes for one database is reproduced: the handshake and its failures,
``IdentityToken`` first, every client message with its reply shapes, subscription ref-counting, the
caller/others split of transaction updates, keepalive pings and idle drop, close codes. Faults can be
injected (``drop_all``, ``close_all``, ``refuse_connections``, ``delay``, ``inject``, ``pause``) and
every client frame is recorded per connection (``server.clients``, ``server.history``).

Methods are safe to call from any thread: from a foreign thread they run on the server's loop and
wait for the result.

With ``data_dir=`` the database survives restarts (signing key and commit log on disk, see
``_storage``); ``restart()`` stops and starts again on the same port.

Deliberate differences from the real server (all documented in the README):

* tokens are HMAC-signed JWT-shaped tokens of this emulator (others get 401); identities are
  derived from ``(iss, sub)`` as the server derives them (BLAKE3);
* Close 1011 reasons are cut to 123 bytes (spec §8.3); oversized messages get Close 1009;
* only ``v1.json.spacetimedb``: an offer including a binary protocol gets HTTP 400 instead of being
  answered in BSATN; every message is sent after its transaction is durable, so ``confirmed=false``
  behaves as ``confirmed=true``;
* no row-level security, views, event tables, private reducers, SQL DML or query row limits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets import exceptions as wsx
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from rx_spacetimedb._redact import RedactingLogger
from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import decode_client_message, encode_server_message
from rx_spacetimedb.protocol.jsontext import dumps, loads_exact
from rx_spacetimedb.protocol.sats import field_name
from rx_spacetimedb.protocol.types import (
    AlgebraicType,
    ArrayType,
    Element,
    ProductType,
    SumType,
    Variant,
    product_to_json,
)
from rx_spacetimedb.protocol.values import (
    ConnectionId,
    EnergyQuanta,
    Identity,
    ScheduleAt,
    TimeDuration,
    Timestamp,
)
from rx_spacetimedb.testing._storage import (
    CommitLog,
    Recovery,
    commit_record,
    open_data_dir,
    replay,
    schema_digest,
    signing_key,
)
from rx_spacetimedb.testing.auth import TokenError, TokenIssuer, identity_from_claims
from rx_spacetimedb.testing.module import (
    Database,
    Module,
    OutOfEnergyError,
    ProcedureContext,
    ReducerContext,
    ReducerError,
    Transaction,
)
from rx_spacetimedb.testing.sql import (
    Dml,
    Query,
    SqlError,
    compile_query,
    compile_statement,
    is_select_star_from_star,
)

__all__ = ["EmulatedClient", "SUBPROTOCOL", "SpacetimeDBEmulator"]

log = logging.getLogger("rx_spacetimedb.testing")

SUBPROTOCOL: Final = "v1.json.spacetimedb"
_PREFERENCE: Final = ("v3.bsatn.spacetimedb", "v2.bsatn.spacetimedb", "v1.bsatn.spacetimedb", SUBPROTOCOL)
_NO_REDUCER_ID: Final = 4294967295
_FATAL: Final = "The module instance encountered a fatal error: "
"""The server's prefix of a procedure's failure text (``ProcedureCallError::InternalError``)."""
_MAX_MESSAGE: Final = 33554432
_QUEUE_LIMIT: Final = 16384
_CLOSE_REASON_BYTES: Final = 123
_T = TypeVar("_T")
_Reply = tuple[int, str, dict[str, str], bytes]
"""An HTTP answer: status, reason, headers, body."""


def _truncate_reason(text: str) -> str:
    """Cut a close reason to 123 bytes at a UTF-8 character boundary (spec §8.3)."""
    data = text.encode()
    if len(data) <= _CLOSE_REASON_BYTES:
        return text
    return data[:_CLOSE_REASON_BYTES].decode(errors="ignore")


def _fragments(text: str, size: int) -> list[str]:
    """Split a message into pieces of at most ``size`` UTF-8 bytes, at character boundaries."""
    data = text.encode()
    if len(data) <= size:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + max(size, 4), len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def _micros_since(start: float) -> int:
    return max(1, int((time.perf_counter() - start) * 1_000_000))


@dataclasses.dataclass(eq=False)
class EmulatedClient:
    """One WebSocket connection as the emulator sees it, with everything it received and sent.

    ``received`` holds every client data frame (text as ``str``, binary as ``bytes``) in arrival
    order, ``sent`` every frame the server sent; both exist for assertions in tests.
    """

    identity: Identity
    token: str = dataclasses.field(repr=False)
    connection_id: ConnectionId
    light: bool = False
    confirmed: bool = False
    received: list[str | bytes] = dataclasses.field(default_factory=list, repr=False)
    sent: list[str | bytes] = dataclasses.field(default_factory=list, repr=False)
    connected: bool = False
    close_code: int | None = None
    legacy: dict[str, Query] = dataclasses.field(default_factory=dict, repr=False)
    query_sets: dict[int, list[str]] = dataclasses.field(default_factory=dict, repr=False)
    refs: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    compiled: dict[str, Query] = dataclasses.field(default_factory=dict, repr=False)
    dropped: bool = False
    """True after a transaction-time ``SubscriptionError``: subscriptions are dead until re-subscribed."""
    _ws: ServerConnection | None = dataclasses.field(default=None, repr=False)
    _queue: asyncio.Queue[tuple[float, str | bytes | tuple[int, str]]] | None = dataclasses.field(
        default=None, repr=False
    )
    _closed: asyncio.Event | None = dataclasses.field(default=None, repr=False)

    def messages(self) -> list[m.ServerMessage]:
        """The decoded server messages sent to this client (for assertions).

        Tests can assert on typed messages instead of raw JSON.
        """
        from rx_spacetimedb.protocol.codec import decode_server_message

        return [decode_server_message(s) for s in self.sent if isinstance(s, str)]

    @property
    def subscribed_queries(self) -> list[str]:
        """Distinct query texts this client holds (query ids and the legacy set together).

        Shows what the server would send deltas for.
        """
        return list(dict.fromkeys([*(t for t, n in self.refs.items() if n > 0), *self.legacy]))


class _Conn(ServerConnection):
    """A websockets server connection that first sniffs the request: plain HTTP is served directly.

    websockets only parses body-less GET handshakes, so POST endpoints with bodies are answered here
    before the WebSocket machinery sees the bytes.
    """

    emulator: SpacetimeDBEmulator

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


class SpacetimeDBEmulator:
    """An in-process SpacetimeDB database speaking ``v1.json.spacetimedb``, for tests and demos.

    Args:
        module: the module to serve (default: the example module of ``rx_spacetimedb.testing.example``).
        database: the database name clients connect to.
        host, port: where to listen (port 0 = ephemeral).
        ping_interval: seconds between keepalive pings (spec: 15; the first one is sent at once).
        idle_timeout: drop a connection that sent nothing for this long (spec: 30), without a close frame.
        hide_reducer_details: behave like a v10 module: non-callers always get ``TransactionUpdateLight``.
        fragment_size: split outgoing messages into frames of this many bytes (spec: 4096; None: don't).
        owner: the database owner's identity, which may read private tables (default: a minted one,
            whose token is ``owner_token``).
        token_issuer: mints and checks tokens (default: one shared per process, issuer ``localhost``).
        clock: where transaction timestamps come from (default ``Timestamp.now``; tests may pin it).
        max_message_size: largest client message accepted (spec: 32 MiB).
        queue_limit: unprocessed client messages (then Close 1013) and undelivered server messages (then
            a drop without Close) allowed per connection (spec: 16384 each).
        data_dir: a directory that keeps the database across restarts, as a real server's data
            directory does: its signing key (so saved tokens stay valid) and a commit log that every
            transaction reaches (fsync-ed) before any client hears of it (see ``_storage``). None (the
            default): everything stays in memory, like ``spacetime start --in-memory``.

    The module's ``init`` reducer runs when the emulator is created, so rows can be seeded (with
    ``call_reducer``/``with_tx``) before or after starting it; with a ``data_dir`` only when the
    directory is new, and the rows of the log are loaded instead when it is not (``recovery`` says
    what was found).

    Raises:
        ValueError: the data directory holds another database or another schema, or a damaged key.
        RuntimeError: another emulator holds the data directory.
    """

    def __init__(
        self,
        module: Module | None = None,
        *,
        database: str = "quickstart",
        host: str = "127.0.0.1",
        port: int = 0,
        ping_interval: float = 15.0,
        idle_timeout: float = 30.0,
        hide_reducer_details: bool = False,
        fragment_size: int | None = 4096,
        owner: Identity | None = None,
        token_issuer: TokenIssuer | None = None,
        clock: Callable[[], Timestamp] = Timestamp.now,
        max_message_size: int = _MAX_MESSAGE,
        queue_limit: int = _QUEUE_LIMIT,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if module is None:
            from rx_spacetimedb.testing.example import example_module

            module = example_module()
        self.module = module
        self.db = Database(module)
        self.schema = self.db.schema
        self._database = database
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.hide_reducer_details = hide_reducer_details
        self.fragment_size = fragment_size
        self.data_dir = Path(data_dir) if data_dir is not None else None
        """Where the database is kept across restarts (None: in memory)."""
        if token_issuer is None and self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            token_issuer = TokenIssuer(secret=signing_key(self.data_dir))
        self.tokens = token_issuer or TokenIssuer()
        self.owner_token: str | None = None
        """A token of the owner identity (minted when ``owner`` is not given; None otherwise)."""
        if owner is None:
            owner, self.owner_token = self.tokens.mint(f"owner:{database}")
        self.owner: Identity = owner
        self.identity = identity_from_claims("spacetimedb", f"database:{database}")
        self.clients: list[EmulatedClient] = []
        """Connected clients, oldest first."""
        self.history: list[EmulatedClient] = []
        """Every client that completed the handshake, connected or not, oldest first."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._stop: asyncio.Event | None = None
        self._running = asyncio.Event()
        self._refuse = 0
        self.delay = 0.0
        """Seconds every outgoing message waits before it is sent (fault injection)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_waiters: list[asyncio.Event] = []
        self._timers: dict[tuple[str, Any], asyncio.TimerHandle] = {}
        self._clients_changed = threading.Condition()
        self.clock = clock
        self.max_message_size = max_message_size
        self.queue_limit = queue_limit
        if fragment_size is not None and fragment_size < 4:
            raise ValueError("fragment_size must be at least 4 bytes (one UTF-8 character)")
        problem = database_name_error(database)
        if problem is not None:
            raise ValueError(
                f"database={database!r}: {problem}; the server takes lowercase letters and digits "
                "with single hyphens inside (e.g. 'my-game')"
            )
        self._log: CommitLog | None = None
        self._header: dict[str, Any] | None = None  # the first record's header, until it is written
        self.recovery: Recovery | None = None
        """What opening ``data_dir`` found (new, commits replayed, torn bytes ignored); None in memory."""
        self._load()

    # -- storage -----------------------------------------------------------------------------

    def _load(self) -> None:
        """Load the database from ``data_dir``, or run ``init`` (in memory, or a new data dir)."""
        if self.data_dir is not None and self._open_data_dir():
            return
        init = self.module.lifecycle("Init")
        if init is not None:
            status = self._run_reducer_tx(init.name, (), self.identity, None, 0, "[]")
            if not isinstance(status, m.Committed):
                if self._log is not None:
                    self._log.close()  # nothing was written: the data dir stays new
                    self._log = None
                raise ReducerError(f"init reducer failed: {status}")
        if self._header is not None:
            self._persist({})  # a new data dir without an init reducer: the header alone

    def _open_data_dir(self) -> bool:
        """Load the database from ``data_dir``; True if it held one (so ``init`` must not run)."""
        assert self.data_dir is not None
        if self._log is not None:
            self._log.close()
        self.db = Database(self.module)
        self._log, records, self.recovery = open_data_dir(self.data_dir)
        header = {"database": self.database, "module": self.module.name, "schema": schema_digest(self.db)}
        if not records:
            self._header = header
            return False
        found = records[0].get("init")
        if found != header:
            self._log.close()
            self._log = None
            raise ValueError(
                f"{self.data_dir} holds {_describe(found)}, not database {self.database!r} of module "
                f"{self.module.name!r} with this schema; use another data_dir (or delete it to start over)"
            )
        for record in records:
            replay(self.db, record)
        return True

    def _persist(self, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> None:
        """Append a commit to the log and fsync it, before anyone hears of it (no-op in memory).

        Raises:
            OSError: the commit could not be made durable (the caller rolls it back).
        """
        if self._log is None:
            if self.data_dir is not None:
                raise OSError("the emulator is stopped; start it again to write to its data_dir")
            return
        if not changes and self._header is None:
            return
        record = commit_record(self.db, changes)
        if self._header is not None:
            record["init"] = self._header
        self._log.append(record)
        self._header = None

    # -- properties -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The listening address (127.0.0.1 by default).

        Clients need it to build their URL.
        """
        return self._host

    @property
    def port(self) -> int:
        """The listening port (known once started).

        Ephemeral ports let tests run in parallel.
        """
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server URL clients are given, ``ws://HOST:PORT`` (the database name is separate).

        Official SDKs and our client take the host URL and the database name separately.
        """
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The same server for HTTP endpoints, ``http://HOST:PORT``.

        For the HTTP endpoints (identity, schema, sql, call).
        """
        return f"http://{self.host}:{self.port}"

    @property
    def subscribe_url(self) -> str:
        """The full WebSocket URL of this database, ``ws://HOST:PORT/v1/database/NAME/subscribe``.

        Handy for raw WebSocket clients.
        """
        return f"{self.url}/v1/database/{self.database}/subscribe"

    @property
    def database(self) -> str:
        """The database name.

        Clients connect to ``/v1/database/{database}/subscribe``.
        """
        return self._database

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> SpacetimeDBEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SpacetimeDBEmulator:
        await self.start_async()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()

    def start(self) -> SpacetimeDBEmulator:
        """Start on a background thread with its own event loop; return once it accepts connections.

        Sync tests (and Rx code) can use the emulator without an event loop of their own.
        """
        if self._thread is not None or self._loop is not None:
            raise RuntimeError("already started")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            async def main() -> None:
                try:
                    await self.start_async()
                except BaseException as err:
                    started.set_exception(err)
                    return
                started.set_result(None)
                assert self._stop is not None
                await self._stop.wait()
                await self._shutdown()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name=f"spacetimedb-emulator-{self.database}", daemon=True)
        self._thread.start()
        try:
            started.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            self._loop = None
            raise
        return self

    def stop(self) -> None:
        """Stop the background server (closing every connection) and join its thread.

        Frees the port and the thread; the emulator may be started again.
        """
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        self._thread = None

    async def start_async(self) -> SpacetimeDBEmulator:
        """Start on the running event loop.

        Async tests share one loop with the server, so no thread is needed.
        """
        if self.data_dir is not None and self._log is None:
            self._load()  # stopped before: read the data back from disk, as a restarted server does
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        conn_class = type("_BoundConn", (_Conn,), {"emulator": self})
        self._server = await serve(
            self._handler,
            self._host,
            self._requested_port,
            create_connection=conn_class,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=self._select_subprotocol,
            ping_interval=None,
            ping_timeout=None,
            close_timeout=0.25,
            max_size=self.max_message_size,
            max_queue=None,
            compression=None,
            server_header=None,
            logger=RedactingLogger(logging.getLogger("websockets.server")),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        for table in self.module.tables.values():
            if table.schedule is not None:
                self._schedule_rows(table.name, self.db.rows(table.name))
        return self

    def restart(self) -> SpacetimeDBEmulator:
        """Stop (cutting every connection) and start again on the same port with the same data.

        Rehearses a server restart for reconnect tests. With a ``data_dir`` the database is read back
        from disk, exactly as a restarted server would find it; in memory the rows are kept.
        """
        if self._loop is not None and self._on_loop():
            raise RuntimeError("restart would block the server loop; await restart_async()")
        port = self.port
        self.stop()
        self._requested_port = port
        return self.start()

    async def restart_async(self) -> SpacetimeDBEmulator:
        """``restart()`` for an emulator started with ``start_async`` (on the running loop)."""
        if self._thread is not None:
            await asyncio.to_thread(self.restart)
            return self
        port = self.port
        await self.stop_async()
        self._requested_port = port
        return await self.start_async()

    async def stop_async(self) -> None:
        """Stop serving (started with ``start_async``) and close every connection.

        Connections are cut as if the server went away.
        """
        if self._thread is not None:
            self.stop()
            return
        await self._shutdown()

    async def _shutdown(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        self._running.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for client in list(self.clients):
            if client._ws is not None:
                client._ws.transport.abort()
        server.close(close_connections=False)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
        for task in list(self._tasks):
            task.cancel()
        self._loop = None
        self._port = None
        if self._log is not None:
            self._log.close()  # releases the data dir: it may be opened again (or by another emulator)
            self._log = None

    # -- thread marshalling ------------------------------------------------------------------

    def _call(self, func: Callable[[], _T]) -> _T:
        """Run ``func`` on the server loop (directly if already there) and return its result."""
        loop = self._loop
        if loop is None:
            return func()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return func()
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(func())
            except BaseException as err:
                result.set_exception(err)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=30)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- direct API --------------------------------------------------------------------------

    def call_reducer(self, name: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Run a reducer as a system transaction (caller: the database, connection id 0), broadcast it.

        Raises ReducerError with the reducer's message if it fails (nothing changes then).
        """

        def run() -> None:
            spec = self.module.reducer_spec(name)
            if spec is None:
                raise ReducerError("no such reducer")
            values = self._normalize_args(spec.params, args)
            args_text = self.schema.encode_args(spec.params, values)
            status = self._run_reducer_tx(name, values, self.identity, None, 0, args_text)
            if isinstance(status, m.Failed):
                raise ReducerError(status.message)
            if isinstance(status, m.OutOfEnergy):
                raise OutOfEnergyError("out of energy")

        self._call(run)

    def _normalize_args(
        self, params: ProductType, args: Sequence[Any] | Mapping[str, Any]
    ) -> tuple[Any, ...]:
        text = self.schema.encode_args(params, args)
        return self._decode_args(params, text)

    def table_rows(self, table: str) -> list[Any]:
        """Every row of a table now (row dataclasses, insertion order).

        Tests assert on server state directly, without a client.
        """
        return self._call(lambda: self.db.rows(table))

    def with_tx(self, body: Callable[[ReducerContext], _T]) -> _T:
        """Run ``body(ctx)`` as a system transaction (rolled back if it raises); return its result.

        Seeds or changes data outside any reducer, broadcast like a system transaction.
        """

        def run() -> _T:
            return self._system_tx(body)

        return self._call(run)

    def sql(self, query: str) -> list[Any]:
        """Evaluate a SELECT as the owner would (private tables included); raise SqlError on bad SQL.

        A quick look at server state with the same SQL clients use.
        """
        return self._call(
            lambda: compile_query(query, self.db, sender=self.identity, is_owner=True).rows(self.db)
        )

    def mint_token(self, subject: str | None = None) -> tuple[Identity, str]:
        """A new (identity, token) valid on this emulator (as ``POST /v1/identity`` returns).

        Tests can connect several clients as known identities.
        """
        return self.tokens.mint(subject)

    # -- fault injection ---------------------------------------------------------------------

    def drop_all(self) -> int:
        """Drop every connection abruptly (TCP reset, no close frame); return how many.

        Rehearses network loss: clients see 1006 and must reconnect.
        """

        def run() -> int:
            clients = list(self.clients)
            for client in clients:
                if client._ws is not None:
                    client._ws.transport.abort()
            return len(clients)

        return self._call(run)

    def close_all(self, code: int = 1001, reason: str = "module exited") -> int:
        """Close every connection with a Close frame of ``code``/``reason``; return how many.

        Rehearses a server shutdown or restart (default: 1001 ``module exited``).
        """

        def run() -> int:
            clients = list(self.clients)
            for client in clients:
                if client._ws is not None:
                    self._spawn(client._ws.close(code, reason))
            return len(clients)

        return self._call(run)

    def drop_client(self, client: EmulatedClient) -> None:
        """Drop one connection abruptly (no close frame).

        Rehearses one client losing its network while the others stay connected.
        """

        def run() -> None:
            if client._ws is not None:
                client._ws.transport.abort()

        self._call(run)

    def close_client(self, client: EmulatedClient, code: int = 1001, reason: str = "module exited") -> None:
        """Close one connection with a Close frame of ``code``/``reason``.

        Rehearses a server-side close aimed at a single client.
        """

        def run() -> None:
            if client._ws is not None:
                self._spawn(client._ws.close(code, reason))

        self._call(run)

    def refuse_connections(self, count: int = 1) -> None:
        """Answer the next ``count`` WebSocket handshakes with HTTP 503.

        Rehearses an unavailable server during reconnects.
        """

        def run() -> None:
            self._refuse += count

        self._call(run)

    def set_delay(self, seconds: float) -> None:
        """Delay every outgoing message by ``seconds`` (0 to stop).

        Rehearses a slow network without slowing the test's own code.
        """

        def run() -> None:
            self.delay = seconds

        self._call(run)

    def inject(self, frame: str | bytes, client: EmulatedClient | None = None) -> None:
        """Send a raw frame (text or binary) to one client, or to all, in order with other messages.

        Rehearses unexpected or malformed server messages.
        """

        def run() -> None:
            for target in [client] if client is not None else list(self.clients):
                self._enqueue(target, frame)

        self._call(run)

    def pause(self) -> None:
        """Freeze the server: no message is processed or sent, no ping, handshakes wait, until resume().

        Rehearses a hung server, which only client-side timeouts detect.
        """
        self._call(self._running.clear)

    def resume(self) -> None:
        """Undo ``pause()``: queued work proceeds in order.

        Lets a test check what a client does once a hung server recovers.
        """
        self._call(self._running.set)

    @property
    def paused(self) -> bool:
        """True between ``pause()`` and ``resume()``.

        Tests and helpers can check the state they left the server in.
        """
        return not self._running.is_set()

    def wait_for_clients(self, count: int, timeout: float = 5.0) -> None:
        """Block until exactly ``count`` clients are connected (from a thread other than the server's).

        Raises TimeoutError naming the actual count; use ``wait_for_clients_async`` on the server's loop.
        """
        if self._loop is not None and self._on_loop():
            raise RuntimeError("wait_for_clients would block the server loop; await wait_for_clients_async")
        with self._clients_changed:
            if not self._clients_changed.wait_for(lambda: len(self.clients) == count, timeout):
                raise TimeoutError(f"expected {count} connected clients, have {len(self.clients)}")

    async def wait_for_clients_async(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` clients are connected (on any event loop, without blocking it).

        Async tests wait for (re)connections without sleeping.
        """
        if self._loop is not None and self._on_loop():
            async with asyncio.timeout(timeout):
                while len(self.clients) != count:
                    event = asyncio.Event()
                    self._loop_waiters.append(event)
                    await event.wait()
            return
        await asyncio.to_thread(self.wait_for_clients, count, timeout)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _notify_clients_changed(self) -> None:
        with self._clients_changed:
            self._clients_changed.notify_all()
        waiters, self._loop_waiters = self._loop_waiters, []
        for event in waiters:
            event.set()

    def break_subscriptions(
        self,
        client: EmulatedClient | None = None,
        error: str = "emulated failure while evaluating a subscription",
    ) -> None:
        """Fail subscriptions as a transaction-time error does (§7.3): ``SubscriptionError`` without ids.

        The client(s) then get no transaction updates, unsubscribes fail with "Client not found", and the
        next ``SubscribeSingle``/``SubscribeMulti`` clears every old subscription first.
        """

        def run() -> None:
            for target in [client] if client is not None else list(self.clients):
                target.dropped = True
                self._send(target, m.SubscriptionError(0, None, None, None, error))

        self._call(run)

    # -- handshake ---------------------------------------------------------------------------

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self._running.is_set():
            await self._running.wait()
        if self._refuse > 0:
            self._refuse -= 1
            return connection.respond(503, "connection refused (emulator fault injection)")
        split = urlsplit(request.path)
        segments = split.path.split("/")
        if len(segments) != 5 or segments[:3] != ["", "v1", "database"] or segments[4] != "subscribe":
            return connection.respond(404, "")
        auth = request.headers.get("Authorization")
        token: str | None = None
        if auth is not None:
            if not auth.startswith("Bearer "):
                return connection.respond(400, "Authorization is invalid: malformed token")
            token = auth[len("Bearer ") :].strip()
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if token is None and "token" in params:
            token = params["token"]
        identity: Identity | None = None
        if token is not None:
            try:
                identity = self.tokens.validate(token).identity
            except TokenError as err:
                return connection.respond(401, str(err))
        name = unquote(segments[3])
        problem = self._check_database(name)
        if problem is not None and problem[0] == 400:
            return connection.respond(*problem)
        flags: dict[str, bool] = {}
        for key in ("light", "confirmed"):
            value = params.get(key, "false")
            if value not in ("true", "false"):
                return connection.respond(
                    400,
                    f"Failed to deserialize query string: {key}: provided string was not `true` or `false`",
                )
            flags[key] = value == "true"
        if params.get("compression", "Brotli") not in ("None", "Brotli", "Gzip"):
            return connection.respond(
                400,
                "Failed to deserialize query string: compression: unknown variant "
                f"`{params['compression']}`, expected one of `None`, `Brotli`, `Gzip`",
            )
        connection_id: ConnectionId | None = None
        if "connection_id" in params:
            try:
                connection_id = ConnectionId.from_hex(params["connection_id"])
            except ValueError as err:
                return connection.respond(400, f"Failed to deserialize query string: connection_id: {err}")
            if connection_id.value == 0:
                return connection.respond(
                    400, "Invalid connection ID: the all-zeros ConnectionId is reserved."
                )
        if problem is not None:
            return connection.respond(*problem)
        offered = [
            p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
        ]
        chosen = next((p for p in _PREFERENCE if p in offered), None)
        if chosen is None:
            return connection.respond(400, "no valid protocol selected")
        if chosen != SUBPROTOCOL:
            return connection.respond(
                400,
                f"no valid protocol selected: the emulator speaks only {SUBPROTOCOL}, and the real server "
                f"would pick {chosen} from this offer; offer only {SUBPROTOCOL}",
            )
        if identity is None:
            identity, token = self.tokens.mint()
        assert token is not None
        if connection_id is None:
            connection_id = ConnectionId(secrets.randbits(128) or 1)  # above 2**64 but for 1 in 2**64
        assert isinstance(connection, _Conn)
        connection.client = EmulatedClient(identity, token, connection_id, flags["light"], flags["confirmed"])
        return None

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

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        client = getattr(connection, "client", None)
        if response.status_code == 101 and client is not None:
            response.headers["spacetime-identity"] = client.identity.hex
            response.headers["spacetime-identity-token"] = client.token
        return None

    # -- connection --------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _Conn)
        client = ws.client
        if client is None:
            ws.transport.abort()
            return
        connected = self.module.lifecycle("OnConnect")
        if connected is not None:
            status = self._run_reducer_tx(connected.name, (), client.identity, client.connection_id, 0, "[]")
            if not isinstance(status, m.Committed):
                ws.transport.abort()  # the module refused: drop TCP, no close frame, no message
                return
        client._ws = ws
        client._queue = asyncio.Queue()
        client._closed = asyncio.Event()
        client.connected = True
        self.clients.append(client)
        self.history.append(client)
        self._notify_clients_changed()
        self._enqueue(
            client,
            encode_server_message(m.IdentityToken(client.identity, client.token, client.connection_id)),
        )
        inbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        sender = asyncio.ensure_future(self._sender(client, ws))
        keepalive = asyncio.ensure_future(self._keepalive(ws))
        processor = asyncio.ensure_future(self._processor(client, inbox))
        try:
            while True:
                try:
                    frame = await ws.recv()
                except wsx.ConnectionClosed:
                    break
                client.received.append(frame)
                if inbox.qsize() >= self.queue_limit:
                    client.connected = False  # incoming queue overflow (spec §8.1)
                    self._spawn(ws.close(1013, "too many requests"))
                    continue
                inbox.put_nowait(frame)
        finally:
            client.connected = False
            client.close_code = ws.close_code
            keepalive.cancel()
            sender.cancel()
            processor.cancel()
            if client in self.clients:
                self.clients.remove(client)
                self._notify_clients_changed()
            client._closed.set()
            disconnected = self.module.lifecycle("OnDisconnect")
            if disconnected is not None:
                self._run_reducer_tx(disconnected.name, (), client.identity, client.connection_id, 0, "[]")

    async def _processor(self, client: EmulatedClient, inbox: asyncio.Queue[str | bytes]) -> None:
        """Handle a client's messages in order, one at a time, waiting while the server is paused."""
        while True:
            frame = await inbox.get()
            if not self._running.is_set():
                await self._running.wait()
            if client.connected:  # after a decode error the connection is closing: ignore the rest
                self._on_frame(client, frame)

    def _enqueue(self, client: EmulatedClient, frame: str | bytes | tuple[int, str]) -> None:
        queue = client._queue
        if queue is None or not client.connected:
            return
        if queue.qsize() >= self.queue_limit and client._ws is not None:
            client._ws.transport.abort()  # outgoing queue overflow: dropped without a close frame
            return
        queue.put_nowait((time.monotonic(), frame))

    async def _sender(self, client: EmulatedClient, ws: ServerConnection) -> None:
        assert client._queue is not None
        try:
            while True:
                queued_at, item = await client._queue.get()
                if self.delay > 0:  # latency, not throughput: each message leaves `delay` after it was made
                    await asyncio.sleep(max(0.0, queued_at + self.delay - time.monotonic()))
                if not self._running.is_set():
                    await self._running.wait()
                if isinstance(item, tuple):
                    code, reason = item
                    await ws.close(code, reason)
                    return
                client.sent.append(item)
                if (
                    isinstance(item, str)
                    and self.fragment_size is not None
                    and len(item) * 4 > self.fragment_size
                ):
                    pieces = _fragments(item, self.fragment_size)
                    await ws.send(pieces if len(pieces) > 1 else item)
                else:
                    await ws.send(item)
        except wsx.ConnectionClosed:
            pass

    async def _keepalive(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _Conn)
        loop = asyncio.get_running_loop()
        tick = max(0.01, min(self.ping_interval, self.idle_timeout) / 4)
        next_ping = loop.time()
        pong: Any = None
        try:
            while True:
                now = loop.time()
                if self._running.is_set():
                    if now - ws.last_activity > self.idle_timeout:
                        ws.transport.abort()  # idle: dropped without a close frame
                        return
                    if now >= next_ping:
                        if pong is None or pong.done():
                            pong = await ws.ping(b"")
                        next_ping = now + self.ping_interval
                else:
                    ws.last_activity = now  # a frozen server does not count time
                await asyncio.sleep(tick)
        except wsx.ConnectionClosed:
            pass

    def _close(self, client: EmulatedClient, code: int, reason: str) -> None:
        self._enqueue(client, (code, _truncate_reason(reason)))
        client.connected = False

    # -- client messages ---------------------------------------------------------------------

    def _on_frame(self, client: EmulatedClient, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self._close(
                client,
                1011,
                "binary frames (v1.bsatn) are not supported by the emulator: send v1.json text frames",
            )
            return
        try:
            message = decode_client_message(frame)
        except ProtocolError as err:
            self._close(client, 1011, str(err))
            return
        handler: Callable[[EmulatedClient, Any], None] = {  # type: ignore[assignment]
            m.CallReducer: self._on_call_reducer,
            m.CallProcedure: self._on_call_procedure,
            m.Subscribe: self._on_subscribe,
            m.SubscribeSingle: self._on_subscribe_single,
            m.SubscribeMulti: self._on_subscribe_multi,
            m.Unsubscribe: self._on_unsubscribe,
            m.UnsubscribeMulti: self._on_unsubscribe_multi,
            m.OneOffQuery: self._on_one_off,
        }[type(message)]
        try:
            handler(client, message)
        except Exception:
            log.exception("emulator failed handling %r", message)
            self._close(client, 1011, "internal emulator error")

    def _send(self, client: EmulatedClient, message: m.ServerMessage) -> None:
        self._enqueue(client, encode_server_message(message))

    # subscriptions

    def _expand(self, texts: Sequence[str], identity: Identity) -> list[str]:
        """Trim, expand ``SELECT * FROM *`` (expansions first), keep order."""
        expanded: list[str] = []
        rest: list[str] = []
        for raw in texts:
            text = raw.strip()
            if is_select_star_from_star(text) and ";" not in text:
                is_owner = identity == self.owner
                expanded += [
                    f"SELECT * FROM {t.name}" for t in self.module.tables.values() if t.public or is_owner
                ]
            else:
                rest.append(text)
        return expanded + rest

    def _compile(self, client: EmulatedClient, text: str, subscription: bool = True) -> Query:
        return compile_query(
            text,
            self.db,
            sender=client.identity,
            is_owner=client.identity == self.owner,
            subscription=subscription,
        )

    def _snapshot_update(self, queries: Sequence[Query], deletes: bool = False) -> m.DatabaseUpdate:
        """One TableUpdate per query over non-empty tables, rows in form B (spec §6.1)."""
        tables: list[m.TableUpdate] = []
        for query in queries:
            if any(not self.db.stores[t].rows for t in query.joined_tables()):
                continue
            rows = self._rows_b(query, query.rows(self.db))
            update = m.QueryUpdate(deletes=rows) if deletes else m.QueryUpdate(inserts=rows)
            tables.append(m.TableUpdate(query.table.table_id, query.table_name, len(rows), (update,)))
        return m.DatabaseUpdate(tuple(tables))

    def _rows_b(self, query: Query, rows: Sequence[Any]) -> tuple[str, ...]:
        encoder = self.db.stores[query.table_name].encoder_b
        return tuple(dumps(encoder(r)) for r in rows)

    def _subscription_error(
        self, client: EmulatedClient, error: str, request_id: int | None, query_id: int | None, start: float
    ) -> None:
        self._send(client, m.SubscriptionError(_micros_since(start), request_id, query_id, None, error))

    def _on_subscribe(self, client: EmulatedClient, msg: m.Subscribe) -> None:
        start = time.perf_counter()
        texts = self._expand(msg.query_strings, client.identity)
        queries: list[Query] = []
        for text in texts:
            try:
                queries.append(self._compile(client, text))
            except SqlError as err:
                self._subscription_error(client, err.subscription_text(text), msg.request_id, None, start)
                return
        client.legacy = {q.sql: q for q in queries}
        update = self._snapshot_update(queries)
        self._send(client, m.InitialSubscription(update, msg.request_id, TimeDuration(_micros_since(start))))

    def _on_subscribe_single(self, client: EmulatedClient, msg: m.SubscribeSingle) -> None:
        start = time.perf_counter()
        self._revive(client)
        try:
            query = self._compile(client, msg.query)
        except SqlError as err:
            self._subscription_error(
                client, err.subscription_text(msg.query), msg.request_id, msg.query_id, start
            )
            return
        if msg.query_id in client.query_sets:
            self._subscription_error(
                client, self._exists_text(client, msg.query_id), msg.request_id, msg.query_id, start
            )
            return
        self._hold(client, msg.query_id, [query])
        self._send(
            client,
            m.SubscribeApplied(
                msg.request_id,
                _micros_since(start),
                msg.query_id,
                self._query_rows(query, deletes=False),
            ),
        )

    @staticmethod
    def _revive(client: EmulatedClient) -> None:
        """After a transaction-time error the next SubscribeSingle/Multi starts from nothing (§7.3)."""
        if client.dropped:
            client.dropped = False
            client.legacy.clear()
            client.query_sets.clear()
            client.refs.clear()
            client.compiled.clear()

    @staticmethod
    def _client_debug(client: EmulatedClient) -> str:
        """The server's Debug rendering of a client id ``(Identity, ConnectionId)``."""
        return f'(Identity("{client.identity.hex}"), ConnectionId({client.connection_id.hex}))'

    def _exists_text(self, client: EmulatedClient, query_id: int) -> str:
        return (
            f"Subscription with id QueryId {{ id: {query_id} }} already exists for client: "
            f"{self._client_debug(client)}"
        )

    def _not_found_text(self, client: EmulatedClient, query_id: int) -> str:
        return f"Subscription not found: ({self._client_debug(client)}, QueryId {{ id: {query_id} }})"

    def _hold(self, client: EmulatedClient, query_id: int, queries: Sequence[Query]) -> list[Query]:
        """Register a query id; return the queries this connection did not hold before."""
        added: list[Query] = []
        for query in queries:
            if client.refs.get(query.sql, 0) == 0:
                added.append(query)
                client.compiled[query.sql] = query
            client.refs[query.sql] = client.refs.get(query.sql, 0) + 1
        client.query_sets[query_id] = [q.sql for q in queries]
        return added

    def _release(self, client: EmulatedClient, query_id: int) -> list[Query]:
        """Drop a query id; return the queries no other query id holds any more."""
        released: list[Query] = []
        for text in client.query_sets.pop(query_id):
            client.refs[text] -= 1
            if client.refs[text] == 0:
                del client.refs[text]
                released.append(client.compiled.pop(text))
        return released

    def _on_subscribe_multi(self, client: EmulatedClient, msg: m.SubscribeMulti) -> None:
        start = time.perf_counter()
        self._revive(client)
        texts = list(dict.fromkeys(self._expand(msg.query_strings, client.identity)))
        queries: list[Query] = []
        for text in texts:
            try:
                queries.append(self._compile(client, text))
            except SqlError as err:
                self._subscription_error(
                    client, err.subscription_text(text), msg.request_id, msg.query_id, start
                )
                return
        if msg.query_id in client.query_sets:
            self._subscription_error(
                client, self._exists_text(client, msg.query_id), msg.request_id, msg.query_id, start
            )
            return
        added = self._hold(client, msg.query_id, queries)
        self._send(
            client,
            m.SubscribeMultiApplied(
                msg.request_id, _micros_since(start), msg.query_id, self._snapshot_update(added)
            ),
        )

    def _query_rows(self, query: Query, *, deletes: bool) -> m.SubscribeRows:
        """A query's current rows (stored form), as ``SubscribeApplied``/``UnsubscribeApplied`` carry them."""
        rows = self._rows_b(query, query.rows(self.db))
        update = m.QueryUpdate(deletes=rows) if deletes else m.QueryUpdate(inserts=rows)
        table = m.TableUpdate(query.table.table_id, query.table_name, len(rows), (update,))
        return m.SubscribeRows(query.table.table_id, query.table_name, table)

    def _can_unsubscribe(self, client: EmulatedClient, msg: m.Unsubscribe | m.UnsubscribeMulti,
                         start: float) -> bool:
        """Answer the unsubscribes the server refuses (§5.6, §7.3) with their SubscriptionError."""
        if client.dropped:
            error = f"Client not found: {self._client_debug(client)}"
        elif msg.query_id not in client.query_sets:
            error = self._not_found_text(client, msg.query_id)
        else:
            return True
        self._subscription_error(client, error, msg.request_id, msg.query_id, start)
        return False

    def _on_unsubscribe(self, client: EmulatedClient, msg: m.Unsubscribe) -> None:
        start = time.perf_counter()
        if not self._can_unsubscribe(client, msg, start):
            return
        released = self._release(client, msg.query_id)
        if len(released) != 1:
            self._subscription_error(client, "Internal error", msg.request_id, msg.query_id, start)
            return
        query = released[0]
        self._send(
            client,
            m.UnsubscribeApplied(
                msg.request_id,
                _micros_since(start),
                msg.query_id,
                self._query_rows(query, deletes=True),
            ),
        )

    def _on_unsubscribe_multi(self, client: EmulatedClient, msg: m.UnsubscribeMulti) -> None:
        start = time.perf_counter()
        if not self._can_unsubscribe(client, msg, start):
            return
        released = self._release(client, msg.query_id)
        self._send(
            client,
            m.UnsubscribeMultiApplied(
                msg.request_id,
                _micros_since(start),
                msg.query_id,
                self._snapshot_update(released, deletes=True),
            ),
        )

    def _on_one_off(self, client: EmulatedClient, msg: m.OneOffQuery) -> None:
        start = time.perf_counter()
        try:
            query = self._compile(client, msg.query_string, subscription=False)
        except SqlError as err:
            self._send(
                client,
                m.OneOffQueryResponse(msg.message_id, str(err), (), TimeDuration(_micros_since(start))),
            )
            return
        rows = self._rows_b(query, query.rows(self.db))
        self._send(
            client,
            m.OneOffQueryResponse(
                msg.message_id,
                None,
                (m.OneOffTable(query.table_name, rows),),
                TimeDuration(_micros_since(start)),
            ),
        )

    # reducers

    def _decode_args(self, params: ProductType, text: str) -> tuple[Any, ...]:
        """Positional argument values from an args JSON text; ValueError with the reason otherwise."""
        try:
            value = loads_exact(text)
        except ValueError as err:
            raise ValueError(f"args are not JSON: {err}") from None
        if not params.elements:
            if value in ([], {}):
                return ()
            raise ValueError(f"expected no arguments, got {text}")
        decoder = self.schema.codec.decoder(params)
        try:
            decoded = decoder(value)
        except ProtocolError as err:
            raise ValueError(str(err)) from None
        return tuple(getattr(decoded, field_name(n)) for n in params.names)

    def _on_call_reducer(self, client: EmulatedClient, msg: m.CallReducer) -> None:
        spec = self.module.reducer_spec(msg.reducer)
        reducer_ids = self.schema.reducer_ids
        error: str | None = None
        values: tuple[Any, ...] = ()
        if spec is None:
            error = "no such reducer"
        elif spec.lifecycle is not None:
            error = f"can't directly call special {spec.lifecycle} lifecycle reducer"
        else:
            try:
                values = self._decode_args(spec.params, msg.args)
            except ValueError as err:
                error = f"invalid arguments for reducer {msg.reducer}: {err}"
        if error is not None:
            name = msg.reducer if msg.reducer.isidentifier() else ""
            self._send(
                client,
                m.TransactionUpdate(
                    m.Failed(error),
                    self.clock(),
                    client.identity,
                    client.connection_id,
                    m.ReducerCallInfo(name, reducer_ids.get(msg.reducer, _NO_REDUCER_ID), "[]", 0),
                    EnergyQuanta(0),
                    TimeDuration(0),
                ),
            )
            return
        assert spec is not None
        self._run_reducer_tx(
            spec.name,
            values,
            client.identity,
            client.connection_id,
            msg.request_id,
            msg.args,
            caller=client,
            flags=msg.flags,
        )

    def _run_reducer_tx(
        self,
        name: str,
        values: Sequence[Any],
        identity: Identity,
        connection_id: ConnectionId | None,
        request_id: int,
        args_text: str,
        caller: EmulatedClient | None = None,
        flags: int = 0,
        finish: Callable[[ReducerContext], None] | None = None,
    ) -> m.UpdateStatus:
        """Run a reducer in a transaction, commit or roll back, and tell the clients.

        ``finish`` runs inside the same transaction after the reducer (the scheduler deletes one-shot
        schedule rows there).
        """
        spec = self.module.reducer_spec(name)
        assert spec is not None
        timestamp = self.clock()
        start = time.perf_counter()
        tx = self.db.begin()
        ctx = ReducerContext(identity, connection_id, timestamp, self.db.view(tx), self.identity)
        status: m.UpdateStatus
        try:
            spec.func(ctx, *values)
            if finish is not None:
                finish(ctx)
        except OutOfEnergyError:
            tx.rollback()
            status = m.OutOfEnergy()
        except Exception as err:
            tx.rollback()
            status = m.Failed(str(err) or type(err).__name__)
        else:
            status = self._commit(tx)
        micros = _micros_since(start)
        info = m.ReducerCallInfo(name, self.schema.reducer_ids[name], args_text, request_id)
        energy = EnergyQuanta(1_000_000_000 if isinstance(status, m.OutOfEnergy) else micros * 1400)
        self._broadcast(
            tx,
            status,
            timestamp,
            identity,
            connection_id or ConnectionId(0),
            info,
            energy,
            TimeDuration(micros),
            caller,
            flags,
        )
        return status

    def _commit(self, tx: Transaction) -> m.UpdateStatus:
        """Make a successful transaction durable; Failed (and rolled back) if the disk refuses it."""
        try:
            self._persist(tx.changes())
        except OSError as err:
            tx.rollback()
            log.error("commit not durable, rolled back: %s", err)
            return m.Failed(f"the commit could not be written to the data directory: {err}")
        return m.Committed(m.DatabaseUpdate())

    def _system_tx(
        self, body: Callable[[ReducerContext], _T], caller: Identity | None = None, reducer_id: int = 0
    ) -> _T:
        """Run ``body`` as a transaction without a reducer (``with_tx``, procedures, SQL DML), broadcast it.

        The server reports these with an empty reducer name and id 0, or u32::MAX for SQL DML, whose
        caller is the SQL caller.
        """
        timestamp = self.clock()
        start = time.perf_counter()
        tx = self.db.begin()
        ctx = ReducerContext(self.identity, None, timestamp, self.db.view(tx), self.identity)
        try:
            result = body(ctx)
        except BaseException:
            tx.rollback()
            raise
        status = self._commit(tx)
        if isinstance(status, m.Failed):
            raise ReducerError(status.message)
        micros = _micros_since(start)
        info = m.ReducerCallInfo("", reducer_id, "[]", 0)
        self._broadcast(
            tx,
            m.Committed(m.DatabaseUpdate()),
            timestamp,
            caller or self.identity,
            ConnectionId(0),
            info,
            EnergyQuanta(micros * 1400),
            TimeDuration(micros),
            None,
            0,
        )
        return result

    def _broadcast(
        self,
        tx: Transaction,
        status: m.UpdateStatus,
        timestamp: Timestamp,
        identity: Identity,
        connection_id: ConnectionId,
        info: m.ReducerCallInfo,
        energy: EnergyQuanta,
        duration: TimeDuration,
        caller: EmulatedClient | None,
        flags: int,
    ) -> None:
        """Send a transaction's outcome: full update to the caller, deltas to affected subscribers."""
        committed = isinstance(status, m.Committed)
        changes = tx.changes() if committed else {}
        if changes:
            self._reschedule(changes)
        for client in list(self.clients):
            if not client.connected:
                continue
            is_caller = client is caller
            has_delta = changes and not client.dropped
            update = self._delta_for(client, tx, changes) if has_delta else m.DatabaseUpdate()
            if is_caller and flags == m.FULL_UPDATE:
                final_status = m.Committed(update) if committed else status
                self._send(
                    client,
                    m.TransactionUpdate(
                        final_status, timestamp, identity, connection_id, info, energy, duration
                    ),
                )
                continue
            if not committed or not update.tables:
                continue
            if client.light or self.hide_reducer_details:
                self._send(client, m.TransactionUpdateLight(info.request_id, update))
            else:
                self._send(
                    client,
                    m.TransactionUpdate(
                        m.Committed(update), timestamp, identity, connection_id, info, energy, duration
                    ),
                )

    def _delta_for(
        self, client: EmulatedClient, tx: Transaction, changes: Mapping[str, tuple[list[Any], list[Any]]]
    ) -> m.DatabaseUpdate:
        """Per table (once each), one QueryUpdate per held query whose result changed (spec §7.3)."""
        held: list[Query] = [client.compiled[t] for t in client.refs if t in client.compiled]
        held += list(client.legacy.values())
        per_table: dict[str, list[m.QueryUpdate]] = {}
        for query in held:
            if not query.joined_tables() & changes.keys():
                continue
            store = self.db.stores[query.table_name]
            if query.is_join:
                before = query.rows(_Before(self.db, changes))
                after = query.rows(self.db)
                deleted = _minus(before, after)
                inserted = _minus(after, before)
                encode = store.encoder_b  # join rows come from committed tables: stored form
            else:
                deleted_rows, inserted_rows = changes.get(query.table_name, ([], []))
                deleted = [r for r in deleted_rows if query.matches(r)]
                inserted = [r for r in inserted_rows if query.matches(r)]
                encode = store.encoder_c
            if not deleted and not inserted:
                continue
            per_table.setdefault(query.table_name, []).append(
                m.QueryUpdate(
                    tuple(dumps(encode(r)) for r in deleted), tuple(dumps(encode(r)) for r in inserted)
                )
            )
        tables = []
        for name, updates in per_table.items():
            table = self.module.tables[name]
            count = sum(len(u.deletes) + len(u.inserts) for u in updates)
            tables.append(m.TableUpdate(table.table_id, name, count, tuple(updates)))
        return m.DatabaseUpdate(tuple(tables))

    # scheduled reducers

    def _reschedule(self, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> None:
        """Follow a commit's changes to schedule tables: cancel deleted rows' timers, arm inserted ones."""
        if self._server is None or self._loop is None:
            return  # not serving yet: start_async arms every row
        for name, (deleted, inserted) in changes.items():
            if self.module.tables[name].schedule is None:
                continue
            store = self.db.stores[name]
            for row in deleted:
                timer = self._timers.pop((name, store.key(row)), None)
                if timer is not None:
                    timer.cancel()
            self._schedule_rows(name, inserted)

    def _schedule_rows(self, name: str, rows: Sequence[Any], repeat: bool = False) -> None:
        table = self.module.tables[name]
        assert table.schedule is not None and self._loop is not None
        store = self.db.stores[name]
        for row in rows:
            at: ScheduleAt = store.getters[table.schedule[1]](row)
            if isinstance(at.value, TimeDuration):
                delay = at.value.micros / 1_000_000
            else:
                delay = (at.value.micros_since_epoch - self.clock().micros_since_epoch) / 1_000_000
            key = store.key(row)
            old = self._timers.pop((name, key), None)
            if old is not None:
                old.cancel()
            self._timers[(name, key)] = self._loop.call_later(max(0.0, delay), self._fire, name, key)

    def _fire(self, name: str, key: Any) -> None:
        self._timers.pop((name, key), None)
        if not self._running.is_set():
            self._spawn(self._fire_when_running(name, key))
            return
        table = self.module.tables[name]
        assert table.schedule is not None
        store = self.db.stores[name]
        row = store.rows.get(key)
        if row is None:
            return
        reducer, column = table.schedule
        spec = self.module.reducer_spec(reducer)
        assert spec is not None
        one_shot = not isinstance(store.getters[column](row).value, TimeDuration)

        def finish(ctx: ReducerContext) -> None:
            if one_shot:
                ctx.db[name].delete(row)

        args = self.schema.encode_args(spec.params, [row])
        status = self._run_reducer_tx(reducer, (row,), self.identity, None, 0, args, finish=finish)
        if not isinstance(status, m.Committed) and one_shot:
            self.with_tx(lambda ctx: ctx.db[name].delete(row))  # a failed one-shot run is not retried
        current = store.rows.get(key)
        if current is not None and (name, key) not in self._timers:
            self._schedule_rows(name, [current])

    async def _fire_when_running(self, name: str, key: Any) -> None:
        await self._running.wait()
        self._fire(name, key)

    # procedures

    def _on_call_procedure(self, client: EmulatedClient, msg: m.CallProcedure) -> None:
        zero_time, zero_duration = Timestamp(0), TimeDuration(0)
        spec = self.module.procedure_spec(msg.procedure)
        if spec is None:
            self._send(
                client,
                m.ProcedureResult(
                    m.InternalError("No such procedure"), zero_time, zero_duration, msg.request_id
                ),
            )
            return
        try:
            values = self._decode_args(spec.params, msg.args)
        except ValueError as err:
            self._send(
                client,
                m.ProcedureResult(
                    m.InternalError(f"invalid arguments for procedure {msg.procedure}: {err}"),
                    zero_time,
                    zero_duration,
                    msg.request_id,
                ),
            )
            return
        timestamp = self.clock()
        start = time.perf_counter()
        ctx = ProcedureContext(
            client.identity,
            client.connection_id,
            timestamp,
            self.db.view(),
            self.identity,
            lambda body: self._system_tx(body),
        )
        status: m.ProcedureStatus
        try:
            result = spec.func(ctx, *values)
            text = dumps(self.schema.codec.encoder(spec.returns, "C")(result))
        except OutOfEnergyError:
            status = m.ProcedureOutOfEnergy()
        except Exception as err:
            status = m.InternalError(f"{_FATAL}{str(err) or type(err).__name__}")
        else:
            self._send(
                client,
                m.ProcedureResult(
                    m.Returned(text), timestamp, TimeDuration(_micros_since(start)), msg.request_id
                ),
            )
            return
        self._send(client, m.ProcedureResult(status, zero_time, zero_duration, msg.request_id))

    # -- HTTP --------------------------------------------------------------------------------

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
                counts = self._system_tx(lambda ctx: statement.apply(ctx.db), identity, _NO_REDUCER_ID)
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
        micros = _micros_since(start)
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
            return reply(500, f"{_FATAL}{str(err) or type(err).__name__}", ident_headers)
        return reply(200, returned, ident_headers, json_body=True)


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


def _describe(header: Any) -> str:
    """A data directory's header in words, for the error when it does not fit."""
    if not isinstance(header, dict):
        return "no database header"
    database, module = header.get("database"), header.get("module")
    return f"database {database!r} of module {module!r} (schema {header.get('schema')})"


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


def _minus(left: Sequence[Any], right: Sequence[Any]) -> list[Any]:
    """Multiset difference, keeping order."""
    remaining: dict[Any, int] = {}
    for row in right:
        remaining[row] = remaining.get(row, 0) + 1
    out = []
    for row in left:
        if remaining.get(row, 0) > 0:
            remaining[row] -= 1
        else:
            out.append(row)
    return out


class _Before:
    """The database as it was before a transaction (for join deltas): current rows minus the changes."""

    def __init__(self, db: Database, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> None:
        self._db = db
        self._changes = changes

    def rows(self, table: str) -> list[Any]:
        deleted, inserted = self._changes.get(table, ([], []))
        gone = set(inserted)
        return [r for r in self._db.rows(table) if r not in gone] + list(deleted)
