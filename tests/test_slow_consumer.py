"""Slow consumers: what a subscriber that blocks does to the others, to memory and to the socket.

The design: the connection's I/O thread reads a frame, decodes it, folds it into the shared cache,
then calls every observer of ``messages``, then of ``diffs`` (and through them table diffs and live
tables), one after another, in subscription order, before it reads the next frame. Measured here:

* An observer that blocks (inline, without ``observe_on``) holds up every observer after it and
  every later message, for as long as it blocks; nothing is lost or reordered, and ``conn.cache``
  is already current (it is folded before observers run), but live tables and diff streams wait.
* Memory stays bounded while the I/O thread is blocked: nothing is read from the socket, so TCP
  flow control pushes back on the server. Here the server got about 4-6 MiB out (kernel socket
  buffers plus websockets' 16-frame receive queue) of 64 MiB it had to send, and then its ``send``
  blocked; the real server queues up to 16,384 messages and then drops the client (spec §8.1).
* The blocked client sends nothing either, not even Pongs: after the server's idle timeout (30 s on
  the real server) it is dropped without a Close frame. Once the observer returns, the connection
  reconnects and resyncs, and the cache and live tables come out right.
* With ``observe_on(scheduler)`` a slow consumer gets its own thread and queue: the others run at
  full speed. But reactivex's ``observe_on`` queue has no bound, so a consumer that stays slower
  than the stream holds every message it has not handled yet (64 blocked one-MiB messages held
  129 MiB: frame text plus decoded payload). ``observe_on_bounded(scheduler, max_pending, overflow)``
  is the bounded hop: the I/O thread never waits, and at most ``max_pending`` items wait for the
  consumer (dropping the oldest or newest, or ending that subscriber with ``SlowConsumer``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reactivex import operators as ops
from reactivex.scheduler import NewThreadScheduler
from reactivex.subject import ReplaySubject
from websockets.asyncio.server import ServerConnection

import rx_spacetimedb
from rx_spacetimedb import ConnectionState
from rx_spacetimedb.connection import Connection
from rx_spacetimedb.operators import LiveTable, observe_on_bounded
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import encode_server_message
from rx_spacetimedb.protocol.values import ConnectionId, Identity
from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module
from tests._bare_server import BareServer
from tests.conftest import WAIT, wait_for

pytestmark = pytest.mark.timeout(60)

MIB = 2**20


def connect(server: SpacetimeDBEmulator) -> Connection:
    return rx_spacetimedb.connect(server.url, server.database, reconnect_delay=0.001,
                                  max_reconnect_delay=0.02)


class Gate:
    """An observer that blocks on the first message matching ``when`` until ``release()``."""

    def __init__(self, when: Callable[[Any], bool]) -> None:
        self.when = when
        self.entered = threading.Event()
        self._open = threading.Event()
        self.seen: list[Any] = []

    def __call__(self, value: Any) -> None:
        self.seen.append(value)
        if not self.entered.is_set() and self.when(value):
            self.entered.set()
            self._open.wait(WAIT * 3)  # bounded: a failing test never hangs the I/O thread for good

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "the blocking observer was never called"

    def release(self) -> None:
        self._open.set()


class Counter:
    """Counts values and lets a test wait (bounded) for a count."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._changed = threading.Condition()

    def __call__(self, value: Any) -> None:
        with self._changed:
            self.values.append(value)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.values) >= count, timeout)


def is_transaction(message: object) -> bool:
    return isinstance(message, m.TransactionUpdate)


def transactions(values: list[Any]) -> list[m.TransactionUpdate]:
    return [x for x in values if isinstance(x, m.TransactionUpdate)]


@pytest.fixture
def conn(server: SpacetimeDBEmulator) -> Iterator[Connection]:
    connection = connect(server)
    connection.subscribe_single("SELECT * FROM Player").result(WAIT)
    yield connection
    connection.close()


