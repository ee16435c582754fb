"""Bad server input: the connection reports a typed error, goes on where the spec allows, never hangs.

Frames are injected by the emulator (in order with its own messages) or, for what the emulator
would never do (a frame before ``IdentityToken``), sent by a scripted WebSocket server. Every wait
is bounded; a reducer round trip after the bad input proves the connection is still usable.

Five defects these tests found (a 4096-fragment limit, a leaked socket after a binary frame, stray
answers dropped silently, a snapshot for an unknown query id folded into the cache, a frame before
``IdentityToken`` folded) are fixed; their tests stay as regression tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import pytest
import reactivex
from reactivex import operators as ops
from reactivex.subject import ReplaySubject
from websockets.asyncio.server import ServerConnection

import rx_spacetimedb
from rx_spacetimedb import ConnectionState, ProtocolError
from rx_spacetimedb.connection import Connection
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import encode_server_message
from rx_spacetimedb.protocol.values import ConnectionId, Identity, TimeDuration, Timestamp
from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module
from tests._bare_server import BareServer
from tests.conftest import WAIT, wait_for

pytestmark = pytest.mark.timeout(60)

MIB = 2**20
_M = TypeVar("_M")
GHOST = {"id": 4242, "identity": {"__identity__": "0x01"}, "name": "ghost", "score": 0,
         "created_at": {"__timestamp_micros_since_unix_epoch__": 1}, "location": {"none": []}}
GHOST_ROW = orjson.dumps(GHOST).decode()


def player_update(inserts: Sequence[str] = (), deletes: Sequence[str] = ()) -> m.DatabaseUpdate:
    return m.DatabaseUpdate((m.TableUpdate(4097, "Player", len(inserts) + len(deletes),
                                           (m.QueryUpdate(tuple(deletes), tuple(inserts)),)),))


def light(inserts: Sequence[str] = (), deletes: Sequence[str] = ()) -> str:
    return encode_server_message(m.TransactionUpdateLight(0, player_update(inserts, deletes)))


def unknown_message(size: int) -> str:
    """A frame of exactly ``size`` bytes with a tag this client does not know."""
    head, tail = '{"FutureMessage":{"blob":"', '"}}'
    return head + "x" * (size - len(head) - len(tail)) + tail


def names(rows: Sequence[Any]) -> list[str]:
    return [row.name for row in rows]


class Client:
    """A connection with its errors, messages and states recorded (replayed to every wait)."""

    def __init__(self, url: str, database: str, **options: Any) -> None:
        self.conn: Connection = rx_spacetimedb.connect(url, database, reconnect_delay=0.001,
                                                       max_reconnect_delay=0.02, **options)
        self.errors: ReplaySubject[Exception] = ReplaySubject()
        self.messages: ReplaySubject[m.ServerMessage] = ReplaySubject()
        self.error_list: list[Exception] = []
        self.conn.errors.subscribe(self.errors)
        self.conn.errors.subscribe(self.error_list.append)
        self.conn.messages.subscribe(self.messages)
        self.states: ReplaySubject[ConnectionState] = ReplaySubject()
        self.conn.states.subscribe(self.states)

    def usable(self, name: str) -> m.TransactionUpdate:
        """A reducer round trip works (it settles after every frame sent before its answer)."""
        update = self.conn.call_reducer("CreatePlayer", [name]).result(WAIT)
        assert isinstance(update.status, m.Committed)
        return update

    def message(self, predicate: Callable[[m.ServerMessage], bool]) -> m.ServerMessage:
        return wait_for(self.messages, predicate)

    def error(self) -> Exception:
        return wait_for(self.errors, lambda _: True)


def open_client(server: SpacetimeDBEmulator) -> Client:
    client = Client(server.url, server.database)
    client.conn.wait_connected(WAIT)
    client.conn.subscribe_single("SELECT * FROM Player").result(WAIT)
    return client


@pytest.fixture
def client(server: SpacetimeDBEmulator) -> Iterator[Client]:
    subject = open_client(server)
    yield subject
    subject.conn.close()


# -- malformed frames and wrong field types -------------------------------------------------------

ROW_NOT_A_STRING = ('{"TransactionUpdateLight": {"request_id": 0, "update": {"tables": [{"table_id": 4097, '
                    '"table_name": "Player", "num_rows": 1, "updates": [{"deletes": [], "inserts": [5]}]}]}}}'
                    )


@pytest.mark.parametrize("frame", [
    pytest.param("{not json", id="broken-json"),
    pytest.param("", id="empty"),
    pytest.param("[1, 2]", id="array"),
    pytest.param('"TransactionUpdate"', id="string"),
    pytest.param("null", id="null"),
    pytest.param('{"a": 1, "b": 2}', id="two-keys"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="deep-nesting"),
    pytest.param('{"IdentityToken": {"identity": 5}}', id="identity-wrong-type"),
    pytest.param('{"TransactionUpdate": {"status": {"Committed": 5}}}', id="status-wrong-type"),
    pytest.param('{"TransactionUpdateLight": {"request_id": -1, "update": {"tables": []}}}',
                 id="u32-negative"),
    pytest.param('{"TransactionUpdateLight": {"request_id": 4294967296, "update": {"tables": []}}}',
                 id="u32-overflow"),
    pytest.param('{"TransactionUpdateLight": {"request_id": 1.5, "update": {"tables": []}}}',
                 id="u32-float"),
    pytest.param('{"SubscribeApplied": {"request_id": 1, "total_host_execution_duration_micros": 1, '
                 '"query_id": {"id": "x"}, "rows": null}}', id="query-id-wrong-type"),
    pytest.param('{"SubscriptionError": {"total_host_execution_duration_micros": 1, "request_id": 5, '
                 '"query_id": null, "table_id": null, "error": "x"}}', id="option-not-a-sum"),
    pytest.param(ROW_NOT_A_STRING, id="row-not-a-string"),
])
def test_malformed_frame_is_reported_and_the_socket_stays_up(
        server: SpacetimeDBEmulator, client: Client, frame: str) -> None:
    before = client.conn.connection_id
    server.inject(frame)
    error = client.error()
    assert isinstance(error, ProtocolError)
    assert error.raw == frame  # the whole frame is kept for logging...
    assert len(repr(error)) < 600  # ...but a repr shows only a preview
    client.usable("after")
    assert client.conn.connection_id == before and client.conn.state.status == "connected"
    assert len(client.error_list) == 1


@pytest.mark.parametrize("row", [
    pytest.param('{"id": "x"}', id="missing-and-wrong-columns"),
    pytest.param("not json", id="row-not-json"),
    pytest.param(orjson.dumps({**GHOST, "score": 2**31}).decode(), id="i32-overflow"),
    pytest.param(orjson.dumps({**GHOST, "extra": 1}).decode(), id="unknown-column"),
    pytest.param(orjson.dumps({**GHOST, "location": {"some": {"x": "far"}}}).decode(), id="f32-as-string"),
])
def test_bad_row_is_reported_and_its_transaction_leaves_the_cache_alone(
        server: SpacetimeDBEmulator, client: Client, row: str) -> None:
    good = orjson.dumps({**GHOST, "id": 99, "name": "good"}).decode()
    server.inject(light(inserts=[good, row]))  # one good row, one bad: the transaction is atomic
    error = client.error()
    assert isinstance(error, ProtocolError) and "Player" in str(error)
    client.usable("after")
    assert names(client.conn.table("Player").rows()) == ["after"]  # "good" never got in: nothing half-applied
    assert client.conn.cache.count("Player") == 1


def test_unknown_messages_pass_as_typed_unknown_messages(server: SpacetimeDBEmulator, client: Client) -> None:
    """A newer server may add variants (§6): they come out as ``UnknownServerMessage``, not errors."""
    payloads = ['{"FutureMessage": {"x": 1}}', '{"FutureMessage": null}', '{"Later": [1, 2]}', '{"X": 5}']
    for frame in payloads:
        server.inject(frame)
    client.usable("after")
    unknown = recorded(client, m.UnknownServerMessage)
    assert [x.tag for x in unknown] == ["FutureMessage", "FutureMessage", "Later", "X"]
    assert [x.raw for x in unknown] == payloads
    assert client.error_list == []


def recorded(client: Client, kind: type[_M]) -> list[_M]:
    """The messages of one kind received so far (the replay gives them synchronously)."""
    found: list[_M] = []
    client.messages.subscribe(lambda x: found.append(x) if isinstance(x, kind) else None).dispose()
    return found


# -- big frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fragment_size", [None, 4096], ids=["one-frame", "4-KiB-fragments"])
def test_32_mib_messages_are_received_whole_and_a_bad_one_is_reported(fragment_size: int | None) -> None:
    """The server caps what it receives at 32 MiB, not what it sends; the client takes 256 MiB."""
    with SpacetimeDBEmulator(example_module(), fragment_size=fragment_size) as server:
        client = open_client(server)
        try:
            before = client.conn.connection_id
            big = unknown_message(32 * MIB)
            server.inject(big)
            received = client.message(lambda x: isinstance(x, m.UnknownServerMessage))
            assert isinstance(received, m.UnknownServerMessage) and len(received.raw) == 32 * MIB
            bad = '{"TransactionUpdate": {"x": "' + "x" * (32 * MIB - 32) + '"}}'
            server.inject(bad)
            error = client.error()
            assert isinstance(error, ProtocolError) and len(repr(error)) < 600
            client.usable("after")
            assert client.conn.connection_id == before
        finally:
            client.conn.close()


def fragmented(fragments: int) -> tuple[Client, SpacetimeDBEmulator]:
    server = SpacetimeDBEmulator(example_module(), fragment_size=256).start()
    client = open_client(server)
    server.inject(unknown_message(fragments * 256))
    return client, server


@pytest.mark.parametrize("fragments", [4095, 4096])
def test_a_message_of_many_fragments_is_received(fragments: int) -> None:
    """websockets' recv() refuses 4096 fragments or more (Close 1009, whatever max_size says); the
    server sends 4 KiB fragments (spec §4), so that was every message over 16,773,120 bytes."""
    client, server = fragmented(fragments)
    try:
        received = client.message(lambda x: isinstance(x, m.UnknownServerMessage))
        assert isinstance(received, m.UnknownServerMessage) and len(received.raw) == fragments * 256
    finally:
        client.conn.close()
        server.stop()


# -- binary frames ---------------------------------------------------------------------------------


def is_disconnected(state: ConnectionState) -> bool:
    return state.status == "disconnected"


def error_of(state: ConnectionState) -> Exception | None:
    return state.error


def binary_frame_reported(client: Client) -> ProtocolError:
    """The typed error for a binary frame: on ``errors`` (socket kept) or in the state (socket ended)."""
    ended: reactivex.Observable[Any] = client.states.pipe(ops.filter(is_disconnected), ops.map(error_of))
    error = wait_for(reactivex.merge(client.errors, ended),
                     lambda e: isinstance(e, ProtocolError) and "binary" in str(e))
    assert isinstance(error, ProtocolError)
    return error


def test_binary_frame_is_reported_and_the_connection_stays_usable(
        server: SpacetimeDBEmulator, client: Client) -> None:
    """v1.json servers send text only: a typed error says so, and requests work afterwards (whether
    the connection reads on, as it does now, or reconnects)."""
    server.inject(b"\x00\x01binary")
    binary_frame_reported(client)
    wait_for(client.conn.states, lambda s: s.status == "connected")
    client.usable("after")


def test_binary_frame_leaves_one_socket_open(server: SpacetimeDBEmulator, client: Client) -> None:
    """The session used to forget the socket on a non-close error and reconnect: the old one stayed
    open (its keepalive kept the server from timing it out), two connections for one client."""
    server.inject(b"\x00\x01binary")
    binary_frame_reported(client)
    wait_for(client.conn.states, lambda s: s.status == "connected")
    server.wait_for_clients(1, timeout=1.0)


# -- answers nobody asked for ----------------------------------------------------------------------


def procedure_result(request_id: int, value: str) -> str:
    return encode_server_message(m.ProcedureResult(m.Returned(value), Timestamp(1), TimeDuration(1),
                                                   request_id))


def test_answers_to_unknown_request_ids_settle_nothing_and_disturb_nothing(
        server: SpacetimeDBEmulator, client: Client) -> None:
    server.call_reducer("CreatePlayer", ["carol"])
    first = client.conn.call_procedure("FindPlayer", ["carol"])
    assert first.result(WAIT).name == "carol"
    stale = first.id + 1  # the id the next request will get: its "answer" arrives before it exists
    frames = [
        procedure_result(stale, "null"),
        procedure_result(999_999, "null"),
        encode_server_message(m.OneOffQueryResponse(b"\x00\xff", None, (), TimeDuration(1))),
        encode_server_message(m.UnsubscribeApplied(77, 1, 4243, m.SubscribeRows(
            4097, "Player", m.TableUpdate(4097, "Player", 0, ())))),
        encode_server_message(m.SubscriptionError(1, 5555, 6666, None, "no such query")),
    ]
    for frame in frames:
        server.inject(frame)
    client.message(lambda x: isinstance(x, m.SubscriptionError))
    second = client.conn.call_procedure("FindPlayer", ["carol"])
    assert second.id == stale
    assert second.result(WAIT).name == "carol"  # the real answer, not the stale null
    client.usable("after")
    assert sorted(names(client.conn.table("Player").rows())) == ["after", "carol"]


def test_answers_to_unknown_request_ids_are_reported(server: SpacetimeDBEmulator, client: Client) -> None:
    """Issue #7 asks for a typed error; such answers used to be dropped without a word."""
    server.inject(procedure_result(999_999, "null"))
    client.usable("after")  # answered after the stray frame: any report of it has been made
    assert any(isinstance(e, ProtocolError) and "999999" in str(e) for e in client.error_list)


