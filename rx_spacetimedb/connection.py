"""The connection: one hot Observable of server messages that survives reconnects, and requests.

Data flow: a cold *sockets* Observable opens one socket and emits its decoded messages until the
socket ends (then it errors). ``retry_when(exponential_backoff)`` resubscribes it, and a guarded
Subject shares the result, so every subscriber sees one stream for the whole life of the
connection (retry sits upstream of sharing: a shared stream that errored never recovers).
All emissions happen on the connection's I/O thread; move them with ``observe_on``.

The protocol state (request ids, pending requests, subscriptions, the identity handshake) is a
sans-I/O ``rx_spacetimedb.session.Session``: this module pumps messages into it under one lock,
sends the frames it returns, then emits and settles outside the lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import ssl as _ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import Disposable, SerialDisposable

from rx_spacetimedb._ioloop import IoLoop
from rx_spacetimedb._options import ConnectOptions, seconds_from_deprecated_ms
from rx_spacetimedb._streams import GuardedBehaviorSubject, GuardedSubject, LatestSubject
from rx_spacetimedb.cache import ClientCache, TableDiff, TransactionDiff
from rx_spacetimedb.credentials import CredentialStore
from rx_spacetimedb.delivery import MessageSubject, deliver
from rx_spacetimedb.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionClosed,
    ConnectionClosedByUser,
    ConnectTimeout,
    DatabaseNotFound,
    ProcedureFailed,
    ProtocolError,
    ReducerFailed,
    RequestAborted,
    RequestTimeout,
    SchemaError,
    SpacetimeDBError,
    SubscriptionFailed,
)
from rx_spacetimedb.handler import attach_handler, check_handler
from rx_spacetimedb.operators import (
    LiveTable,
    ReducerResult,
    cache_diffs,
    exponential_backoff,
    reducer_results,
    retry_when,
    table_diffs,
    transactions,
)
from rx_spacetimedb.operators._backoff import RetryAttempt
from rx_spacetimedb.operators._row_type import row_converter
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import decode_server_message, encode_client_message
from rx_spacetimedb.protocol.jsontext import dumps
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.values import ConnectionId, Identity
from rx_spacetimedb.requests import Request
from rx_spacetimedb.schema_fetch import fetch_schema
from rx_spacetimedb.session import Events, OneOffResult, Session, TokenSource, dedupe
from rx_spacetimedb.transport import Transport

__all__ = ["Connection", "ConnectionState", "OneOffResult", "connect"]

_log = logging.getLogger("rx_spacetimedb")
Row = TypeVar("Row")
# Retrying cannot fix these (§1.5): a malformed request, a bad token, no such database, and a
# row_types= class that does not fit the module's schema.
_FATAL = (BadRequest, AuthenticationFailed, DatabaseNotFound, SchemaError)

Status = Literal["connecting", "connected", "disconnected", "reconnecting", "closed"]


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """Where the connection is: status plus what goes with it (identity, error, retry delay)."""

    status: Status
    identity: Identity | None = None
    connection_id: ConnectionId | None = None
    error: Exception | None = None
    close_code: int | None = None
    reason: str = ""
    attempt: int = 0
    delay: float = 0.0


class Connection:
    """A SpacetimeDB connection; create it with ``rx_spacetimedb.connect``.

    Streams (hot, shared, emitted on the I/O thread):
        ``messages``: every decoded server message, across reconnects.
        ``states``: ``ConnectionState`` changes, replaying the current one.
        ``identity``: the latest ``IdentityToken``, replayed to new subscribers.
        ``errors``: problems that do not end the stream (bad frames, failing observers).
    """

    def __init__(self, options: ConnectOptions) -> None:
        self.options = options
        self.host = options.url
        self.database = options.database
        self.name = options.name
        self._credentials = options.store
        # Where the token came from: "user" (token=), "file" (credentials), "minted" (the server
        # gave it to this process while anonymous: the only kind dropped when the server rejects it).
        token = options.token
        token_source: TokenSource | None = "user" if token else None
        if token is None and self._credentials is not None:
            token = self._credentials.load()
            token_source = "file" if token else None
        name = options.name
        database = options.database

        self._io = IoLoop(f"rx-spacetimedb-io[{name or database}]")
        # Guards the session (ids, pending requests, the handshake), the cache and the subscription
        # table they share (it is the cache's lock too), _transport, _outbox, _closed and _tables;
        # taken by user threads' requests and lookups and the I/O thread's messages. Never held
        # while user code runs: settling requests and emitting come after.
        self._lock = threading.RLock()
        self._closed = False
        self._transport: Transport | None = None
        self._outbox: asyncio.Queue[str] | None = None

        self.errors: GuardedSubject[Exception] = GuardedSubject(self._report_observer_error)
        # Two subjects of the same stamped messages: the live tables of ``table()`` follow the
        # first, so every observer of ``messages`` (and of a request's outcome) sees them current.
        self._tables_feed: MessageSubject[m.ServerMessage] = MessageSubject(self, self._report_observer_error)
        self._messages: MessageSubject[m.ServerMessage] = MessageSubject(self, self._report_observer_error)
        self._states: LatestSubject[ConnectionState] = LatestSubject(
            ConnectionState("connecting"), self._report_observer_error)
        self._identity: GuardedBehaviorSubject[m.IdentityToken | None] = GuardedBehaviorSubject(
            None, self._report_observer_error)
        self.cache = ClientCache(self._current_schema, auto_resync=False, lock=self._lock)
        self._session: Session[Request[Any]] = Session(
            self.cache, schema=options.schema, token=token, token_source=token_source,
            reconnect=options.reconnect, max_queued=options.max_queued_requests)
        self._tables: dict[tuple[str, type | None], LiveTable[Any]] = {}

        self._backoff = exponential_backoff(
            options.reconnect_delay, options.max_reconnect_delay, jitter=options.reconnect_jitter,
            max_attempts=None if options.reconnect else 0,
            should_retry=lambda err: not isinstance(err, _FATAL),
            on_retry=self._on_retry, scheduler=options.scheduler,
        )
        self._pipeline = SerialDisposable()

    # -- public streams ------------------------------------------------------------------

    @property
    def messages(self) -> Observable[m.ServerMessage]:
        """Every decoded server message, in order, across reconnects (hot, shared)."""
        return self._messages

    @property
    def states(self) -> Observable[ConnectionState]:
        """The connection state, replaying the current one to each new subscriber."""
        return self._states

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._states.value

    @property
    def identity(self) -> Observable[m.IdentityToken]:
        """The latest ``IdentityToken`` (replayed), then each new one after a reconnect."""
        return self._identity.pipe(ops.filter(_is_not_none))  # type: ignore[arg-type]

    @property
    def identity_token(self) -> m.IdentityToken | None:
        """The ``IdentityToken`` of the current (or last) socket, if any."""
        return self._session.identity_token

    @property
    def connection_id(self) -> ConnectionId | None:
        """This socket's connection id (a new one after every reconnect)."""
        token = self._session.identity_token
        return token.connection_id if token else None

    @property
    def token(self) -> str | None:
        """The token this connection authenticates with (never shown in reprs or logs)."""
        return self._session.token

    @property
    def schema(self) -> ModuleSchema | None:
        """The module schema (given, or fetched before the first socket), or None."""
        return self._session.schema

    # -- typed views (schema, cache, operators) ------------------------------------------
    # Each is the operator of the same name on ``messages``: one code path, and what the operator
    # gives on this connection's stream is by construction what these give.

    @property
    def diffs(self) -> Observable[TransactionDiff]:
        """Every change to the client cache (subscribe, transaction, unsubscribe, resync), in order.

        Also the answers that changed nothing (an empty snapshot, a failed reducer): each message
        that touches the cache emits one diff, ``bool(diff)`` says whether rows changed.
        """
        return self._messages.pipe(cache_diffs(include_empty=True), ops.filter(_touches_cache))

    def table_diffs(self, table: str, row_type: type[Row] | None = None) -> Observable[TableDiff[Row]]:
        """The changes of one table (inserts, deletes, updates as (old, new)), one per message.

        Raises:
            SchemaError: an unknown table or a row type that does not fit, at once when the schema
                is known (else on the stream when it arrives).
        """
        if self.schema is not None:
            row_converter(self.schema, table, row_type)
        return self._messages.pipe(table_diffs(table, row_type=row_type))

    def transactions(self) -> Observable[TransactionDiff]:
        """One emission per committed transaction, with every table's changes together."""
        return self._messages.pipe(transactions())

    def reducer_results(self, name: str | None = None, *, own: bool = False) -> Observable[ReducerResult]:
        """Reducer calls seen on this connection, arguments decoded; ``own`` keeps this client's."""
        if name is not None and self.schema is not None:
            self.schema.reducer(name)
        return self._messages.pipe(reducer_results(name, own=own))

    def table(self, name: str, row_type: type[Row] | None = None) -> LiveTable[Row]:
        """A live view of one table's cached rows (shared per name and row type).

        Never waits: before the schema has arrived it returns a live table that fills once the
        rows do (an unknown name then errors its streams with ``SchemaError``).

        Raises:
            SchemaError: an unknown table or a row type that does not fit, when the schema is known.
        """
        if self.schema is not None:
            row_converter(self.schema, name, row_type)
        with self._lock:
            key = (name, row_type)
            live = self._tables.get(key)
            if live is None:
                live = LiveTable(self._tables_feed, name, row_type=row_type)
                self._tables[key] = live
        live.connect()
        return live

    def _current_schema(self) -> ModuleSchema:
        """The module schema for the cache, which decodes rows only once there is one."""
        schema = self._session.schema
        if schema is None:
            raise SchemaError("no module schema: the connection has not fetched it (yet), or "
                              "was created with fetch_schema=False and no schema=")
        return schema

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self) -> None:
        """Subscribe the socket pipeline; its output feeds the shared subject."""
        pipeline = self._sockets().pipe(retry_when(self._backoff))
        self._pipeline.disposable = pipeline.subscribe(
            self._on_frames, self._on_fatal, self._on_session_completed)

    def close(self, timeout: float = 5.0) -> None:
        """Close the socket (code 1000), complete every stream, fail pending requests; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = self._session.end(ConnectionClosedByUser("the connection was closed with close()"),
                                        replace=False)
        self._pipeline.dispose()
        transport = self._transport
        if transport is not None and self._io.running:
            future = self._io.run_coroutine(transport.close(1000))
            if not self._io.in_loop_thread():
                try:
                    future.result(timeout)
                except Exception as err:  # the socket may already be gone
                    _log.debug("close: %s", err)
        for request in pending:
            request.fail(ConnectionClosedByUser("the connection was closed before the answer came"))
        self._set_state(ConnectionState("closed", *self._ids()))
        self._states.on_completed()
        self._tables_feed.on_completed()
        self._messages.on_completed()
        self._identity.on_completed()
        self.errors.on_completed()
        self._io.stop(timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        token = self._session.identity_token
        identity = token.identity.hex if token else None
        label = f"{self.name!r} " if self.name else ""
        return (f"<Connection {label}[{self.host!r}, database={self.database!r}, {self.state.status}, "
                f"identity={identity}]>")

    async def connected(self, timeout: float | None = None) -> m.IdentityToken:
        """Wait (on the caller's asyncio loop) until a socket is connected; its ``IdentityToken``.

        The same rules as ``wait_connected``.
        """
        future = self._next_connected()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise self._connect_timeout(timeout) from self.state.error

    def wait_connected(self, timeout: float | None = None) -> m.IdentityToken:
        """Block until a socket is connected (scripts, notebooks); its ``IdentityToken``.

        While connecting or reconnecting it waits for the new socket (never the old identity).

        Raises:
            ConnectTimeout: not connected within ``timeout`` (a ``TimeoutError``); its message and
                ``last_error`` give the cause of the last failed attempt.
            The error that ended the connection (``AuthenticationFailed``, ``DatabaseNotFound``, a
            refused socket with ``reconnect=False``...), or ``ConnectionClosedByUser`` after ``close()``.
        """
        future = self._next_connected()
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._connect_timeout(timeout) from self.state.error

    def _connect_timeout(self, timeout: float | None) -> ConnectTimeout:
        state = self.state
        cause = f"; last attempt: {state.error}" if state.error is not None else "; no attempt failed yet"
        retry = (f" (attempt {state.attempt}, next in {state.delay:g} s)"
                 if state.status == "reconnecting" else "")
        return ConnectTimeout(f"not connected after {timeout} s{cause}{retry}", last_error=state.error)

    def _next_connected(self) -> concurrent.futures.Future[m.IdentityToken]:
        """The ``IdentityToken`` of the current socket if connected, else of the next one."""
        future: concurrent.futures.Future[m.IdentityToken] = concurrent.futures.Future()

        def on_state(state: ConnectionState) -> None:
            if future.done():
                return
            token = self._session.identity_token
            if state.status == "connected" and token is not None:
                future.set_result(token)
            elif state.status == "closed":
                future.set_exception(state.error or self._session.fatal
                                     or ConnectionClosedByUser("the connection was closed with close()"))

        subscription = self._states.subscribe(on_state)  # replays the current state
        future.add_done_callback(lambda _: subscription.dispose())
        return future

    # -- the sockets ---------------------------------------------------------------------

    def _sockets(self) -> Observable[list[str | bytes]]:
        """A cold Observable of the frames of each TCP read: one socket per subscription, errors
        when the socket ends. A read's frames travel as one value, so ``retry_when`` is crossed
        once per read rather than once per message."""

        def subscribe(observer: abc.ObserverBase[list[str | bytes]],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            if self._closed:
                observer.on_completed()
                return Disposable()
            future = self._io.run_coroutine(self._run_session(observer))

            def cancel() -> None:
                if self._io.running:
                    self._io.loop.call_soon_threadsafe(future.cancel)

            return Disposable(cancel)

        return Observable(subscribe)

    async def _run_session(self, observer: abc.ObserverBase[list[str | bytes]]) -> None:
        self._set_state(ConnectionState("connecting", *self._ids()))
        try:
            transport = await self._open()
        except Exception as err:  # mapped errors, and anything unmapped: a disconnect, never silent
            self._disconnected(err)
            observer.on_error(err)
            return
        outbox: asyncio.Queue[str] = asyncio.Queue()
        with self._lock:
            self._transport, self._outbox = transport, outbox
            self._session.socket_opened()
        writer = asyncio.ensure_future(self._write(transport, outbox))
        error: Exception | None = None
        try:
            while True:
                # Every message of one TCP read at once: no task switch per message.
                observer.on_next(await transport.recv_batch())
        except asyncio.CancelledError:
            await transport.close(1000)
            raise
        except ConnectionClosed as err:
            if transport.closing:  # closed by us
                return
            error = err
        except Exception as err:  # never leave the socket open behind a failed session
            error = err
            with contextlib.suppress(Exception):
                await transport.close(1011, "client error")
        finally:
            writer.cancel()
            with self._lock:
                self._transport = self._outbox = None
        self._disconnected(error)
        observer.on_error(error)

    async def _open(self) -> Transport:
        """Fetch the schema if needed and open the socket; a rejected minted token is dropped."""
        try:
            return await self._open_once()
        except AuthenticationFailed as err:
            # A development server that was reset forgot the identity it minted for us: carry on
            # as a new anonymous identity rather than stop (§1.4), and say so.
            why = ("new identity: the server rejected the token it had minted for this "
                   f"connection ({err.body or 'HTTP 401'}); was it reset?")
            with self._lock:
                dropped = self._session.forget_minted_token(why)
            if not dropped:
                raise self._explain_rejected_token(err) from err
            _log.warning("rx_spacetimedb: %s", why)
            if self._credentials is not None:
                self._credentials.clear()
            return await self._open_once()

    async def _open_once(self) -> Transport:
        options = self.options
        if options.fetch_schema and self.schema is None:
            schema = await fetch_schema(self.host, self.database, token=self.token,
                                        ssl=options.ssl_context, row_types=dict(options.row_types))
            with self._lock:
                self._session.schema = schema
        return await Transport.open(
            self.host, self.database, token=self.token, light=options.light,
            confirmed=options.confirmed, ssl=options.ssl_context, open_timeout=options.open_timeout,
            ping_interval=options.ping_interval, ping_timeout=options.ping_interval)

    def _explain_rejected_token(self, err: AuthenticationFailed) -> AuthenticationFailed:
        """The 401 with where the token came from and what to do (never the token itself)."""
        source = self._session.token_source
        if source == "file" and self._credentials is not None:
            hint = (f"the token loaded from the credentials file {str(self._credentials.path)!r} was "
                    "rejected: delete that file (or call CredentialStore.clear()) to connect as a new "
                    "identity, or pass a valid token=")
        elif source == "user":
            hint = ("the token passed as connect(token=...) was rejected: pass a valid token, or none "
                    "to connect anonymously")
        else:
            return err
        explained = AuthenticationFailed(err.status, f"{err.body}; {hint}" if err.body else hint)
        explained.token_source = source
        return explained

    async def _write(self, transport: Transport, outbox: asyncio.Queue[str]) -> None:
        """Send frames in the order they were queued (one writer per socket keeps them ordered)."""
        while True:
            text = await outbox.get()
            try:
                await transport.send(text)
            except SpacetimeDBError as err:
                _log.debug("send failed: %s", err)
                return

    def _on_retry(self, attempt: RetryAttempt) -> None:
        self._set_state(ConnectionState("reconnecting", *self._ids(), error=attempt.error,
                                        attempt=attempt.attempt, delay=attempt.delay))

    def _disconnected(self, error: Exception) -> None:
        code = getattr(error, "code", None)
        reason = getattr(error, "reason", "") if not isinstance(error, ProtocolError) else ""
        with self._lock:
            aborted = self._session.socket_closed()
        for request in aborted:
            request.fail(RequestAborted(f"the connection was lost before the answer came: {error}"))
        self._set_state(ConnectionState("disconnected", *self._ids(), error=error, close_code=code,
                                        reason=str(reason)))

    def _on_frames(self, frames: list[str | bytes]) -> None:
        """Decode and pump the frames of one read, in order; a malformed one is reported and skipped."""
        for frame in frames:
            if isinstance(frame, bytes):  # v1.json.spacetimedb sends text only
                self._report(ProtocolError(f"unexpected binary frame of {len(frame)} bytes", raw=frame))
                continue
            try:
                message = decode_server_message(frame)
            except ProtocolError as err:  # a malformed frame: report it, read on
                self._report(err)
                continue
            self._on_message(message)

    def _on_message(self, message: m.ServerMessage) -> None:
        """Pump one message through the session, emit it stamped with its diffs, then settle requests.

        In this order, whoever sees the message, a diff or a request's outcome sees current tables,
        and every stream derived from ``messages`` has had the message when a request settles.
        """
        with self._lock:
            events = self._session.receive(message)
            for frame in events.send:  # under the lock: in order, and on the socket that asked
                self._send_now(frame)
        for error in events.reports:
            self._report(error)
        token = events.connected
        if token is not None:
            self._connected(token, events)
        deliver(message, self.schema, tuple(events.diffs), self.connection_id, self.cache.version)
        self._tables_feed.on_next(message)
        self._messages.on_next(message)
        for request, value in events.settle:
            request.settle(value)
        for request, error in events.fail:
            request.fail(error)

    def _connected(self, token: m.IdentityToken, events: Events[Request[Any]]) -> None:
        self._backoff.reset()
        if events.save_token is not None and self._credentials is not None:
            try:
                self._credentials.save(events.save_token)
            except Exception as err:
                self._report(err)
        self._set_state(ConnectionState("connected", token.identity, token.connection_id,
                                        reason=events.reset))
        self._identity.on_next(token)

    def _on_fatal(self, error: Exception) -> None:
        with self._lock:
            pending = self._session.end(error)  # every later request fails at once with it
        for request in pending:
            request.fail(error)
        self._set_state(ConnectionState("closed", *self._ids(), error=error,
                                        close_code=getattr(error, "code", None)))
        self._tables_feed.on_error(error)
        self._messages.on_error(error)
        self._identity.on_completed()
        self._states.on_completed()

    def _on_session_completed(self) -> None:
        self._tables_feed.on_completed()
        self._messages.on_completed()

    # -- requests ------------------------------------------------------------------------

    def call_reducer(self, reducer: str, args: Sequence[Any] | Mapping[str, Any] = (), *,
                     flags: int = m.FULL_UPDATE,
                     timeout: float | None = None) -> Request[m.TransactionUpdate]:
        """Call a reducer; the outcome is its committed ``TransactionUpdate`` or a typed error.

        Args:
            reducer: The reducer's name as the schema has it.
            args: Positional (sequence) or by-name (mapping) arguments.
            flags: ``FULL_UPDATE`` (0) or ``NO_SUCCESS_NOTIFY`` (1); with 1 a success is silent,
                so the outcome completes with ``None`` as soon as the call is sent.
            timeout: Seconds to wait for the answer (default: the connection's request_timeout).

        A reducer the module does not have fails the outcome with ``ReducerFailed("no such
        reducer")``, whether the schema says so at the call or the server does later.

        Raises:
            ValueError/TypeError: a bad name, flags or arguments (with the schema, checked against
                the reducer's parameters).
            The error that ended the connection (``ConnectionClosedByUser`` after ``close()``).
        """
        _check_name("reducer", reducer)
        if flags not in (m.FULL_UPDATE, m.NO_SUCCESS_NOTIFY):
            raise ValueError(f"flags: must be FULL_UPDATE (0) or NO_SUCCESS_NOTIFY (1), got {flags!r}")
        self._session.check_open()
        unknown = self._session.unknown("reducer", reducer)
        if unknown is not None:
            return _failed("reducer", reducer, ReducerFailed(reducer, unknown))
        text = self._encode_args("reducer", reducer, args)
        with self._lock:
            request_id = self._session.new_request_id()
            request: Request[Any] = Request("reducer", request_id, reducer)
            self._submit(m.CallReducer(reducer, text, request_id, flags), request, timeout)
        if flags == m.NO_SUCCESS_NOTIFY:
            request.settle(None)
        return request

    def call_procedure(self, procedure: str, args: Sequence[Any] | Mapping[str, Any] = (), *,
                       timeout: float | None = None) -> Request[Any]:
        """Call a procedure; the outcome is its decoded return value or a typed error.

        A procedure the module does not have fails the outcome with ``ProcedureFailed``.
        """
        _check_name("procedure", procedure)
        self._session.check_open()
        unknown = self._session.unknown("procedure", procedure)
        if unknown is not None:
            return _failed("procedure", procedure, ProcedureFailed(procedure, unknown))
        text = self._encode_args("procedure", procedure, args)
        with self._lock:
            request_id = self._session.new_request_id()
            request: Request[Any] = Request("procedure", request_id, procedure)
            self._submit(m.CallProcedure(procedure, text, request_id), request, timeout)
        return request

    def one_off_query(self, sql: str, *, timeout: float | None = None) -> Request[OneOffResult]:
        """Run one query once; the outcome is a ``OneOffResult`` or ``QueryFailed``."""
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("sql: must be a non-empty string")
        self._session.check_open()
        message_id = os.urandom(16)
        request: Request[Any] = Request("one_off_query", message_id, sql)
        with self._lock:
            self._submit(m.OneOffQuery(message_id, sql), request, timeout)
        return request

    def subscribe(self, queries: str | Sequence[str]) -> Request[m.InitialSubscription]:
        """Legacy subscribe: replace the whole legacy set; re-sent after every reconnect."""
        texts = dedupe(_check_queries(queries))
        with self._lock:
            request: Request[Any] = Request("subscribe", self._session.new_request_id())
            frame, previous = self._session.subscribe_legacy(texts, request)
            if frame is not None:
                self._send_now(frame)
        if previous is not None:
            previous.fail(SubscriptionFailed("replaced by a newer subscribe()"))
        return request

    def subscribe_single(self, query: str) -> Request[m.SubscribeApplied]:
        """Add one query; ``.id`` is its query id (for ``unsubscribe``); re-sent on reconnect."""
        (text,) = _check_queries([query])
        return self._subscribe("subscribe_single", (text,), multi=False, name=text)

    def subscribe_multi(self, queries: Sequence[str]) -> Request[m.SubscribeMultiApplied]:
        """Add several queries under one query id (``.id``); re-sent on reconnect."""
        return self._subscribe("subscribe_multi", dedupe(_check_queries(queries)), multi=True)

    def subscribe_all(self) -> Request[m.SubscribeMultiApplied]:
        """Subscribe to every public table as one query set (the SDKs' ``subscribeToAllTables``).

        Never waits: made before the schema has arrived, the tables are read from it when the
        socket opens (the schema is fetched first).

        Raises:
            SchemaError: the module has no public table, or the connection will never have a schema
                (``fetch_schema=False`` and no ``schema=``); when the schema arrives later, the
                outcome fails with it instead.
        """
        if self.schema is None and not self.options.fetch_schema:
            raise SchemaError("subscribe_all: the connection has no module schema to read the tables "
                              "from (fetch_schema=False and no schema=)")
        with self._lock:
            # Read under the lock: the socket's first IdentityToken fills in what is still empty.
            self._session.check_open()
            queries = self._session.all_tables() if self.schema is not None else ()
            return self._subscribe("subscribe_multi", queries, multi=True)

    def _subscribe(self, kind: str, queries: tuple[str, ...], *, multi: bool,
                   name: str = "") -> Request[Any]:
        with self._lock:
            request: Request[Any] = Request(kind, self._session.new_query_id(), name)
            frame = self._session.subscribe(queries, multi, request)
            if frame is not None:
                self._send_now(frame)
        return request

    def unsubscribe(self, query_id: int | Request[Any]) -> Request[Any]:
        """Drop a subscribe_single/subscribe_multi by query id (or its Request)."""
        if isinstance(query_id, Request):
            query_id = query_id.id
        if not isinstance(query_id, int):
            raise TypeError("query_id: must be an int or a subscription Request, "
                            f"not {type(query_id).__name__}")
        request: Request[Any] = Request("unsubscribe", query_id)
        with self._lock:
            frame = self._session.unsubscribe(query_id, request)
            if frame is not None:
                self._send_now(frame)
        if frame is None:
            request.settle(None)
        return request

    def _encode_args(self, kind: str, name: str, args: Sequence[Any] | Mapping[str, Any]) -> str:
        if isinstance(args, str) or not isinstance(args, Sequence | Mapping):
            raise TypeError(f"args: must be a sequence (positional) or a mapping (named), "
                            f"not {type(args).__name__}")
        params = self._session.params(kind, name)
        if params is not None:
            return self._current_schema().encode_args(params, args)
        return dumps(list(args) if not isinstance(args, Mapping) else dict(args))

    def _submit(self, frame: m.CallReducer | m.CallProcedure | m.OneOffQuery, request: Request[Any],
                timeout: float | None) -> None:
        """Send now, or queue until connected; the decision and the send share the lock with the
        socket's end, so a request is either aborted with its socket or sent on the next one."""
        assert self._lock._is_owned()  # type: ignore[attr-defined]
        if self._session.submit(frame, request):
            self._send_now(frame)
        timeout = self.options.request_timeout if timeout is None else timeout
        if timeout is not None:
            self._io.loop.call_soon_threadsafe(self._arm_timeout, request, timeout)

    def _arm_timeout(self, request: Request[Any], timeout: float) -> None:
        def expire() -> None:
            if request.fail(RequestTimeout(f"{request!r}: no answer within {timeout} s")):
                with self._lock:
                    self._session.expire(request)
        asyncio.get_running_loop().call_later(timeout, expire)

    def _send_now(self, frame: m.ClientMessage) -> None:
        """Hand a frame to the socket's writer (called with the lock held, so frames keep their order)."""
        assert self._lock._is_owned()  # type: ignore[attr-defined]
        text = encode_client_message(frame)

        def put() -> None:
            outbox = self._outbox
            if outbox is not None:
                outbox.put_nowait(text)

        self._io.call_soon(put)

    # -- helpers -------------------------------------------------------------------------

    def _ids(self) -> tuple[Identity | None, ConnectionId | None]:
        token = self._session.identity_token
        return (token.identity, token.connection_id) if token else (None, None)

    def _set_state(self, state: ConnectionState) -> None:
        if self._states.is_stopped or state == self._states.value:
            return  # e.g. "connecting" at creation and again when the first socket opens
        self._states.on_next(state)

    def _report(self, error: Exception) -> None:
        _log.warning("rx_spacetimedb: %r", error)
        self.errors.on_next(error)

    def _report_observer_error(self, error: Exception) -> None:
        _log.error("an observer raised; it was detached, the others go on", exc_info=error)
        if self.errors is not None:
            self.errors.on_next(error)


def _is_not_none(value: object) -> bool:
    return value is not None


def _touches_cache(diff: TransactionDiff) -> bool:
    return diff.cause != "none"


def _failed(kind: str, name: str, error: Exception) -> Request[Any]:
    """A request that failed before it was sent."""
    request: Request[Any] = Request(kind, 0, name)
    request.fail(error)
    return request


def _check_queries(queries: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, Sequence) or not queries:
        raise ValueError("queries: need at least one SQL string")
    texts = []
    for query in queries:
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"queries: every query must be a non-empty string, got {query!r}")
        texts.append(query.strip())  # the server trims Subscribe/SubscribeMulti but not Single
    return tuple(texts)


def _check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: must be a non-empty name, got {name!r}")


def connect(
    host: str = "localhost",
    database: str = "",
    *,
    port: int = 3000,
    tls: bool = False,
    token: str | None = None,
    handler: Any = None,
    reconnect: bool = True,
    reconnect_delay: float | None = None,
    max_reconnect_delay: float | None = None,
    reconnect_jitter: float = 0.0,
    name: str | None = None,
    light: bool = False,
    confirmed: bool = False,
    ssl_context: _ssl.SSLContext | None = None,
    fetch_schema: bool = True,
    schema: ModuleSchema | None = None,
    row_types: Mapping[str, type] | None = None,
    credentials: CredentialStore | str | os.PathLike[str] | bool | None = None,
    request_timeout: float | None = 30.0,
    max_queued_requests: int = 1000,
    ping_interval: float | None = 15.0,
    open_timeout: float | None = 10.0,
    subscribe: Sequence[str] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    reconnect_delay_ms: float | None = None,
    max_reconnect_delay_ms: float | None = None,
) -> Connection:
    """Connect to a SpacetimeDB database; returns the ``Connection`` at once, connecting in the background.

    The options are checked and kept as one frozen ``ConnectOptions`` (``conn.options``). Every
    duration is in seconds.

    Args:
        host: Host name, or a full URL (``ws://``, ``wss://``, ``http://``, ``https://``; then
            ``port``/``tls`` are taken from it).
        database: Database name, or its identity as 64 hex digits.
        port: TCP port (3000 is the standalone server's default).
        tls: Use ``wss``; certificates are verified unless ``ssl_context`` says otherwise.
        token: Credentials (JWT). ``None`` connects anonymously; the minted token is then kept
            across reconnects (and saved to ``credentials`` if given).
        handler: Callbacks by message kind (see ``rx_spacetimedb.handler``).
        reconnect: Reconnect after transient failures with exponential backoff.
        reconnect_delay, max_reconnect_delay: First and largest backoff delay in seconds
            (default 0.5 and 30).
        reconnect_jitter: Random spread of each delay, as a fraction in [0, 1].
        name: A label for reprs and logs.
        light: Ask for ``TransactionUpdateLight`` for other clients' transactions.
        confirmed: Hold messages back until their transaction is durable.
        ssl_context: TLS settings for ``wss`` (e.g. a private CA).
        fetch_schema: Fetch the module schema over HTTP before connecting (typed rows and args).
        schema: A schema to use instead of fetching it.
        row_types: Table name → your own row class (positional constructor, columns in order).
        credentials: Where the token is kept between runs, so a restarted app keeps its identity:
            ``True`` for one file per host and database under ``~/.config/rx_spacetimedb``, a file
            path, or a ``CredentialStore``.
        request_timeout: Default seconds a request waits for its answer (``None``: forever).
        max_queued_requests: Requests kept while disconnected; more fail at once.
        ping_interval: Keepalive ping period (and pong timeout) in seconds; ``None`` disables.
        open_timeout: Seconds allowed for the TCP/TLS/HTTP handshake.
        subscribe: Queries to ``subscribe_multi`` right away.
        scheduler: Scheduler for backoff timers (tests inject a virtual one).
        reconnect_delay_ms, max_reconnect_delay_ms: Deprecated: the same delays in milliseconds
            (a ``DeprecationWarning``).

    Raises:
        ValueError / TypeError: an invalid option, named in the message.
    """
    options = ConnectOptions(
        host=host, database=database, port=port, tls=tls, token=token, reconnect=reconnect,
        reconnect_delay=seconds_from_deprecated_ms("reconnect_delay_ms", "reconnect_delay",
                                                   reconnect_delay_ms, reconnect_delay, 0.5),
        max_reconnect_delay=seconds_from_deprecated_ms("max_reconnect_delay_ms", "max_reconnect_delay",
                                                       max_reconnect_delay_ms, max_reconnect_delay, 30.0),
        reconnect_jitter=reconnect_jitter, name=name, light=light, confirmed=confirmed,
        ssl_context=ssl_context, fetch_schema=fetch_schema, schema=schema, row_types=row_types or {},
        credentials=credentials, request_timeout=request_timeout, max_queued_requests=max_queued_requests,
        ping_interval=ping_interval, open_timeout=open_timeout, subscribe=subscribe or (),
        scheduler=scheduler,
    )
    if handler is not None:
        check_handler(handler)
    conn = Connection(options)
    if handler is not None:
        attach_handler(conn, handler)
    if options.subscribe:
        conn.subscribe_multi(list(options.subscribe))
    conn._start()
    return conn
