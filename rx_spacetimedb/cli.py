"""The command line, ``python -m rx_spacetimedb`` (or ``rx-spacetimedb``): demo, watch, sql, call, identity,
generate.

Each command is a thin script over ``connect()``: the options mirror its arguments, the token comes
from ``--token`` or ``SPACETIMEDB_TOKEN`` and is never printed (except by ``identity``, whose job is
to mint one), and every failure ends as one ``error: ...`` line on stderr with a documented exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from reactivex import operators as ops

from rx_spacetimedb._rows import cell, column_names, plain, row_items, text_table
from rx_spacetimedb.cache import TableDiff, TransactionDiff
from rx_spacetimedb.connection import Connection, ConnectionState, connect
from rx_spacetimedb.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionClosedByUser,
    DatabaseNotFound,
    HandshakeError,
    ProcedureFailed,
    ProtocolError,
    QueryFailed,
    ReducerFailed,
    RequestAborted,
    SchemaError,
    SpacetimeDBError,
    SubscriptionFailed,
    TransportError,
)
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codegen import generate_module
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.schema_fetch import fetch_schema, http_base

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "TOKEN_ENV",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
"""The request was answered with a failure: reducer or procedure error, bad SQL, failed subscription."""
EXIT_USAGE = 2
"""Bad command line, or arguments that do not fit the reducer (argparse uses 2 as well)."""
EXIT_UNREACHABLE = 3
"""No connection: host unreachable, TLS or handshake failure, connection lost, no answer in time."""
EXIT_AUTH = 4
"""The server refused the token (HTTP 401, or 400 for a malformed one)."""
EXIT_NOT_FOUND = 5
"""No database of that name on the server (HTTP 404)."""

TOKEN_ENV = "SPACETIMEDB_TOKEN"
HOST_ENV = "SPACETIMEDB_HOST"
DATABASE_ENV = "SPACETIMEDB_DATABASE"

_EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  success (watch: also when stopped with Ctrl-C)
  {EXIT_FAILED}  the request failed: reducer/procedure error, bad SQL, failed subscription, timeout
  {EXIT_USAGE}  bad command line, or arguments that do not fit the reducer
  {EXIT_UNREACHABLE}  cannot connect (host unreachable, TLS, handshake) or the connection was lost
  {EXIT_AUTH}  the server rejected the token
  {EXIT_NOT_FOUND}  no such database

environment:
  {TOKEN_ENV}     token used when --token is not given (never printed)
  {HOST_ENV}      default for --host
  {DATABASE_ENV}  default for --database
"""

_log = logging.getLogger("rx_spacetimedb")