def test_snapshot_for_a_query_id_never_sent_is_reported_and_not_cached(
        server: SpacetimeDBEmulator, client: Client) -> None:
    """It used to be folded: rows under a phantom query id that unsubscribe() cannot release."""
    server.inject(encode_server_message(m.SubscribeApplied(77, 1, 4242, m.SubscribeRows(
        4097, "Player", m.TableUpdate(4097, "Player", 1, (m.QueryUpdate((), (GHOST_ROW,)),))))))
    client.usable("after")
    assert names(client.conn.table("Player").rows()) == ["after"]
    assert any(isinstance(e, ProtocolError) for e in client.error_list)


# -- a frame before IdentityToken ------------------------------------------------------------------


class ScriptedServer(BareServer):
    """A bare ``v1.json.spacetimedb`` WebSocket server sending the same frames to every connection."""

    def __init__(self, frames: Sequence[str]) -> None:
        super().__init__()
        self.frames = list(frames)
        self.connections = 0
        # Set by the test once its client's observers are subscribed: nothing is sent before.
        self.released = threading.Event()

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        await asyncio.get_running_loop().run_in_executor(None, self.released.wait, WAIT)
        for frame in self.frames:
            await ws.send(frame)
        await ws.wait_closed()


IDENTITY = m.IdentityToken(Identity(5), "token", ConnectionId(7))
AFTER_ROW = orjson.dumps({**GHOST, "id": 1, "name": "after"}).decode()


