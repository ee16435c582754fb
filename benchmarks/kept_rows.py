"""What keeping the rows costs: the insert stream's rows decoded and dropped, against decoded and kept.

Run on demand (not a test):  python benchmarks/kept_rows.py [--rows 100] [--messages 3000]

e2e.py's insert stream grows the client cache to 300,000 rows; its floor parses each row and drops
it at once, so the memory it uses stays the same few kilobytes. This isolates that difference, in
one process, on e2e.py's frames (K positional ``Player`` rows a message, new keys each time):

  a  orjson.loads of each row string, dropped (the floor's row work)
  b  orjson.loads of each row string, kept in a list
  c  our typed decode by key (``ModuleSchema.decode_rows_by_key``, what the cache calls), dropped
  d  the same, every message's rows kept (as the cache keeps them)

Printed: microseconds a message, and c/a, d/a, d/c. d/c is the cost of holding the rows (the memory
they need, handed out page by page as the store grows), which no pipeline with a cache avoids.
Each of a-d runs in a fresh process: a process that has grown and freed a large heap runs the next
allocation-heavy part slower (see e2e.py's ``throughput_table``).
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import orjson
from e2e import Workload, build_frames, example_schema, in_fresh_process

from rx_spacetimedb.cache import primary_key_getter
from rx_spacetimedb.protocol.codec import decode_server_message

PARTS = {"a": "orjson rows, dropped", "b": "orjson rows, kept", "c": "typed rows by key, dropped",
         "d": "typed rows by key, kept"}


def measure(part: str, rows: int, messages: int) -> float:
    """Seconds for ``part`` over every message's row strings (best of 3; the kept rows freed between)."""
    schema = example_schema()
    _, frames = build_frames(Workload(rows, messages, "insert"))
    texts = [decode_server_message(f).status.update.tables[0].updates[0].inserts  # type: ignore[union-attr]
             for f in frames]
    key_of = primary_key_getter(schema, "Player")
    assert key_of is not None
    loads, decode = orjson.loads, schema.decode_rows_by_key
    best = float("inf")
    for _ in range(3):
        kept: list[Any] = []
        start = time.perf_counter()
        if part == "a":
            for batch in texts:
                for text in batch:
                    loads(text)
        elif part == "b":
            for batch in texts:
                kept.extend([loads(text) for text in batch])
        elif part == "c":
            for batch in texts:
                decode("Player", batch, key_of)
        else:
            for batch in texts:
                kept.append(decode("Player", batch, key_of))
        best = min(best, time.perf_counter() - start)
        del kept
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100, help="rows a message (K)")
    parser.add_argument("--messages", type=int, default=3000, help="messages (N)")
    args = parser.parse_args()
    seconds = {}
    for part in PARTS:
        seconds[part] = in_fresh_process(measure, part, args.rows, args.messages)
    print(f"Kept rows: CPython {platform.python_version()}, orjson {orjson.__version__}, "
          f"{args.rows} rows x {args.messages:,} messages ({args.rows * args.messages:,} rows), best of 3\n")
    print("| part | µs/message |")
    print("|---|---:|")
    for part, label in PARTS.items():
        print(f"| {part} {label} | {1e6 * seconds[part] / args.messages:.1f} |")
    a, c, d = seconds["a"], seconds["c"], seconds["d"]
    print(f"\nc/a {c / a:.2f} (typed decode against the floor's parse), d/a {d / a:.2f}, "
          f"d/c {d / c:.2f} (what holding the rows adds)")


if __name__ == "__main__":
    main()
