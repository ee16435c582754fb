"""The connection over real loopback WebSockets against the embedded emulator."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from reactivex import operators as ops
from reactivex.subject import ReplaySubject

import rx_spacetimedb
from rx_spacetimedb import (
    AuthenticationFailed,
    ConnectionClosedByUser,
    ConnectionState,
    DatabaseNotFound,
    ProtocolError,
    ReducerFailed,
    RequestAborted,
    RequestTimeout,
    SubscriptionFailed,
)
from rx_spacetimedb.connection import Connection
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import decode_client_message, encode_server_message
from rx_spacetimedb.protocol.values import ConnectionId, Identity
from rx_spacetimedb.testing import SpacetimeDBEmulator
from rx_spacetimedb.transport import Transport
from tests.conftest import WAIT, wait_for


def open_conn(server: SpacetimeDBEmulator, **options: Any) -> Connection:
    options.setdefault("reconnect_delay", 0.02)
    options.setdefault("max_reconnect_delay", 0.2)
    return rx_spacetimedb.connect(server.url, server.database, **options)


def collect(conn: Connection) -> list[m.ServerMessage]:
    seen: list[m.ServerMessage] = []
    conn.messages.subscribe(seen.append)
    return seen


def record(conn: Connection) -> ReplaySubject[m.ServerMessage]:
    """Every message from now on, replayed to each wait (so no wait can miss one)."""
    replay: ReplaySubject[m.ServerMessage] = ReplaySubject()
    conn.messages.subscribe(replay)
    return replay


def test_connect_gives_identity_and_a_repr_without_the_token(server: SpacetimeDBEmulator) -> None:
    with open_conn(server, name="lobby") as conn:
        token = conn.wait_connected(WAIT)
        assert conn.state.status == "connected"
        assert conn.state.identity == token.identity
        assert conn.connection_id == token.connection_id
        assert conn.token == token.token
        text = repr(conn)
        assert server.database in text and "connected" in text and token.identity.hex in text
        assert text.startswith("<Connection 'lobby' [")
        assert token.token not in text
        assert token.token not in repr(token)
    assert conn.state.status == "closed"


def test_reducer_round_trip_and_the_cache(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)
        applied = conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        assert isinstance(applied, m.SubscribeApplied)
        update = conn.call_reducer("CreatePlayer", ["alice"]).result(WAIT)
        assert isinstance(update.status, m.Committed)
        assert update.caller_connection_id == conn.connection_id
        assert [p.name for p in conn.table("Player").rows()] == ["alice"]
        assert conn.cache.count("Player") == 1


def test_two_clients_see_each_other(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as writer, open_conn(server, light=True) as light_reader, \
            open_conn(server) as full_reader:
        for conn in (writer, light_reader, full_reader):
            conn.wait_connected(WAIT)
            conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        light_seen = collect(light_reader)
        full_seen = collect(full_reader)
        diffs = light_reader.table_diffs("Player").pipe(ops.replay())
        diffs.connect()  # type: ignore[attr-defined]
        writer.call_reducer("CreatePlayer", ["bob"]).result(WAIT)
        got = wait_for(light_reader.table("Player").snapshots, lambda rows: len(rows) == 1)
        assert got[0].name == "bob"
        wait_for(full_reader.table("Player").snapshots, lambda rows: len(rows) == 1)
        assert any(isinstance(x, m.TransactionUpdateLight) for x in light_seen)
        assert not any(isinstance(x, m.TransactionUpdate) for x in light_seen)
        full = [x for x in full_seen if isinstance(x, m.TransactionUpdate)]
        assert full and full[0].caller_connection_id == writer.connection_id
        first = wait_for(diffs, lambda d: bool(d.inserts))
        assert [p.name for p in first.inserts] == ["bob"]


def test_one_off_query_and_procedure(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["carol"])
    with open_conn(server) as conn:
        result = conn.one_off_query("SELECT * FROM Player WHERE name = 'carol'").result(WAIT)
        assert result.table_name == "Player"
        assert [p.name for p in result.rows] == ["carol"]
        found = conn.call_procedure("FindPlayer", ["carol"]).result(WAIT)
        assert found.name == "carol"
        assert conn.call_procedure("FindPlayer", {"name": "nobody"}).result(WAIT) is None
        with pytest.raises(rx_spacetimedb.QueryFailed):
            conn.one_off_query("SELECT * FROM Nope").result(WAIT)


def test_failed_and_unknown_reducers_settle_with_typed_errors(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.call_reducer("CreatePlayer", ["dave"]).result(WAIT)
        with pytest.raises(ReducerFailed, match="already taken"):
            conn.call_reducer("CreatePlayer", ["dave"]).result(WAIT)
        # One way, whatever the timing: the schema knows the names, so it fails at once, unsent...
        unsent = conn.call_reducer("NoSuchReducer", [])
        assert unsent.done and not unsent.sent
        with pytest.raises(ReducerFailed, match="no such reducer"):
            unsent.result(0)
    # ...and without a schema the server answers with request_id 0 (§7.4): matched by name and order.
    with open_conn(server, fetch_schema=False) as raw, pytest.raises(ReducerFailed, match="no such reducer"):
        raw.call_reducer("NoSuchReducer", []).result(WAIT)


def test_drop_reconnects_with_same_identity_and_resubscribes_without_duplicates(
        server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        first = conn.wait_connected(WAIT)
        conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        seen = record(conn)
        inserts: list[Any] = []
        conn.table("Player").inserts.subscribe(inserts.append)
        server.drop_all()
        second = wait_for(conn.identity, lambda t: t.connection_id != first.connection_id)
        assert second.identity == first.identity
        assert conn.token == first.token
        wait_for(seen, lambda x: isinstance(x, m.SubscribeApplied))
        assert server.clients[-1].subscribed_queries == ["SELECT * FROM Player"]
        server.call_reducer("CreatePlayer", ["erin"])
        wait_for(conn.table("Player").snapshots, lambda rows: len(rows) == 1)
        assert [p.name for p in inserts] == ["erin"]
        assert len(conn.table("Player").rows()) == 1


def test_changes_while_away_come_out_as_one_net_diff(server: SpacetimeDBEmulator) -> None:
    for name in ("a", "b", "c"):
        server.call_reducer("CreatePlayer", [name])
    with open_conn(server) as conn:
        conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        live = conn.table("Player")
        assert sorted(p.name for p in live.rows()) == ["a", "b", "c"]
        diffs: list[Any] = []
        conn.table_diffs("Player").subscribe(diffs.append)
        server.refuse_connections(2)
        server.drop_all()
        a, b, _ = sorted(server.table_rows("Player"), key=lambda p: p.name)
        server.call_reducer("DeletePlayer", [a.id])
        server.call_reducer("SetScore", [b.id, 77])
        server.call_reducer("CreatePlayer", ["d"])
        diff = wait_for(conn.table_diffs("Player"), lambda d: d.cause == "resync")
        assert [p.name for p in diff.deletes] == ["a"]
        assert [(old.score, new.score) for old, new in diff.updates] == [(0, 77)]
        assert [p.name for p in diff.inserts] == ["d"]
        assert [d.cause for d in diffs] == ["resync"]  # never a wipe and a refill
        assert sorted(p.name for p in live.rows()) == ["b", "c", "d"]


def test_server_down_at_start_is_retried_with_backoff(server: SpacetimeDBEmulator) -> None:
    server.refuse_connections(2)
    states: list[ConnectionState] = []
    with open_conn(server, reconnect_delay=0.01, max_reconnect_delay=1) as conn:
        conn.states.subscribe(states.append)
        conn.wait_connected(WAIT)
    retries = [s for s in states if s.status == "reconnecting"]
    assert [(s.attempt, s.delay) for s in retries] == [(1, 0.01), (2, 0.02)]
    assert all(isinstance(s.error, rx_spacetimedb.HandshakeError) for s in retries)


@pytest.mark.parametrize(("options", "error"), [
    ({"token": "not-a-valid-token"}, AuthenticationFailed),
    ({"database_override": "nope"}, DatabaseNotFound),
])
def test_fatal_handshake_errors_are_not_retried(server: SpacetimeDBEmulator, options: dict[str, Any],
                                                error: type[Exception]) -> None:
    database = options.pop("database_override", server.database)
    conn = rx_spacetimedb.connect(server.url, database, reconnect_delay=0.001, **options)
    with pytest.raises(error):
        conn.wait_connected(WAIT)
    final = wait_for(conn.states.pipe(ops.start_with(conn.state)), lambda s: s.status == "closed")
    assert isinstance(final.error, error)
    failures: list[Exception] = []
    conn.messages.subscribe(on_error=failures.append)
    assert isinstance(failures[0], error)
    assert not any(s.status == "reconnecting" for s in [conn.state])
    conn.close()


def test_reconnect_false_surfaces_the_first_failure(server: SpacetimeDBEmulator) -> None:
    server.refuse_connections(1)
    conn = open_conn(server, reconnect=False)
    errors: list[Exception] = []
    conn.messages.subscribe(on_error=errors.append)
    final = wait_for(conn.states.pipe(ops.start_with(conn.state)), lambda s: s.status == "closed")
    assert isinstance(final.error, rx_spacetimedb.HandshakeError) and final.error.status == 503
    assert errors == [final.error]
    conn.close()


def test_close_while_reconnecting_stops_everything(server: SpacetimeDBEmulator) -> None:
    server.refuse_connections(10_000)
    conn = open_conn(server, reconnect_delay=0.005, max_reconnect_delay=0.005)
    wait_for(conn.states, lambda s: s.status == "reconnecting" and s.attempt >= 2)
    completed = threading.Event()
    conn.messages.subscribe(on_completed=completed.set)
    conn.close()
    assert completed.is_set()
    assert conn.state.status == "closed"
    attempts = server._refuse
    conn.close()  # idempotent
    with pytest.raises(ConnectionClosedByUser):
        conn.call_reducer("CreatePlayer", ["x"])
    assert server._refuse == attempts  # no attempt after close


def test_requests_while_disconnected_are_queued_and_sent_on_reconnect(
        server: SpacetimeDBEmulator) -> None:
    server.refuse_connections(3)
    with open_conn(server, reconnect_delay=0.01) as conn:
        request = conn.call_reducer("CreatePlayer", ["queued"])
        assert not request.done
        update = request.result(WAIT)
        assert isinstance(update.status, m.Committed)
    assert [p.name for p in server.table_rows("Player")] == ["queued"]


def test_queue_is_bounded(server: SpacetimeDBEmulator) -> None:
    server.refuse_connections(10_000)
    with open_conn(server, max_queued_requests=2) as conn:
        conn.call_reducer("CreatePlayer", ["1"])
        conn.call_reducer("CreatePlayer", ["2"])
        with pytest.raises(RequestAborted, match="queued"):
            conn.call_reducer("CreatePlayer", ["3"])


def test_sent_request_is_aborted_when_the_socket_drops(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)
        server.pause()
        request = conn.call_reducer("CreatePlayer", ["lost"])
        wait_for(conn.states, lambda s: True)  # the state replays: the call is on the wire now
        server.drop_all()
        with pytest.raises(RequestAborted):
            request.result(WAIT)
        server.resume()


def test_request_timeout(server: SpacetimeDBEmulator) -> None:
    assert issubclass(RequestTimeout, TimeoutError)  # caught by code that handles any timeout
    with open_conn(server, request_timeout=0.05) as conn:
        conn.wait_connected(WAIT)
        server.pause()
        with pytest.raises(RequestTimeout):
            conn.call_reducer("CreatePlayer", ["slow"]).result(WAIT)
        server.resume()


def test_subscription_errors_and_unsubscribe(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["fay"])
    with open_conn(server) as conn:
        with pytest.raises(SubscriptionFailed, match="Playr"):
            conn.subscribe_single("SELECT * FROM Playr").result(WAIT)
        sub = conn.subscribe_single("SELECT * FROM Player")
        sub.result(WAIT)
        assert conn.cache.count("Player") == 1
        answer = conn.unsubscribe(sub).result(WAIT)
        assert isinstance(answer, m.UnsubscribeApplied)
        assert conn.cache.count("Player") == 0
        with pytest.raises(ValueError, match="query_id"):
            conn.unsubscribe(sub)


def test_failing_observer_does_not_stop_the_others(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        reported: ReplaySubject[Exception] = ReplaySubject()
        conn.errors.subscribe(reported)

        def explode(_: object) -> None:
            raise RuntimeError("user bug")

        conn.messages.subscribe(explode)
        seen = record(conn)  # subscribed after the failing observer: it must still get every message
        conn.call_reducer("CreatePlayer", ["gus"]).result(WAIT)
        wait_for(seen, lambda x: isinstance(x, m.TransactionUpdate))
        wait_for(reported, lambda e: isinstance(e, RuntimeError))
        conn.call_reducer("CreatePlayer", ["hal"]).result(WAIT)  # the socket reader survived
        wait_for(seen, lambda x: isinstance(x, m.TransactionUpdate) and "hal" in x.reducer_call.args)


def test_malformed_frame_is_reported_and_the_stream_goes_on(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)
        reported: ReplaySubject[Exception] = ReplaySubject()
        conn.errors.subscribe(reported)
        seen = record(conn)
        server.inject('{"TransactionUpdate": 5}')
        server.inject('{"FutureMessage": {"x": 1}}')
        conn.call_reducer("CreatePlayer", ["ivy"]).result(WAIT)
        error = wait_for(reported, lambda e: True)
        assert isinstance(error, ProtocolError) and "TransactionUpdate" in str(error)
        unknown = wait_for(seen, lambda x: isinstance(x, m.UnknownServerMessage))
        assert isinstance(unknown, m.UnknownServerMessage) and unknown.tag == "FutureMessage"
        assert conn.state.status == "connected"


def test_handler_object_dict_and_tuple(server: SpacetimeDBEmulator) -> None:
    calls: list[tuple[str, Any]] = []

    class Handler:
        def on_identity_token(self, message: m.IdentityToken) -> None:
            calls.append(("object", message.identity))

    handlers = [
        Handler(),
        {"on_identity_token": lambda msg: calls.append(("dict", msg.identity))},
        ({"on_identity_token": lambda msg, arg: calls.append((arg, msg.identity))}, "tuple"),
    ]
    for handler in handlers:
        with open_conn(server, handler=handler) as conn:
            conn.wait_connected(WAIT)
            wait_for(conn.identity, lambda t: True)
    assert [kind for kind, _ in calls] == ["object", "dict", "tuple"]
    with pytest.raises(ValueError, match="handler"):
        open_conn(server, handler={"identity_token": print})


def test_asyncio_helpers_resolve_on_the_callers_loop(server: SpacetimeDBEmulator) -> None:
    async def main() -> str:
        async with open_conn(server) as conn:
            token = await conn.connected(WAIT)
            update = await conn.call_reducer("CreatePlayer", ["jo"])
            assert update.caller_identity == token.identity
            rows = await conn.one_off_query("SELECT * FROM Player")
            return str(rows.rows[0].name)

    assert asyncio.run(main()) == "jo"


def test_credentials_file_keeps_the_identity_across_runs(server: SpacetimeDBEmulator,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "creds" / "token"
    with open_conn(server, credentials=path) as conn:
        first = conn.wait_connected(WAIT)
    assert path.read_text() == first.token
    assert path.stat().st_mode & 0o777 == 0o600
    with open_conn(server, credentials=path) as again:
        assert again.wait_connected(WAIT).identity == first.identity


def test_token_never_logged(server: SpacetimeDBEmulator, caplog: pytest.LogCaptureFixture) -> None:
    _, token = server.mint_token()
    with caplog.at_level(logging.DEBUG), open_conn(server, token=token) as conn:
        conn.wait_connected(WAIT)
        conn.call_reducer("CreatePlayer", ["kim"]).result(WAIT)
        server.drop_all()
        wait_for(conn.states, lambda s: s.status == "connected")
        assert token not in repr(conn) and token not in repr(conn.state)
    assert caplog.records and token not in caplog.text  # neither the client's logs nor the emulator's


@pytest.mark.parametrize(("kwargs", "option"), [
    ({"port": 0}, "port"),
    ({"port": "3000"}, "port"),
    ({"tls": "yes"}, "tls"),
    ({"token": ""}, "token"),
    ({"reconnect_delay": -1}, "reconnect_delay"),
    ({"reconnect_delay": "1"}, "reconnect_delay"),
    ({"reconnect_delay": 1, "max_reconnect_delay": 0.5}, "max_reconnect_delay"),
    ({"reconnect_delay": 1, "reconnect_delay_ms": 1000}, "reconnect_delay_ms"),
    ({"ping_interval": 0}, "ping_interval"),
    ({"open_timeout": -1}, "open_timeout"),
    ({"row_types": ["Player"]}, "row_types"),
    ({"subscribe": "SELECT * FROM Player"}, "subscribe"),
    ({"credentials": 3}, "credentials"),
    ({"max_queued_requests": -1}, "max_queued_requests"),
    ({"request_timeout": 0}, "request_timeout"),
    ({"reconnect_jitter": 2}, "jitter"),
    ({"host": "ftp://x"}, "host"),
    ({"database": ""}, "database"),
    ({"ssl_context": "x"}, "ssl_context"),
])
def test_invalid_options_raise_at_the_call_naming_the_option(kwargs: dict[str, Any], option: str) -> None:
    kwargs = {"host": "localhost", "database": "db", **kwargs}
    with pytest.raises((ValueError, TypeError), match=option):
        rx_spacetimedb.connect(**kwargs)


def test_the_options_are_one_frozen_object_in_seconds_without_the_token() -> None:
    from tests.test_failures import dead_port  # (it imports this module)

    conn = rx_spacetimedb.connect("127.0.0.1", "db", port=dead_port(), token="secret-token",
                                  reconnect=False, reconnect_delay=0.25, max_reconnect_delay=2)
    try:
        options = conn.options
        assert (options.url, options.reconnect_delay, options.max_reconnect_delay) == (
            f"ws://127.0.0.1:{options.port}", 0.25, 2)
        with pytest.raises(AttributeError):
            options.reconnect_delay = 1  # type: ignore[misc]
        assert "secret-token" not in repr(options)
    finally:
        conn.close()


@pytest.mark.parametrize(("old", "new", "ms"), [("reconnect_delay_ms", "reconnect_delay", 400),
                                                ("max_reconnect_delay_ms", "max_reconnect_delay", 40_000)])
def test_the_old_millisecond_names_still_work_with_a_deprecation_warning(old: str, new: str, ms: int) -> None:
    from tests.test_failures import dead_port

    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: pass {new}="):
        conn = rx_spacetimedb.connect("127.0.0.1", "db", port=dead_port(), reconnect=False,
                                      **{old: ms})
    try:
        assert getattr(conn.options, new) == ms / 1000
    finally:
        conn.close()


def test_request_arguments_are_checked_at_the_call(server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)
        with pytest.raises(rx_spacetimedb.SchemaError, match="name"):
            conn.call_reducer("CreatePlayer", [1])
        with pytest.raises(TypeError, match="args"):
            conn.call_reducer("CreatePlayer", "alice")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="flags"):
            conn.call_reducer("CreatePlayer", ["x"], flags=7)
        with pytest.raises(ValueError, match="queries"):
            conn.subscribe_single("  ")


def test_wait_connected_fails_when_the_first_failure_is_final(server: SpacetimeDBEmulator) -> None:
    server.refuse_connections(1)
    conn = open_conn(server, reconnect=False)
    with pytest.raises(rx_spacetimedb.HandshakeError, match="503"):
        conn.wait_connected(WAIT)
    conn.close()


def test_a_late_subscriber_still_gets_the_final_state(server: SpacetimeDBEmulator) -> None:
    conn = rx_spacetimedb.connect(server.url, "nope")
    with pytest.raises(DatabaseNotFound):
        conn.wait_connected(WAIT)
    seen: list[ConnectionState] = []
    done = threading.Event()
    conn.states.subscribe(seen.append, on_completed=done.set)
    assert done.is_set()
    assert [s.status for s in seen] == ["closed"] and isinstance(seen[0].error, DatabaseNotFound)
    conn.close()


def test_states_tell_each_step_once(server: SpacetimeDBEmulator) -> None:
    states: list[str] = []
    with open_conn(server) as conn:
        conn.states.subscribe(lambda s: states.append(s.status))
        conn.wait_connected(WAIT)
        server.drop_all()
        # The list's observer subscribed first, so it has the state this predicate is looking at.
        wait_for(conn.states, lambda s: states.count("connected") == 2)
    assert states[:2] == ["connecting", "connected"]
    assert states[2:6] == ["disconnected", "reconnecting", "connecting", "connected"]
    assert states[-1] == "closed"


def test_subscriptions_made_while_connecting_are_sent_exactly_once(server: SpacetimeDBEmulator) -> None:
    """Subscribing races the IdentityToken's resend: each query must reach the server once."""
    conn = open_conn(server)
    requests = [conn.subscribe_single(f"SELECT * FROM Player WHERE score = {i}") for i in range(150)]
    for request in requests:
        assert isinstance(request.result(WAIT), m.SubscribeApplied)
    received = [decode_client_message(text) for text in server.clients[-1].received]
    sent = [frame for frame in received if isinstance(frame, m.SubscribeSingle)]
    assert sorted(f.query_id for f in sent) == sorted(r.id for r in requests)
    conn.close()