def scripted_client(server: ScriptedServer) -> Client:
    schema = SpacetimeDBEmulator(example_module()).schema
    client = Client(server.url, "db", schema=schema, fetch_schema=False)
    server.released.set()  # the client records every message: the script may start
    return client


def test_frame_before_identity_token_does_not_stop_the_connection() -> None:
    frames = [light(inserts=[GHOST_ROW]), encode_server_message(IDENTITY), light(inserts=[AFTER_ROW])]
    with ScriptedServer(frames) as server:
        client = scripted_client(server)
        try:
            token = client.conn.wait_connected(WAIT)
            assert token.identity == IDENTITY.identity and client.conn.connection_id == IDENTITY.connection_id
            client.message(lambda x: isinstance(x, m.TransactionUpdateLight) and "after" in str(x))
            assert client.conn.state.status == "connected" and server.connections == 1
        finally:
            client.conn.close()


def test_frame_before_identity_token_is_reported_and_not_cached() -> None:
    """IdentityToken is always the first message (§6.4); a frame before it used to be folded."""
    frames = [light(inserts=[GHOST_ROW]), encode_server_message(IDENTITY), light(inserts=[AFTER_ROW])]
    with ScriptedServer(frames) as server:
        client = scripted_client(server)
        try:
            client.conn.wait_connected(WAIT)
            client.message(lambda x: isinstance(x, m.TransactionUpdateLight) and "after" in str(x))
            assert any(isinstance(e, ProtocolError) and "IdentityToken" in str(e) for e in client.error_list)
            assert names(client.conn.cache.rows("Player")) == ["after"]
        finally:
            client.conn.close()
