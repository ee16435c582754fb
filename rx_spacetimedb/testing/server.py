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

The emulator is one class put together from private parts, one concern each, every part building on
the one before: ``_base`` (shared state, the outbox to a client), ``_storage`` (data directory),
``_subscriptions`` (the emulator's own subscription bookkeeping), ``_reducers`` (transactions,
procedures, schedules), ``_http`` (the HTTP endpoints), ``_socket`` (handshake, connection loop,
keepalive, faults); this module adds construction, start/stop and the direct API.

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
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from websockets.asyncio.server import Server, serve

from rx_spacetimedb._redact import RedactingLogger
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.types import ProductType
from rx_spacetimedb.protocol.values import Identity, Timestamp
from rx_spacetimedb.testing._base import SUBPROTOCOL, EmulatedClient
from rx_spacetimedb.testing._http import HttpConnection, database_name_error
from rx_spacetimedb.testing._socket import SocketMixin
from rx_spacetimedb.testing._storage import CommitLog, Recovery, signing_key
from rx_spacetimedb.testing.auth import TokenIssuer, identity_from_claims
from rx_spacetimedb.testing.module import (
    Database,
    Module,
    OutOfEnergyError,
    ReducerContext,
    ReducerError,
)
from rx_spacetimedb.testing.sql import compile_query

__all__ = ["EmulatedClient", "SUBPROTOCOL", "SpacetimeDBEmulator", "database_name_error"]

_MAX_MESSAGE: Final = 33554432
_QUEUE_LIMIT: Final = 16384
_T = TypeVar("_T")


class SpacetimeDBEmulator(SocketMixin):
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
        if self.data_dir is not None and self.data_dir.exists() and not self.data_dir.is_dir():
            raise ValueError(f"data_dir={str(self.data_dir)!r} is a file; give a directory (it is created)")
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

    # -- loading -----------------------------------------------------------------------------

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
        conn_class = type("_BoundConn", (HttpConnection,), {"emulator": self})
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
