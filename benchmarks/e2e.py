"""End-to-end benchmark: our whole pipeline against a bare websockets + orjson receive loop.

Run on demand (not a test):  python benchmarks/e2e.py [--quick] [--profile] [--calls 500]

A replay server, in its own process on loopback, answers a ``SubscribeSingle`` with a snapshot of K
``Player`` rows, then blasts N pre-encoded ``TransactionUpdate`` frames of another caller (built
with ``rx_spacetimedb.protocol`` encoders, positional rows as in real deltas) as fast as TCP takes
them. Two workloads:

  update  each message updates all K rows: K deletes + K inserts (a game's positions, scores)
  insert  each message inserts K new rows, so the cache grows to hundreds of thousands of rows
          (a chat, a log, an event feed)

The same frames are received by:

  a  the transport floor: a bare ``websockets`` client, ``orjson.loads`` of every frame and of
     every row string it carries, counting rows (no types, no cache, no Rx)
  b  our full pipeline: ``rx_spacetimedb.connect`` (schema given; its read loop takes every message
     of a TCP read at once, ``Transport.recv_batch()``) -> ``conn.messages`` -> the client cache
     -> ``conn.table_diffs("Player")`` -> a counting observer
  c  the same pipeline with no socket: the connection's transport is swapped for one that hands
     it the same frames from memory. c/a is what b/a would be with a transport that cost nothing.
  k  the floor keeping its rows: a, plus a dict of the parsed rows by key (a deleted key leaves,
     an inserted row goes in), the least a cache does. The insert stream's cache grows to 300,000
     rows, and holding them costs memory traffic that a, which drops each row, never pays
     (``benchmarks/kept_rows.py``). b/k compares like with like there; the targets are b/a.

Times run from the end of the snapshot to the last row counted; best of R interleaved rounds, each
workload in a fresh process.
Printed: rows/s and messages/s of a and b, b/a (targets from issue 16: >= 0.6 at 1 row
per message, >= 0.8 at 10, >= 0.9 at 100 and 1,000), c/a and b/k, all against floors of the same run.
Beside them, the minor page faults a message of a, b and k, and the ceiling on b/a that b's extra
faults set at the cost of a first touch of a page measured in the same process (``throughput_table``).

Then the latency from the server's send to the observer, for 1-row insert messages at a low rate
(one every 2 ms): the server writes its clock (``time.monotonic_ns``, one clock for every process
of the machine) into the row's ``name`` just before sending; a and b read it on arrival.

Then the latency of a reducer round trip through the emulator (``SetScore`` on one player,
``call_reducer(...).result()`` one after another; median and p99), with the emulator in another
process (``python -m rx_spacetimedb.testing serve``) and in this one (sharing the GIL).

``--profile`` runs cProfile on the connection's I/O thread during one pipeline run and prints where
the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import mmap
import multiprocessing
import platform
import pstats
import random
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from unittest import mock

import orjson
from _players import player_rows
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol
from websockets.version import version as websockets_version

import rx_spacetimedb
from rx_spacetimedb.cache import TableDiff
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.codec import encode_server_message
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.values import (
    ConnectionId,
    EnergyQuanta,
    Identity,
    TimeDuration,
    Timestamp,
)
from rx_spacetimedb.testing import Database, SpacetimeDBEmulator, example_module
from rx_spacetimedb.transport import Transport

T = TypeVar("T")

SUBPROTOCOL = "v1.json.spacetimedb"
QUERY = "SELECT * FROM Player"
OTHER_CALLER = ConnectionId(41279989226247141793968051798400034689)  # above 2^64, as on the wire


@dataclass(frozen=True)
class Workload:
    rows: int  # K rows per message
    messages: int  # N transaction messages
    kind: str = "update"  # "update": K deletes + K inserts of the same K rows; "insert": K new rows

    @property
    def name(self) -> str:
        return f"{self.kind[0]}{self.rows}-n{self.messages}"

    @staticmethod
    def from_name(name: str) -> Workload:
        rows, messages = name[1:].split("-n")
        return Workload(int(rows), int(messages), {"u": "update", "i": "insert", "l": "latency"}[name[0]])

    @property
    def row_strings(self) -> int:
        return (2 if self.kind == "update" else 1) * self.rows * self.messages


# At least 100,000 row strings a workload (0.1 s or more a run): shorter runs are mostly noise here.
WORKLOADS = [Workload(1, 60_000), Workload(10, 10_000), Workload(100, 1_000), Workload(1_000, 100)]
# The cache ends with 100 k, 200 k and 300 k rows.
INSERT_WORKLOADS = [Workload(1, 100_000, "insert"), Workload(10, 20_000, "insert"),
                    Workload(100, 3_000, "insert")]
LATENCY = Workload(1, 1_000, "latency")  # 1-row inserts, one every LATENCY_INTERVAL seconds
LATENCY_INTERVAL = 0.002
SENT_AT = "@" * 20  # in the name of a latency workload's row: the server's send time goes there


def example_schema() -> ModuleSchema:
    return Database(example_module()).schema


# -- the frames ------------------------------------------------------------------------------------


def build_frames(workload: Workload) -> tuple[list[str], list[str]]:
    """Snapshot rows (object-shaped) and N TransactionUpdate frames (positional rows)."""
    schema = example_schema()
    k, n = workload.rows, workload.messages
    if workload.kind == "update":
        rows = player_rows(schema, k, random.Random(k))
        # Version v of the rows has score v; message j turns version j into version j + 1.
        versions = [[schema.encode_row("Player", replace(row, score=v), "C") for row in rows]
                    for v in range(n + 1)]
        changes = [(versions[j], versions[j + 1]) for j in range(n)]
    else:  # the snapshot's K rows, then K new rows (new keys) a message
        rows = player_rows(schema, k * (n + 1), random.Random(k))
        if workload.kind == "latency":
            rows = [replace(row, name=SENT_AT) for row in rows]
        encoded = [schema.encode_row("Player", row, "C") for row in rows[k:]]
        changes = [([], encoded[j * k:(j + 1) * k]) for j in range(n)]
        rows = rows[:k]
    snapshot = [schema.encode_row("Player", row, "B") for row in rows]
    frames = []
    for j, (deletes, inserts) in enumerate(changes):
        update = m.DatabaseUpdate((m.TableUpdate(4097, "Player", len(deletes) + len(inserts), (
            m.QueryUpdate(tuple(deletes), tuple(inserts)),)),))
        frames.append(encode_server_message(m.TransactionUpdate(
            m.Committed(update), Timestamp(1787409005250000 + j), Identity(0xC200EA03), OTHER_CALLER,
            m.ReducerCallInfo("SetScore", 1, "[1,2]", j + 1), EnergyQuanta(1843200), TimeDuration(131))))
    return snapshot, frames


# -- the replay server (own process) ---------------------------------------------------------------


IDENTITY = encode_server_message(m.IdentityToken(Identity(5), "token", ConnectionId(7)))


def subscribe_applied(request: str, snapshot: list[str]) -> str:
    """The answer to our ``SubscribeSingle`` request: the snapshot rows, object-shaped."""
    body = orjson.loads(request)["SubscribeSingle"]
    rows = m.TableUpdate(4097, "Player", len(snapshot), (m.QueryUpdate((), tuple(snapshot)),))
    return encode_server_message(m.SubscribeApplied(body["request_id"], 10, body["query_id"]["id"],
                                                    m.SubscribeRows(4097, "Player", rows)))


def replay_server(port_out: Any, ready: Any) -> None:
    cache: dict[str, tuple[list[str], list[str]]] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        name = ws.request.path.split("/")[3]  # /v1/database/{workload}/subscribe
        if name not in cache:
            cache[name] = build_frames(Workload.from_name(name))
        snapshot, frames = cache[name]
        await ws.send(IDENTITY)
        await ws.send(subscribe_applied(str(await ws.recv()), snapshot))
        if name[0] == "l":  # paced, each stamped with its send time
            for frame in frames:
                await asyncio.sleep(LATENCY_INTERVAL)
                await ws.send(frame.replace(SENT_AT, f"{time.monotonic_ns():020d}"))
        else:
            for frame in frames:
                await ws.send(frame)
        await ws.wait_closed()

    serve_loopback(handler, port_out, ready)


@contextlib.contextmanager
def server_process(target: Callable[[Any, Any], None], name: str) -> Iterator[int]:
    """Run ``target(port_out, ready)`` (``replay_server``, a ``serve_loopback`` caller) in a fresh
    process; yield its port once it listens, kill it on the way out."""
    context = multiprocessing.get_context("spawn")
    port, ready = context.Value("i", 0), context.Event()
    process = context.Process(target=target, args=(port, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(60):
            raise RuntimeError(f"{name} did not start")
        yield port.value
    finally:
        process.kill()


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a new (spawned) process, as if measured alone: a process that has grown
    and freed a large heap runs the next allocation-heavy part slower (``throughput_table``)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def serve_loopback(handler: Any, port_out: Any, ready: Any) -> None:
    """Serve ``handler`` on a free loopback port until killed; the port goes to ``port_out``."""

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, subprotocols=[Subprotocol(SUBPROTOCOL)],
                         compression=None, max_size=None, ping_interval=None) as server:
            port_out.value = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Event().wait()

    asyncio.run(main())


def prebuild(port: int, workloads: Sequence[Workload]) -> None:
    """Let the server build each workload's frames once, before anything is timed."""
    for workload in workloads:
        asyncio.run(floor(port, workload))