class CliError(Exception):
    """A failure the command line reports as one line with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- argument parsing --------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    """The options every connecting command shares; they mirror ``connect()``'s arguments."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection (mirrors connect())")
    group.add_argument("--host", default=os.environ.get(HOST_ENV, "localhost"),
                       help="host name, or a ws://, wss://, http:// or https:// URL "
                            f"(default: ${HOST_ENV} or localhost)")
    group.add_argument("--port", type=int, default=3000, help="TCP port (default 3000)")
    group.add_argument("-d", "--database", default=os.environ.get(DATABASE_ENV),
                       help=f"database name or identity (default: ${DATABASE_ENV})")
    group.add_argument("--tls", action="store_true", help="use wss/https (certificates are verified)")
    group.add_argument("--token", default=None,
                       help=f"token (JWT); prefer ${TOKEN_ENV}, which other users cannot see in the "
                            "process list; anonymous when neither is set; never printed")
    group.add_argument("--credentials", metavar="FILE", default=None,
                       help="file that keeps the token between runs (read, and written when minted)")
    group.add_argument("--light", action="store_true", help="ask for light transaction updates")
    group.add_argument("--confirmed", action="store_true", help="only durable (confirmed) transactions")
    group.add_argument("--timeout", type=_positive_float, default=10.0,
                       help="seconds to wait for the connection and for each answer (default 10)")
    group.add_argument("--json", action="store_true", help="machine output: one JSON object per line")
    group.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-vv: debug)")
    return parent


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m rx_spacetimedb`` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m rx_spacetimedb",
        description="Reactive SpacetimeDB client: a self-contained demo, and watch/sql/call/identity "
                    "against a server (a real one, or `python -m rx_spacetimedb.testing serve`).",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _connection_options()
    raw = argparse.RawDescriptionHelpFormatter

    commands.add_parser(
        "demo", help="start an embedded emulator, call reducers and print the live diffs (no server needed)",
        description="Starts the embedded SpacetimeDB emulator with the example module, connects, "
                    "subscribes to Player, calls reducers (one of them fails) and prints every change "
                    "as it arrives, then the final table. Needs no server and no network.",
        epilog=_EXIT_CODES_HELP, formatter_class=raw)

    watch = commands.add_parser(
        "watch", parents=[common], help="print live diffs of a subscription until Ctrl-C",
        description="Subscribes to the queries and prints every change as it arrives: "
                    "'+' inserted, '-' deleted, '~' updated rows. Connection status goes to stderr; "
                    "the connection is re-established after transient failures.",
        epilog=_EXIT_CODES_HELP, formatter_class=raw)
    watch.add_argument("queries", nargs="+", metavar="QUERY", help="SQL subscription queries")
    watch.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                       help="exit after N changes (the initial rows count as one)")
    watch.add_argument("--no-reconnect", action="store_true",
                       help=f"exit (code {EXIT_UNREACHABLE}) when the connection is lost")

    sql = commands.add_parser(
        "sql", parents=[common], help="run a one-off query and print the rows as a table",
        epilog=_EXIT_CODES_HELP, formatter_class=raw)
    sql.add_argument("query", metavar="QUERY", help="SQL query, e.g. 'SELECT * FROM Player'")

    call = commands.add_parser(
        "call", parents=[common], help="call a reducer (or procedure) and print the outcome",
        description="Calls a reducer, or a procedure when the module has one of that name. Each ARG is "
                    "a JSON value (42, \"bob\", [1,2], null); a word that is not JSON is taken as a "
                    "string, so `call CreatePlayer alice` works.",
        epilog=_EXIT_CODES_HELP, formatter_class=raw)
    call.add_argument("name", metavar="REDUCER", help="reducer or procedure name")
    call.add_argument("args", nargs="*", metavar="ARG", help="arguments, in the reducer's order")

    identity = commands.add_parser(
        "identity", help="mint a new identity and token (POST /v1/identity)",
        description="Asks the server for a new identity (POST /v1/identity) and PRINTS ITS TOKEN: that "
                    "is the purpose of this command. Treat the output as a secret (it signs in as that "
                    "identity), or use --save FILE to store the token (mode 0600) and print only the "
                    "identity.",
        epilog=_EXIT_CODES_HELP, formatter_class=raw)
    identity.add_argument("--host", default=os.environ.get(HOST_ENV, "localhost"),
                          help=f"host name or URL (default: ${HOST_ENV} or localhost)")
    identity.add_argument("--port", type=int, default=3000, help="TCP port (default 3000)")
    identity.add_argument("--tls", action="store_true", help="use https")
    identity.add_argument("--timeout", type=_positive_float, default=10.0,
                          help="seconds to wait (default 10)")
    identity.add_argument("--save", metavar="FILE", default=None,
                          help="write the token to FILE (as --credentials reads it) instead of printing it")
    identity.add_argument("--json", action="store_true", help='print {"identity": ..., "token": ...}')

    generate = commands.add_parser(
        "generate", help="write a typed Python module for a database's schema (rows, reducers, tables)",
        description="Writes one self-contained, typed module from a module schema: a dataclass per "
                    "row and named type, a class per enum variant, ROW_TYPES for connect(row_types=), "
                    "Reducers, Procedures and Tables. Read the schema from --schema FILE (the JSON of "
                    "GET /v1/database/DB/schema?version=9) or fetch it from --database on --host. "
                    "Commit the file and regenerate it when the module changes.",
        epilog=_EXIT_CODES_HELP, formatter_class=raw)
    generate.add_argument("--out", metavar="FILE.py", required=True, help="the module to write ('-': stdout)")
    generate.add_argument("--schema", metavar="FILE", default=None, help="schema JSON file to read")
    generate.add_argument("--host", default=os.environ.get(HOST_ENV, "localhost"),
                          help=f"host name or URL (default: ${HOST_ENV} or localhost)")
    generate.add_argument("--port", type=int, default=3000, help="TCP port (default 3000)")
    generate.add_argument("--tls", action="store_true", help="use https")
    generate.add_argument("-d", "--database", default=None,
                          help="database name or identity whose schema to fetch (instead of --schema)")
    generate.add_argument("--token", default=None,
                          help=f"token (JWT) for the schema request; prefer ${TOKEN_ENV}; never printed")
    generate.add_argument("--timeout", type=_positive_float, default=10.0,
                          help="seconds to wait for the schema (default 10)")
    return parser