def test_a_subscription_made_in_a_connected_callback_is_sent_once(server: SpacetimeDBEmulator) -> None:
    """The callback runs on the I/O thread right as the resend list is made: it must not be in both."""
    conn = open_conn(server)
    made: list[Any] = []

    def on_state(state: ConnectionState) -> None:
        if state.status == "connected" and not made:
            made.append(conn.subscribe_single("SELECT * FROM Player"))

    conn.states.subscribe(on_state)
    conn.wait_connected(WAIT)
    assert isinstance(made[0].result(WAIT), m.SubscribeApplied)
    conn.call_reducer("CreatePlayer", ["once"]).result(WAIT)  # after it: every earlier frame is in
    received = [decode_client_message(text) for text in server.clients[-1].received]
    assert [f.query_id for f in received if isinstance(f, m.SubscribeSingle)] == [made[0].id]
    conn.close()


def test_observers_run_under_no_library_lock(server: SpacetimeDBEmulator) -> None:
    """An observer on the I/O thread may wait for another thread that calls into the connection."""
    conn = open_conn(server)
    finished: list[str] = []

    def other_thread() -> None:
        conn.call_reducer("CreatePlayer", ["from another thread"])
        conn.subscribe_single("SELECT * FROM Player")
        finished.append(f"{conn!r} {conn.cache.count('Player')}")

    def on_message(message: m.ServerMessage) -> None:
        if isinstance(message, m.IdentityToken) and not finished:
            helper = threading.Thread(target=other_thread)
            helper.start()
            helper.join(WAIT)  # a lock held around this observer would block the helper
            finished.append("joined" if not helper.is_alive() else "blocked")

    conn.messages.subscribe(on_message)
    conn.wait_connected(WAIT)
    wait_for(conn.table("Player").snapshots, lambda rows: len(rows) == 1)
    assert finished[1] == "joined"
    conn.close()