# -- (a) the floor, (b) and (d) the pipeline, (c) without a socket -----------------------------------


@dataclass
class Run:
    seconds: float  # from the end of the snapshot to the last row counted
    latencies: list[float]  # seconds from the server's send, per row (latency workload only)
    faults: int  # minor page faults of the whole process in that time (every thread)


def minor_faults() -> int:
    """Minor page faults of this process so far: each is a first touch of a page of memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def first_touch_seconds(size: int = 64 << 20) -> float:
    """Seconds the first write to a fresh page of memory costs here, beyond the second write.

    A cache that grows touches new pages that a floor dropping every row never does; on this
    machine's virtual memory a first touch costs microseconds (``throughput_table``'s ceiling).
    """
    pages = size // mmap.PAGESIZE
    with mmap.mmap(-1, size) as memory:
        times = []
        for value in (1, 2):  # first touches, then the same loop on pages already there
            start = time.perf_counter()
            for offset in range(0, size, mmap.PAGESIZE):
                memory[offset] = value
            times.append(time.perf_counter() - start)
    return (times[0] - times[1]) / pages


async def floor(port: int, workload: Workload, keep: bool = False) -> Run:
    """a (or k with ``keep``): bare websockets, orjson.loads of each frame and row string."""
    url = f"ws://127.0.0.1:{port}/v1/database/{workload.name}/subscribe"
    loads = orjson.loads
    latencies = []
    async with ws_connect(url, subprotocols=[Subprotocol(SUBPROTOCOL)], compression=None, max_size=None,
                          ping_interval=None) as ws:
        loads(await ws.recv())
        await ws.send(orjson.dumps({"SubscribeSingle": {"query": QUERY, "request_id": 1,
                                                        "query_id": {"id": 1}}}).decode())
        kept: dict[Any, Any] = {}
        for row in loads(await ws.recv())["SubscribeApplied"]["rows"]["table_rows"]["updates"][0]["inserts"]:
            snapshot_row = loads(row)  # object-shaped
            if keep:
                kept[snapshot_row["id"]] = list(snapshot_row.values())
        faults, start = minor_faults(), time.perf_counter()
        counted = 0
        for _ in range(workload.messages):
            message = loads(await ws.recv())
            for table in message["TransactionUpdate"]["status"]["Committed"]["tables"]:
                for update in table["updates"]:
                    if keep:  # k: the rows by key (column 0, the primary key)
                        for row in map(loads, update["deletes"]):
                            del kept[row[0]]
                        for row in map(loads, update["inserts"]):
                            kept[row[0]] = row
                        counted += len(update["deletes"]) + len(update["inserts"])
                        continue
                    for row in update["deletes"]:
                        loads(row)
                        counted += 1
                    for row in update["inserts"]:
                        if workload.kind == "latency":
                            latencies.append((time.monotonic_ns() - int(loads(row)[2])) / 1e9)
                        else:
                            loads(row)
                        counted += 1
        elapsed, faults = time.perf_counter() - start, minor_faults() - faults
    assert counted == workload.row_strings
    return Run(elapsed, latencies, faults)


def pipeline(port: int, workload: Workload, schema: ModuleSchema,
             profile: cProfile.Profile | None = None) -> Run:
    conn = rx_spacetimedb.connect(f"ws://127.0.0.1:{port}", workload.name, schema=schema, fetch_schema=False,
                                  reconnect=False, ping_interval=None)
    done = threading.Event()
    marks: dict[str, float] = {}
    faults: dict[str, int] = {}
    latencies: list[float] = []
    counted = 0

    def on_diff(diff: TableDiff[Any]) -> None:
        nonlocal counted
        if diff.cause == "subscribe":
            faults["start"], marks["start"] = minor_faults(), time.perf_counter()
            if profile is not None:
                profile.enable()  # on the I/O thread: cProfile follows the thread that enables it
            return
        if workload.kind == "latency":
            now = time.monotonic_ns()
            latencies.extend((now - int(row.name)) / 1e9 for row in diff.inserts)
        counted += len(diff.inserts) + len(diff.deletes) + 2 * len(diff.updates)
        if counted >= workload.row_strings:
            marks["end"], faults["end"] = time.perf_counter(), minor_faults()
            if profile is not None:
                profile.disable()
            done.set()

    try:
        conn.table_diffs("Player").subscribe(on_diff)
        conn.subscribe_single(QUERY)
        if not done.wait(300):
            raise TimeoutError(f"{workload.name}: counted {counted} of {workload.row_strings} rows")
    finally:
        conn.close()
    assert counted == workload.row_strings
    return Run(marks["end"] - marks["start"], latencies, faults["end"] - faults["start"])


class FramesInMemory:
    """A stand-in for ``rx_spacetimedb.transport.Transport``: the replay server's frames, no socket."""

    def __init__(self, snapshot: list[str], frames: list[str]) -> None:
        self._snapshot, self._frames = snapshot, frames
        self._pending = [IDENTITY]
        self._ready = asyncio.Event()
        self.closing = False

    async def recv_batch(self) -> list[str]:
        """Every frame there is, as one TCP read of unlimited size would give them."""
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()  # until the subscription is sent; then never again
        batch, self._pending = self._pending[::-1], []
        return batch

    async def send(self, text: str) -> None:
        if "SubscribeSingle" in text:  # the only request the pipeline sends
            self._pending = [*reversed(self._frames), subscribe_applied(text, self._snapshot)]
            self._ready.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closing = True