def test_a_blocking_observer_holds_up_the_others_until_it_returns_and_nothing_is_lost(
        server: SpacetimeDBEmulator, conn: Connection) -> None:
    live: LiveTable[Any] = conn.table("Player")
    gate = Gate(is_transaction)
    conn.messages.subscribe(gate)
    after: list[m.ServerMessage] = []
    conn.messages.subscribe(after.append)
    try:
        server.call_reducer("CreatePlayer", ["a"])
        gate.wait_entered()
        # The I/O thread is inside the first observer: the next one has not seen the message...
        assert transactions(after) == []
        # ...but the shared cache was folded before any observer ran.
        assert [p.name for p in conn.cache.rows("Player")] == ["a"]
        server.call_reducer("CreatePlayer", ["b"])
        server.call_reducer("CreatePlayer", ["c"])
        # Held up as long as the first observer blocks: later messages, their diffs, live tables.
        assert transactions(after) == []
        assert [p.name for p in conn.cache.rows("Player")] == ["a"]
        assert [p.name for p in live.rows()] in ([], ["a"])
    finally:
        gate.release()
    rows = wait_for(live.snapshots, lambda rows: len(rows) == 3)
    assert [p.name for p in rows] == ["a", "b", "c"]
    names = [t.reducer_call.args for t in transactions(after)]
    assert names == ['["a"]', '["b"]', '["c"]']  # all of them, in order


def test_observe_on_gives_a_slow_consumer_its_own_queue(server: SpacetimeDBEmulator,
                                                        conn: Connection) -> None:
    gate = Gate(is_transaction)
    slow_done = Counter()

    def slow(message: m.ServerMessage) -> None:
        gate(message)
        if is_transaction(message):
            slow_done(message)

    conn.messages.pipe(ops.observe_on(NewThreadScheduler())).subscribe(slow)
    fast = Counter()
    conn.messages.pipe(ops.filter(is_transaction)).subscribe(fast)
    try:
        for name in ("a", "b", "c"):
            server.call_reducer("CreatePlayer", [name])
        gate.wait_entered()
        assert fast.wait_for(3)  # the others go on at full speed while it blocks
        assert slow_done.values == []
        wait_for(conn.table("Player").snapshots, lambda rows: len(rows) == 3)
    finally:
        gate.release()
    assert slow_done.wait_for(3)
    assert [t.reducer_call.args for t in slow_done.values] == ['["a"]', '["b"]', '["c"]']


def test_a_slow_consumer_on_its_own_thread_holds_a_bounded_backlog(server: SpacetimeDBEmulator,
                                                                  conn: Connection) -> None:
    gate = Gate(is_transaction)
    handled = Counter()

    def slow(message: m.ServerMessage) -> None:
        gate(message)
        handled(message)

    dropped: list[Any] = []
    conn.messages.pipe(
        ops.filter(is_transaction),
        observe_on_bounded(NewThreadScheduler(), max_pending=16, on_drop=dropped.append),
    ).subscribe(slow)
    fast = Counter()
    conn.messages.pipe(ops.filter(is_transaction)).subscribe(fast)
    try:
        server.with_tx(lambda ctx: [ctx.db["Player"].insert(
            {"id": 0, "identity": ctx.sender, "name": f"p{i}", "score": 0, "created_at": ctx.timestamp,
             "location": None}) for i in range(200)])
        for i in range(200):
            server.call_reducer("SetScore", [i + 1, i + 1])
        assert fast.wait_for(201), len(fast.values)
        gate.wait_entered()
        backlog = len(fast.values) - len(handled.values) - len(dropped) - 1  # 1: the one it is on
        assert backlog <= 16, f"{backlog} messages queued for the slow consumer"
        assert len(dropped) >= 201 - 1 - 16  # the oldest went; the fast observer saw all of them
    finally:
        gate.release()
    assert handled.wait_for(201 - len(dropped))
    assert handled.values[-1] is fast.values[-1]  # drop_oldest: the newest state always arrives