# -- errors ----------------------------------------------------------------------------------


def _describe(err: BaseException, target: str) -> CliError:
    """One line and an exit code for a failure (the caller scrubs the token out of it)."""
    if isinstance(err, CliError):
        return err
    if isinstance(err, DatabaseNotFound):
        return CliError(f"no such database on {target} (HTTP 404: {err.body})", EXIT_NOT_FOUND)
    if isinstance(err, AuthenticationFailed):
        return CliError(f"the server rejected the token (HTTP 401: {err.body}); "
                        f"check --token or ${TOKEN_ENV}", EXIT_AUTH)
    if isinstance(err, BadRequest):
        return CliError(f"the server refused the connection (HTTP 400: {err.body}); "
                        "is the token well-formed?", EXIT_AUTH)
    if isinstance(err, HandshakeError):
        return CliError(f"the server refused the connection to {target}: {err}", EXIT_UNREACHABLE)
    if isinstance(err, RequestAborted | ConnectionClosedByUser):
        return CliError(f"the connection to {target} was lost: {err}", EXIT_UNREACHABLE)
    if isinstance(err, TransportError):
        return CliError(f"cannot connect to {target}: {err}", EXIT_UNREACHABLE)
    if isinstance(err, QueryFailed):
        return CliError(f"query failed: {err}", EXIT_FAILED)
    if isinstance(err, SubscriptionFailed):
        return CliError(f"subscription failed: {err.message}", EXIT_FAILED)
    if isinstance(err, ReducerFailed | ProcedureFailed):
        return CliError(str(err), EXIT_FAILED)
    if isinstance(err, SchemaError | ValueError | TypeError):
        return CliError(str(err), EXIT_USAGE)
    if isinstance(err, TimeoutError):  # Request.result(timeout) ran out
        return CliError(f"no answer from {target} in time (see --timeout)", EXIT_FAILED)
    if isinstance(err, SpacetimeDBError):
        return CliError(f"{type(err).__name__}: {err}", EXIT_FAILED)
    return CliError(f"{type(err).__name__}: {err}", EXIT_FAILED)


def _one_line(text: str, secret: str | None) -> str:
    """Squash to one line and blank out the token wherever a message might have quoted it."""
    if secret:
        text = text.replace(secret, "<token>")
    return " ".join(text.split())


# -- connecting ------------------------------------------------------------------------------


def _url(host: str, port: int, tls: bool) -> str:
    """The server URL as ``connect()`` builds it (a full URL is taken as it is)."""
    return host if "://" in host else f"{'wss' if tls else 'ws'}://{host}:{port}"


