"""Transport benchmark: messages through ``Transport.recv_batch()``, frames split by the transport
itself (``split_frames``) against every frame parsed by websockets, in one run.

Run on demand (not a test):  python benchmarks/transport.py [--quick] [--rounds 5] [--e2e]

A server in its own process on loopback writes N pre-serialized TEXT frames of S bytes as fast as
TCP takes them; the client (``Transport.open``, then ``recv_batch()`` until N messages came) is
timed from its request to the last message. Both modes run in this process, interleaved round by
round, the best round of each kept; ``_BatchingConnection.fast_path`` switches the split.

``--e2e`` also runs ``benchmarks/e2e.py``'s 1-row update workload (its floor a and pipeline b, in a
fresh process per mode and round) with the split on and off, and prints b/a for each against the
best floor of all rounds (the floor is bare websockets: the split does not change it).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import e2e
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.version import version as websockets_version

from rx_spacetimedb.transport import Transport, _BatchingConnection

SIZES = [100, 1_000, 10_000]  # payload bytes of each frame
MESSAGES = {100: 200_000, 1_000: 100_000, 10_000: 20_000}  # per run


def blast_server(port_out: Any, ready: Any) -> None:
    """Answer each ``"N S"`` with N TEXT frames of S bytes, written at once (built once per request)."""
    cache: dict[str, bytes] = {}

    async def handler(ws: ServerConnection) -> None:
        async for request in ws:
            if request not in cache:
                count, size = map(int, str(request).split())
                frame = Frame(Opcode.TEXT, b'{"x":"' + b"x" * (size - 8) + b'"}').serialize(mask=False)
                cache[str(request)] = frame * count
            ws.transport.write(cache[str(request)])

    e2e.serve_loopback(handler, port_out, ready)


async def one_run(port: int, count: int, size: int, split: bool) -> float:
    """Seconds from the request to the last of ``count`` messages, with the split on or off."""
    _BatchingConnection.fast_path = split
    transport = await Transport.open(f"ws://127.0.0.1:{port}", "bench", proxy=None, ping_interval=None)
    try:
        start = time.perf_counter()
        await transport.send(f"{count} {size}")
        received = 0
        while received < count:
            received += len(await transport.recv_batch())
        return time.perf_counter() - start
    finally:
        await transport.close()


def transport_table(port: int, rounds: int, quick: bool) -> None:
    print("| payload | messages | split µs/msg | websockets µs/msg | split msgs/s | websockets msgs/s "
          "| speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in SIZES:
        count = MESSAGES[size] // (5 if quick else 1)
        asyncio.run(one_run(port, count, size, True))  # the server builds the frames, untimed
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for split in (True, False):
                times[split].append(asyncio.run(one_run(port, count, size, split)))
        on, off = min(times[True]) / count, min(times[False]) / count
        print(f"| {size:,} B | {count:,} | {on * 1e6:.2f} | {off * 1e6:.2f} | {1 / on:,.0f} | "
              f"{1 / off:,.0f} | {off / on:.1f}x |", flush=True)


def e2e_measure(port: int, workload_name: str, split: bool) -> tuple[float, float]:
    """(a, b) seconds of one e2e round with the split on or off (run in a fresh process)."""
    _BatchingConnection.fast_path = split
    workload = e2e.Workload.from_name(workload_name)
    a = asyncio.run(e2e.floor(port, workload)).seconds
    b = e2e.pipeline(port, workload, e2e.example_schema()).seconds
    return a, b


def e2e_table(rounds: int, quick: bool) -> None:
    workload = e2e.WORKLOADS[0]  # 1 row per message, updates
    if quick:
        workload = replace(workload, messages=workload.messages // 5)
    with e2e.server_process(e2e.replay_server, "replay server") as port:
        e2e.prebuild(port, [workload])
        times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(rounds):
            for split in (True, False):
                times[split].append(e2e.in_fresh_process(e2e_measure, port, workload.name, split))
    print(f"\nEnd to end ({workload.rows} row per message, updates, {workload.messages:,} messages; "
          f"best of {rounds} rounds, each mode in a fresh process per round):\n")
    # The floor does not use our transport: its best over both modes' rounds is the floor of both.
    a = min(t[0] for runs in times.values() for t in runs) / workload.messages
    print(f"a floor: {a * 1e6:.2f} µs/msg\n")
    print("| transport | b pipeline µs/msg (best) | b median | b/a |")
    print("|---|---:|---:|---:|")
    for split, label in ((True, "split"), (False, "websockets")):
        b_times = [t[1] / workload.messages for t in times[split]]
        b = min(b_times)
        print(f"| {label} | {b * 1e6:.2f} | {statistics.median(b_times) * 1e6:.2f} | {a / b:.2f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds (noisier)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e", action="store_true", help="also e2e.py's 1-row updates, both ways")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    if not _BatchingConnection.fast_path:
        sys.exit("the split is not available with this websockets: nothing to compare")
    with e2e.server_process(blast_server, "blast server") as port:
        print(f"Transport: CPython {platform.python_version()}, websockets {websockets_version}, "
              f"{platform.machine()}, best of {rounds} interleaved rounds\n")
        transport_table(port, rounds, args.quick)
    if args.e2e:
        e2e_table(rounds, args.quick)


if __name__ == "__main__":
    main()