def no_socket(workload: Workload, schema: ModuleSchema, snapshot: list[str], frames: list[str]) -> Run:
    """(c) ``pipeline`` with the transport swapped for ``FramesInMemory``."""

    async def open_in_memory(*args: Any, **kwargs: Any) -> FramesInMemory:
        return FramesInMemory(snapshot, frames)

    with mock.patch.object(Transport, "open", open_in_memory):
        return pipeline(0, workload, schema)


# -- reducer round trips ---------------------------------------------------------------------------


def round_trips(url: str, database: str, calls: int) -> list[float]:
    with rx_spacetimedb.connect(url, database) as conn:
        conn.subscribe_single(QUERY).result(30)
        conn.call_reducer("CreatePlayer", ["bench"]).result(30)
        player: Any = conn.table("Player").rows()[0]
        for i in range(20):  # warm up
            conn.call_reducer("SetScore", [player.id, i]).result(30)
        times = []
        for i in range(calls):
            start = time.perf_counter()
            conn.call_reducer("SetScore", [player.id, 1000 + i]).result(30)
            times.append(time.perf_counter() - start)
    return times


def external_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "rx_spacetimedb.testing", "serve", "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"at (ws://\S+) ", line)
    if found is None:
        process.kill()
        raise RuntimeError(f"unexpected emulator banner: {line!r}")
    return process, found.group(1)


def percentiles(values: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def latency_line(label: str, times: list[float]) -> str:
    p50, p99 = percentiles(times)
    return f"| {label} | {len(times)} | {p50 * 1e3:.2f} ms | {p99 * 1e3:.2f} ms | {min(times) * 1e3:.2f} ms |"


# -- main ------------------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value / 1e3:.0f} k" if value >= 1e4 else f"{value:,.0f}"


def measure(port: int, workload: Workload, rounds: int) -> tuple[dict[str, Run], float]:
    """The best run of a, b, c and k over ``rounds`` interleaved rounds (run in a fresh process),
    and the cost of a first touch of a page measured in that process afterwards."""
    schema = example_schema()
    snapshot, frames = build_frames(workload)
    runs: dict[str, list[Run]] = {"a": [], "b": [], "c": [], "k": []}
    for _ in range(rounds):
        runs["a"].append(asyncio.run(floor(port, workload)))
        runs["k"].append(asyncio.run(floor(port, workload, keep=True)))
        runs["b"].append(pipeline(port, workload, schema))
        runs["c"].append(no_socket(workload, schema, snapshot, frames))
    best = {part: min(each, key=lambda run: run.seconds) for part, each in runs.items()}
    return best, first_touch_seconds()


def throughput_table(port: int, workloads: Sequence[Workload], rounds: int) -> None:
    """One line per workload: a, b and c (best of ``rounds`` interleaved rounds), ratios to a; then
    the page faults of those runs and the ceiling they put on b/a.

    Each workload runs in a fresh process, as if measured alone: after a workload has grown and
    freed a cache of 300,000 rows, glibc has handed that memory back, and the next workload in the
    same process ran up to 40% slower refaulting it (10-row inserts, no socket: 54 k then 32 k msgs/s).

    The ceiling is the b/a of a pipeline whose only cost beyond the floor's were the pages it touches
    first and the floor does not (b's minor faults less a's, each at the first-touch cost measured in
    the same process): no cache that holds these rows in this much memory can beat it on this machine.
    """
    print("| rows/msg | msgs | a floor rows/s | a msgs/s | b pipeline rows/s | b msgs/s | b/a "
          "| c no socket msgs/s | c/a | k floor keeping rows msgs/s | b/k |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    faults = []
    for workload in workloads:
        best, touch = in_fresh_process(measure, port, workload, rounds)
        a, b, c, k = (best[x].seconds for x in "abck")
        rows, messages = workload.row_strings, workload.messages
        print(f"| {workload.rows:,} | {messages:,} | {fmt_rate(rows / a)} | {fmt_rate(messages / a)} | "
              f"{fmt_rate(rows / b)} | {fmt_rate(messages / b)} | {a / b:.2f} | "
              f"{fmt_rate(messages / c)} | {a / c:.2f} | {fmt_rate(messages / k)} | {k / b:.2f} |",
              flush=True)
        extra = max(0, best["b"].faults - best["a"].faults) * touch
        per_message = " | ".join(f"{best[x].faults / messages:.2f}" for x in "abk")
        faults.append(f"| {workload.rows:,} | {per_message} | {touch * 1e6:.2f} µs "
                      f"| {extra / messages * 1e6:.1f} µs | {a / b:.2f} | {a / (a + extra):.2f} |")
    print("\nPage faults a message in those runs, and the ceiling they put on b/a:\n")
    print("| rows/msg | a faults/msg | b faults/msg | k faults/msg | first touch of a page "
          "| b's extra faults a message | b/a | b/a ceiling |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(faults), flush=True)


def latency_table(port: int, workload: Workload, schema: ModuleSchema) -> None:
    """p50 and p99 from the server's send to the observer, for a and b, and their ratio to a."""
    print("| reader | messages | p50 | p99 | p50 / a's | p99 / a's |")
    print("|---|---:|---:|---:|---:|---:|")
    runs = {"a floor": asyncio.run(floor(port, workload)),
            "b pipeline": pipeline(port, workload, schema)}
    floor_p50, floor_p99 = percentiles(runs["a floor"].latencies)
    for label, run in runs.items():
        p50, p99 = percentiles(run.latencies)
        print(f"| {label} | {len(run.latencies):,} | {p50 * 1e6:.0f} µs | {p99 * 1e6:.0f} µs "
              f"| {p50 / floor_p50:.2f} | {p99 / floor_p99:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and messages (noisier)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500, help="reducer round trips per emulator")
    parser.add_argument("--profile", action="store_true", help="cProfile the I/O thread (K=100)")
    parser.add_argument("--only", choices=["update", "insert", "latency"], action="append",
                        help="run only these parts (repeatable); skips the reducer round trips")
    args = parser.parse_args()
    parts = set(args.only or ["update", "insert", "latency"])
    workloads, inserts, latency = WORKLOADS, INSERT_WORKLOADS, LATENCY
    rounds = args.rounds
    if args.quick:
        workloads = [replace(w, messages=max(10, w.messages // 5)) for w in WORKLOADS]
        inserts = [replace(w, messages=max(10, w.messages // 5)) for w in INSERT_WORKLOADS]
        latency = replace(LATENCY, messages=LATENCY.messages // 2)
        rounds = 2
    schema = example_schema()

    with server_process(replay_server, "replay server") as port:
        prebuild(port, [*workloads, *inserts, latency])
        print(f"End to end: CPython {platform.python_version()}, websockets {websockets_version}, "
              f"orjson {orjson.__version__}, {platform.machine()}, best of {rounds} rounds")
        if "update" in parts:
            print("\nUpdates (each message: K deletes + K inserts of the same K rows):\n")
            throughput_table(port, workloads, rounds)
        if "insert" in parts:
            print(f"\nInsert stream (each message: K new rows; the cache ends with "
                  f"{', '.join(f'{w.rows * (w.messages + 1):,}' for w in inserts)} rows):\n")
            throughput_table(port, inserts, rounds)
        if "latency" in parts:
            print(f"\nLatency from the server's send to the observer (1-row inserts, one every "
                  f"{LATENCY_INTERVAL * 1e3:g} ms):\n")
            latency_table(port, latency, schema)
        if args.profile:
            workload = next(w for w in workloads if w.rows == 100)
            profile = cProfile.Profile()
            pipeline(port, workload, schema, profile)
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(30)
            print(f"\ncProfile of the I/O thread, {workload.name}:\n{out.getvalue()}")
    if args.only:
        return

    print("\nReducer round trip (SetScore, call_reducer(...).result(), one after another):\n")
    print("| emulator | calls | median | p99 | min |")
    print("|---|---:|---:|---:|---:|")
    process, url = external_emulator()
    try:
        print(latency_line("another process", round_trips(url, "quickstart", args.calls)), flush=True)
    finally:
        process.kill()
        process.wait()
    with SpacetimeDBEmulator(example_module()) as emulator:
        print(latency_line("this process (shares the GIL)", round_trips(emulator.url, emulator.database,
                                                                        args.calls)))


if __name__ == "__main__":
    main()