def _token(args: argparse.Namespace) -> str | None:
    """``--token``, else ``$SPACETIMEDB_TOKEN``, else None (anonymous)."""
    token: str | None = args.token or os.environ.get(TOKEN_ENV) or None
    return token


def _open(args: argparse.Namespace, *, reconnect: bool) -> Connection:
    """``connect()`` with the command line's options."""
    if not args.database:
        raise CliError(f"--database is required (or set ${DATABASE_ENV})", EXIT_USAGE)
    return connect(
        args.host, args.database, port=args.port, tls=args.tls, token=_token(args),
        credentials=args.credentials, light=args.light, confirmed=args.confirmed,
        reconnect=reconnect, request_timeout=args.timeout, open_timeout=args.timeout,
        name="rx-spacetimedb",
    )


def wait_connected(conn: Connection, timeout: float) -> m.IdentityToken:
    """Block until connected; raise the error of the first failed attempt at once.

    ``Connection.wait_connected`` only ends early on fatal errors (401/404/400); with
    ``reconnect=False`` an unreachable host would wait out the whole timeout, and a command line
    should say "cannot connect" right away.
    """
    done = threading.Event()
    failure: list[Exception] = []

    def on_state(state: ConnectionState) -> None:
        if state.status == "connected":
            done.set()
        elif state.status in ("disconnected", "reconnecting", "closed"):
            failure.append(state.error or ConnectionClosedByUser("the connection was closed"))
            done.set()

    def on_completed() -> None:
        # ``states`` completes after a fatal error, and a subscriber that comes after that gets
        # only the completion, not the final state: read it from ``conn.state``.
        on_state(conn.state)
        done.set()

    subscription = conn.states.subscribe(on_state, on_completed=on_completed)
    try:
        if not done.wait(timeout):
            raise TransportError(f"no connection within {timeout:g} s")
    finally:
        subscription.dispose()
    if failure:
        raise failure[0]
    token = conn.identity_token
    assert token is not None
    return token


def _json_line(out: TextIO, obj: Any) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()


# -- diffs as text ---------------------------------------------------------------------------


def _row_text(table: str, row: Any, columns: Sequence[str] | None = None) -> str:
    """``Player(id=1, name='alice', score=0)``; identities shortened, strings quoted."""
    items = [(n, v) for n, v in row_items(row) if columns is None or n in columns]
    shown = ", ".join(f"{n}={v!r}" if isinstance(v, str) or v is None else f"{n}={cell(v)}"
                      for n, v in items)
    return f"{table}({shown})"


def _update_text(table: str, old: Any, new: Any, columns: Sequence[str] | None = None) -> str:
    """The new row and what changed: ``Player(...)  score: 0 -> 42``."""
    before = dict(row_items(old))
    changed = [f"{n}: {cell(before.get(n))} -> {cell(v)}" for n, v in row_items(new)
               if before.get(n) != v and (columns is None or n in columns)]
    return f"{_row_text(table, new, columns)}  {', '.join(changed)}".rstrip()


def diff_lines(diff: TableDiff[Any], columns: Sequence[str] | None = None) -> list[str]:
    """One line per changed row: ``+`` inserted, ``-`` deleted, ``~`` updated (with old -> new)."""
    lines = [f"- {_row_text(diff.table, row, columns)}" for row in diff.deletes]
    lines += [f"~ {_update_text(diff.table, old, new, columns)}" for old, new in diff.updates]
    lines += [f"+ {_row_text(diff.table, row, columns)}" for row in diff.inserts]
    return lines


def _cause(diff: TransactionDiff | TableDiff[Any]) -> str:
    """``subscribe``, or the reducer behind a transaction with its argument text."""
    call = diff.reducer_call
    if diff.cause == "transaction" and call is not None and call.reducer_name:
        return f"{call.reducer_name} {call.args}"
    return diff.cause