class OneRead:
    """A stand-in transport whose socket delivers ``frames`` in one TCP read once ``go`` is set."""

    def __init__(self, frames: list[str | bytes], go: threading.Event) -> None:
        self._frames: list[str | bytes] | None = frames
        self._go = go
        self.closing = False
        self._closed = asyncio.Event()

    async def recv_batch(self) -> list[str | bytes]:
        if self._frames is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._go.wait, WAIT)
            frames, self._frames = self._frames, None
            return frames
        await self._closed.wait()
        raise asyncio.CancelledError

    async def send(self, text: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closing = True
        self._closed.set()


def test_the_frames_of_one_read_are_pumped_in_order_with_their_errors() -> None:
    def light(n: int) -> str:
        return encode_server_message(m.TransactionUpdateLight(n, m.DatabaseUpdate(())))

    frames: list[str | bytes] = [
        encode_server_message(m.IdentityToken(Identity(5), "t", ConnectionId(7))),
        light(1), "not json", b"\x00binary", light(2)]
    go, done = threading.Event(), threading.Event()

    async def open_one_read(*args: Any, **kwargs: Any) -> OneRead:
        return OneRead(frames, go)

    seen: list[str] = []

    def note(event: str) -> None:
        seen.append(event)
        if len(seen) == 5:
            done.set()

    with mock.patch.object(Transport, "open", open_one_read), rx_spacetimedb.connect(
            "ws://127.0.0.1:1", "db", fetch_schema=False, reconnect=False) as conn:
        conn.messages.subscribe(lambda message: note(
            f"light {message.request_id}" if isinstance(message, m.TransactionUpdateLight)
            else type(message).__name__))
        conn.errors.subscribe(lambda error: note(f"error {type(error).__name__}"))
        go.set()
        assert done.wait(WAIT)
    assert seen == ["IdentityToken", "light 1", "error ProtocolError", "error ProtocolError", "light 2"]