# -- the I/O thread blocked: memory and the socket -------------------------------------------------


class Blaster(BareServer):
    """A bare ``v1.json.spacetimedb`` server: IdentityToken, then on ``go()`` N frames as fast as TCP allows.

    ``sent`` counts frames whose ``send`` completed (handed to the kernel), so a stalled sender shows
    how much the client side can hold while it reads nothing.
    """

    def __init__(self, frames: list[str]) -> None:
        super().__init__(max_size=None)
        self.frames = frames
        self.sent = 0
        self._changed = threading.Condition()
        self._go = asyncio.Event()

    async def _handler(self, ws: ServerConnection) -> None:
        await ws.send(encode_server_message(m.IdentityToken(Identity(5), "token", ConnectionId(7))))
        await self._go.wait()
        for frame in self.frames:
            await ws.send(frame)
            with self._changed:
                self.sent += 1
                self._changed.notify_all()
        await ws.wait_closed()

    def go(self) -> None:
        self.call_soon(self._go.set)

    def wait_sent(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.sent >= count, timeout)


def is_blast(message: object) -> bool:
    return isinstance(message, m.UnknownServerMessage) and message.tag == "Blast"


def blast_frame(seq: int, size: int) -> str:
    head, tail = f'{{"Blast":{{"seq":{seq},"pad":"', '"}}'
    return head + "x" * (size - len(head) - len(tail)) + tail


def test_a_blocked_io_thread_lets_tcp_flow_control_bound_the_memory() -> None:
    count, size = 64, MIB
    with Blaster([blast_frame(i, size) for i in range(count)]) as server:
        conn = rx_spacetimedb.connect(server.url, "db", fetch_schema=False)
        try:
            gate = Gate(is_blast)
            conn.messages.subscribe(gate)
            received = Counter()
            conn.messages.pipe(ops.filter(is_blast)).subscribe(received)
            conn.wait_connected(WAIT)
            server.go()
            try:
                gate.wait_entered()
                # Proving a negative needs a time bound: the server's sends stall for good.
                assert not server.wait_sent(count, timeout=1.0)
                assert server.sent * size <= 16 * MIB, f"{server.sent} MiB left the server"
                assert len(received.values) == 0
            finally:
                gate.release()
            assert received.wait_for(count)
            assert [x.payload["seq"] for x in received.values] == list(range(count))
        finally:
            conn.close()


def test_blocking_longer_than_the_server_idle_timeout_drops_the_socket_and_the_resync_repairs_it() -> None:
    with SpacetimeDBEmulator(example_module(), ping_interval=0.05, idle_timeout=0.5) as server:
        conn = connect(server)
        try:
            conn.subscribe_single("SELECT * FROM Player").result(WAIT)
            states: ReplaySubject[ConnectionState] = ReplaySubject()
            conn.states.subscribe(states)
            live: LiveTable[Any] = conn.table("Player")
            first = conn.connection_id
            gate = Gate(is_transaction)
            conn.messages.subscribe(gate)
            try:
                server.call_reducer("CreatePlayer", ["a"])
                gate.wait_entered()
                server.call_reducer("CreatePlayer", ["b"])
                server.wait_for_clients(0, timeout=WAIT)  # the silent client was dropped
                server.call_reducer("CreatePlayer", ["c"])  # missed: only the resync can bring it
            finally:
                gate.release()
            lost = wait_for(states, lambda s: s.status == "disconnected")
            assert lost.close_code == 1006  # no Close frame, as the real server does on idle
            wait_for(states, lambda s: s.status == "connected" and s.connection_id != first)
            rows = wait_for(live.snapshots, lambda rows: len(rows) == 3)
            assert sorted(p.name for p in rows) == ["a", "b", "c"]
            assert sorted(p.name for p in conn.cache.rows("Player")) == ["a", "b", "c"]
        finally:
            conn.close()