def diff_json(diff: TableDiff[Any]) -> dict[str, Any]:
    """A table diff as one JSON-ready object (identities hex, timestamps ISO 8601)."""
    call = diff.reducer_call
    return {
        "table": diff.table,
        "cause": diff.cause,
        "reducer": call.reducer_name if call is not None and call.reducer_name else None,
        "inserts": [plain(r) for r in diff.inserts],
        "deletes": [plain(r) for r in diff.deletes],
        "updates": [{"old": plain(a), "new": plain(b)} for a, b in diff.updates],
    }


# -- commands --------------------------------------------------------------------------------


class _Output:
    """Where a command writes: rows and results to ``out``, status and errors to ``err``."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def status(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


@contextlib.contextmanager
def _connection(args: argparse.Namespace, *, reconnect: bool) -> Iterator[Connection]:
    """An open connection that is closed on the way out, whatever happens."""
    conn = _open(args, reconnect=reconnect)
    try:
        yield conn
    finally:
        conn.close()


def _cmd_sql(args: argparse.Namespace, io: _Output) -> int:
    """Run one query over the WebSocket (``one_off_query``) and print its rows."""
    with _connection(args, reconnect=False) as conn:
        wait_connected(conn, args.timeout)
        result = conn.one_off_query(args.query).result(args.timeout + 1)
        if args.json:
            for row in result.rows:
                _json_line(io.out, plain(dict(row_items(row))))
            return EXIT_OK
        columns = None
        if not result.rows and conn.schema is not None and result.table_name in conn.schema.tables:
            columns = column_names([], conn.schema.row_class(result.table_name))
        io.print(text_table(result.rows, columns))
    return EXIT_OK


def parse_arg(text: str) -> Any:
    """A JSON value; a word that is not JSON is the string itself (``alice`` == ``"alice"``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cmd_call(args: argparse.Namespace, io: _Output) -> int:
    """Call a reducer (or a procedure of that name) and print what came back."""
    values = [parse_arg(a) for a in args.args]
    with _connection(args, reconnect=False) as conn:
        wait_connected(conn, args.timeout)
        schema = conn.schema
        if schema is not None and args.name in schema.procedures:
            value = conn.call_procedure(args.name, values).result(args.timeout + 1)
            if args.json:
                _json_line(io.out, {"procedure": args.name, "status": "returned", "value": plain(value)})
            else:
                io.print(f"{args.name} returned: {_value_text(value)}")
            return EXIT_OK
        if schema is not None:
            schema.reducer(args.name)  # an unknown name is a usage error here, before anything is sent
        update = conn.call_reducer(args.name, values).result(args.timeout + 1)
        if args.json:
            _json_line(io.out, {
                "reducer": args.name, "status": "committed",
                "timestamp": plain(update.timestamp),
                "energy_quanta_used": update.energy_quanta_used.quanta,
                "duration_micros": update.total_host_execution_duration.micros,
            })
        else:
            io.print(f"{args.name} committed")
    return EXIT_OK


def _value_text(value: Any) -> str:
    """A procedure's return value for people: a row as ``Player(...)``, None as ``none``."""
    if value is None:
        return "none"
    if row_items(value) and not isinstance(value, str | int | float | bool):
        return _row_text(type(value).__name__, value)
    return repr(value)


def _cmd_identity(args: argparse.Namespace, io: _Output) -> int:
    """POST /v1/identity: a new identity and its token."""
    base = http_base(_url(args.host, args.port, args.tls))
    request = urllib.request.Request(f"{base}/v1/identity", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise CliError(f"{base} answered POST /v1/identity with HTTP {err.code}", EXIT_UNREACHABLE) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CliError(f"cannot connect to {base}: {reason}", EXIT_UNREACHABLE) from err
    except ValueError as err:
        raise CliError(f"{base} did not answer with JSON", EXIT_UNREACHABLE) from err
    identity, token = str(body.get("identity", "")), str(body.get("token", ""))
    if args.save:
        from rx_spacetimedb.credentials import CredentialStore

        CredentialStore(args.save).save(token)
        token_shown: str | None = None
    else:
        token_shown = token
    if args.json:
        _json_line(io.out, {"identity": identity, **({"token": token_shown} if token_shown else {})})
    else:
        io.print(f"identity: {identity}")
        if token_shown:
            io.print(f"token: {token_shown}")
    if args.save:
        io.status(f"token saved to {args.save}")
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace, io: _Output) -> int:
    """Subscribe and print diffs as they come, until Ctrl-C, ``--limit`` or a fatal error."""
    target = f"{_url(args.host, args.port, args.tls)} database {args.database!r}"
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    with _ctrl_c_as_event(events):
        conn = _open(args, reconnect=not args.no_reconnect)
        try:
            conn.states.subscribe(lambda state: events.put(("state", state)),
                                  on_completed=lambda: events.put(("state", conn.state)))
            conn.diffs.subscribe(lambda diff: events.put(("diff", diff)),
                                 lambda e: events.put(("error", e)))
            request = conn.subscribe_multi(args.queries)
            request.outcome.subscribe(lambda _: events.put(("applied", None)),
                                      lambda e: events.put(("error", e)))
            return _watch_loop(args, io, conn, events, target)
        finally:
            conn.close()


@contextlib.contextmanager
def _ctrl_c_as_event(events: queue.Queue[tuple[str, Any]]) -> Iterator[None]:
    """Within: the first Ctrl-C queues a ``("stop", None)`` event; a second one interrupts.

    A ``KeyboardInterrupt`` lands wherever the main thread happens to be (mid-print, inside the
    connection's close); as an event, the watch loop stops where it chooses and closes cleanly.
    Only the main thread can set a signal handler; elsewhere (tests) Ctrl-C keeps its default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # ignored (a background job) or someone else's
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once
        events.put(("stop", None))

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch_loop(args: argparse.Namespace, io: _Output, conn: Connection,
                events: queue.Queue[tuple[str, Any]], target: str) -> int:
    """Print events in the main thread, in arrival order (the I/O thread only queues them)."""
    io.status(f"connecting to {target} ...")
    connected_once = False
    changes = 0
    while True:
        try:
            kind, value = _next_event(events, args.timeout if not connected_once else None)
        except queue.Empty:
            raise TransportError(f"no connection within {args.timeout:g} s") from None
        if kind == "state":
            state: ConnectionState = value
            if state.status == "connected":
                again = " again" if connected_once else ""
                connected_once = True
                identity = state.identity.hex if state.identity is not None else "?"
                io.status(f"connected{again} to {target} as {identity}")
            elif not connected_once and state.error is not None:
                # The first attempt failed. (A late subscriber may see it as "reconnecting" only:
                # ``states`` replays just the latest state.)
                raise state.error
            elif state.status == "disconnected" and state.error is not None:
                if args.no_reconnect:
                    raise state.error
                io.status(f"disconnected: {_one_line(str(state.error), conn.token)}")
            elif state.status == "reconnecting":
                io.status(f"reconnecting in {state.delay:.1f} s (attempt {state.attempt})")
            elif state.status == "closed" and state.error is not None:
                raise state.error
        elif kind == "stop":
            io.status("stopped")
            return EXIT_OK
        elif kind == "applied":
            io.status(f"subscribed: {'; '.join(args.queries)}")
        elif kind == "error":
            raise value
        elif kind == "diff" and _print_diff(args, io, value):
            changes += 1
            if args.limit is not None and changes >= args.limit:
                return EXIT_OK


_WAKE_UP = 0.25
"""Longest wait of the main thread in one blocking call (see ``_next_event``)."""


def _next_event(events: queue.Queue[tuple[str, Any]], timeout: float | None) -> tuple[str, Any]:
    """``events.get(timeout=timeout)``, in waits of at most ``_WAKE_UP`` seconds.

    Ctrl-C reaches Python code only in the main thread. When the kernel hands SIGINT to another
    thread (the I/O thread), a main thread blocked in one untimed ``get`` would never wake to raise
    ``KeyboardInterrupt``; waking up now and then lets it.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = _WAKE_UP if deadline is None else min(_WAKE_UP, max(deadline - time.monotonic(), 0.0))
        try:
            return events.get(timeout=wait)
        except queue.Empty:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def _print_diff(args: argparse.Namespace, io: _Output, diff: TransactionDiff) -> bool:
    """Print one transaction's (or snapshot's) changes; False when it changed nothing."""
    tables = [t for t in diff.tables if t]
    if not tables and diff.cause != "subscribe":
        return False
    if args.json:
        for table in tables:
            _json_line(io.out, diff_json(table))
        if not tables:  # an empty snapshot still says "subscribed, no rows yet"
            _json_line(io.out, {"table": None, "cause": "subscribe", "reducer": None,
                                "inserts": [], "deletes": [], "updates": []})
        return True
    rows = sum(len(t.inserts) + len(t.deletes) + len(t.updates) for t in tables)
    io.print(f"# {_cause(diff)} ({rows} row{'' if rows == 1 else 's'})")
    for table in tables:
        for line in diff_lines(table):
            io.print(line)
    return True


# -- the demo --------------------------------------------------------------------------------


_DEMO_COLUMNS = ("id", "name", "score")


def run_demo(io: _Output, timeout: float = 10.0) -> int:
    """The README's demo: emulator, connection, live diffs of ``Player`` while reducers run.

    Output is deterministic: identities, timestamps and ports are left out, and the main thread
    prints each change after its reducer call has been answered (the diffs arrive on the
    connection's I/O thread and are handed over through a queue).
    """
    from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module

    with SpacetimeDBEmulator(example_module()) as server:
        server.call_reducer("CreatePlayer", ["ada"])  # a row that is there before we connect
        io.print(f"Started the embedded SpacetimeDB emulator (example module, database {server.database!r}).")
        with connect(server.url, server.database, reconnect=False, request_timeout=timeout) as conn:
            conn.wait_connected(timeout)
            io.print("Connected. Every change to Player is printed as it arrives:")
            io.print("  + inserted   ~ updated   - deleted")
            lines: queue.Queue[list[str]] = queue.Queue()
            # The Rx part: each table diff becomes text on the I/O thread; the main thread prints it.
            def as_text(diff: TableDiff[Any]) -> list[str]:
                return [f"    {line}" for line in diff_lines(diff, _DEMO_COLUMNS)]

            conn.table_diffs("Player").pipe(ops.map(as_text)).subscribe(lines.put)

            def step(title: str, action: Callable[[], Any], changes: bool = True) -> None:
                io.print(f"> {title}")
                try:
                    action()
                except SpacetimeDBError as err:
                    io.print(f"    failed: {err}")
                    return
                if changes:
                    for line in lines.get(timeout=timeout):
                        io.print(line)

            step("subscribe_single('SELECT * FROM Player')",
                 lambda: conn.subscribe_single("SELECT * FROM Player").result(timeout))
            for name in ("alice", "bob", "carol"):
                step(f"call_reducer('CreatePlayer', [{name!r}])",
                     functools.partial(_call_and_wait, conn, "CreatePlayer", [name], timeout))
            step("call_reducer('SetScore', [2, 42])",
                 lambda: conn.call_reducer("SetScore", [2, 42]).result(timeout))
            step("call_reducer('SetScore', [3, 17])",
                 lambda: conn.call_reducer("SetScore", [3, 17]).result(timeout))
            step("server.call_reducer('SetScore', [1, 7])   # a change made elsewhere",
                 lambda: server.call_reducer("SetScore", [1, 7]))
            step("call_reducer('CreatePlayer', ['alice'])   # the name is taken: the reducer fails",
                 lambda: conn.call_reducer("CreatePlayer", ["alice"]).result(timeout), changes=False)
            step("call_reducer('DeletePlayer', [4])",
                 lambda: conn.call_reducer("DeletePlayer", [4]).result(timeout))
            query = "SELECT * FROM Player WHERE score > 10"
            io.print(f"> one_off_query({query!r})")
            found = conn.one_off_query(query).result(timeout).rows
            io.print(f"    {', '.join(str(row.name) for row in found)}")
            rows: list[Any] = sorted(conn.table("Player").rows(), key=lambda row: row.id)
            io.print("Final Player table (conn.table('Player').rows()):")
            io.print(text_table(rows, _DEMO_COLUMNS))
    io.print("Closed the connection and stopped the emulator.")
    return EXIT_OK


def _call_and_wait(conn: Connection, reducer: str, args: list[Any], timeout: float) -> m.TransactionUpdate:
    """Call a reducer and block until its answer."""
    return conn.call_reducer(reducer, args).result(timeout)


# -- entry point -----------------------------------------------------------------------------


def _cmd_generate(args: argparse.Namespace, io: _Output) -> int:
    """Read or fetch the schema, write the typed module (through a temporary file: never half)."""
    if (args.schema is None) == (args.database is None):
        raise CliError("generate: give either --schema FILE or --database NAME (with --host)", EXIT_USAGE)
    if args.schema is not None:
        try:
            text = Path(args.schema).read_bytes()
        except OSError as err:
            raise CliError(f"--schema: cannot read {args.schema}: {err.strerror}", EXIT_USAGE) from None
        try:
            schema = ModuleSchema.from_json(text)
        except ProtocolError as err:
            raise CliError(f"--schema {args.schema}: not a module schema: {err}", EXIT_USAGE) from None
        source = Path(args.schema).name
    else:
        url = _url(args.host, args.port, args.tls)
        schema = asyncio.run(fetch_schema(url, args.database, token=_token(args), timeout=args.timeout))
        source = f"database {args.database}"
    module = generate_module(schema, source=source)
    if args.out == "-":
        io.print(module.rstrip("\n"))
        return EXIT_OK
    out = Path(args.out)
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(module, encoding="utf-8")
        os.replace(partial, out)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise CliError(f"--out: cannot write {args.out}: {err.strerror}", EXIT_USAGE) from None
    io.status(f"wrote {out} ({len(schema.tables)} tables, {len(schema.reducers)} reducers, "
              f"{len(schema.procedures)} procedures)")
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, _Output], int]] = {
    "generate": _cmd_generate,
    "sql": _cmd_sql,
    "call": _cmd_call,
    "identity": _cmd_identity,
    "watch": _cmd_watch,
}


@contextlib.contextmanager
def _quiet_library_logs(verbose: int) -> Iterator[None]:
    """Keep library warnings off stderr (errors get their one line) unless ``-v`` asks for logs."""
    logger = logging.getLogger("rx_spacetimedb")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        old_level = logger.level
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    else:
        handler = logging.NullHandler()
        old_level = logger.level
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run one command; returns its exit code (see ``--help``) instead of raising."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # help and usage too
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    io = _Output(out, err)
    token = _token(args) if hasattr(args, "token") else None
    target = (f"{_url(args.host, args.port, args.tls)}" if hasattr(args, "host") else "the emulator")
    try:
        with _quiet_library_logs(getattr(args, "verbose", 0)):
            if args.command == "demo":
                return run_demo(io)
            return _COMMANDS[args.command](args, io)
    except KeyboardInterrupt:
        io.status("interrupted")
        return 130
    except BrokenPipeError:
        # `... | head`: the reader left; say nothing and keep the interpreter from complaining at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK
    except Exception as error:  # every failure ends as one line and a documented exit code
        failure = _describe(error, target)
        io.status(f"error: {_one_line(str(failure), token)}")
        return failure.code
