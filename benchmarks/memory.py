"""Memory benchmark: bytes per cached row, against the same rows as plain tuples.

Run on demand (not a test):  python benchmarks/memory.py [--rows 100000]

A subscription snapshot of N rows of the example ``Player`` table (u64 id, Identity, String name,
i32 score, Timestamp, Option<Location>; two rows in three have a location), object-shaped as the
server sends snapshots, is folded into a ``ClientCache``; tracemalloc measures what stays allocated:

  rows     the decoded row objects alone, in a list (what any typed client must hold)
  tuples   the same values as plain tuples in a list (the floor: no classes, no keys)
  cache    ``ClientCache`` holding the rows (rows by primary key + occurrence counts)
  live     a ``LiveTable`` started from that cache (its own key -> row dict + the replayed snapshot)

and cache/tuples (target from the issue: <= 2), then where the bytes of one row go.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

from _players import player_rows

from rx_spacetimedb.cache import ClientCache
from rx_spacetimedb.delivery import MessageSubject
from rx_spacetimedb.operators import LiveTable
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.testing import Database, example_module

_T = TypeVar("_T")
QUERY = "SELECT * FROM Player"


def measure(build: Callable[[], _T]) -> tuple[int, _T]:
    """Bytes still allocated after ``build()`` returns (its result kept alive), and the result."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, result


def snapshot(texts: tuple[str, ...]) -> m.SubscribeApplied:
    table = m.TableUpdate(4097, "Player", len(texts), (m.QueryUpdate((), texts),))
    return m.SubscribeApplied(1, 10, 1, m.SubscribeRows(4097, "Player", table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    n = args.rows
    schema = Database(example_module()).schema
    texts = tuple(schema.encode_row("Player", row, "B") for row in player_rows(schema, n, random.Random(1)))
    names = [str(e.name) for e in schema.row_product("Player").elements]
    tracemalloc.start()

    rows_bytes, rows = measure(lambda: schema.decode_rows("Player", texts))

    def as_tuples() -> list[tuple[Any, ...]]:
        fresh = schema.decode_rows("Player", texts)
        return [tuple(getattr(row, name) for name in names) for row in fresh]  # rows dropped here

    tuples_bytes, tuples = measure(as_tuples)
    assert tuples[0] == tuple(getattr(rows[0], name) for name in names)
    del rows, tuples

    cache = ClientCache(schema)
    cache.note_subscribe_single(1, QUERY)
    message = snapshot(texts)

    def fold() -> ClientCache:
        cache.apply(message)  # the returned diff (a tuple of every row) is dropped
        return cache

    cache_bytes, _ = measure(fold)
    assert cache.count("Player") == n

    class Connectionish:
        """What a live table asks of the connection behind its stream: it starts from this cache."""

        def __init__(self) -> None:
            self.schema, self.cache = schema, cache

    def live_table() -> LiveTable[Any]:
        live: LiveTable[Any] = LiveTable(MessageSubject(Connectionish(), print), "Player")
        live.connect()
        return live

    live_bytes, live = measure(live_table)
    assert len(live) == n

    # Where one row's bytes go (CPython object sizes, averaged over the rows).
    sample = cache.rows("Player")
    parts = {
        "row object (slots)": sys.getsizeof(sample[0]),
        "Identity": sum(sys.getsizeof(r.identity) + sys.getsizeof(r.identity.value) for r in sample) / n,
        "name str": sum(sys.getsizeof(r.name) for r in sample) / n,
        "Timestamp": sum(sys.getsizeof(r.created_at) + sys.getsizeof(r.created_at.micros_since_epoch)
                         for r in sample) / n,
        "Location (2 in 3 rows)": sum(sys.getsizeof(r.location) + 2 * sys.getsizeof(0.0)
                                      for r in sample if r.location is not None) / n,
        "id and score ints": sum(sys.getsizeof(r.id) + sys.getsizeof(r.score) for r in sample) / n,
    }
    tracemalloc.stop()

    print(f"Memory: {n:,} Player rows, CPython {platform.python_version()} ({platform.machine()})\n")
    print("| held as | total | bytes/row | vs tuples |")
    print("|---|---:|---:|---:|")
    for label, size in [("plain tuples (floor)", tuples_bytes), ("row objects in a list", rows_bytes),
                        ("ClientCache", cache_bytes), ("LiveTable on top of the cache", live_bytes),
                        ("ClientCache + LiveTable", cache_bytes + live_bytes)]:
        print(f"| {label} | {size / 2**20:.1f} MiB | {size / n:.0f} | {size / tuples_bytes:.2f} |")
    print(f"\ncache/tuples = {cache_bytes / tuples_bytes:.2f} (target <= 2)")
    print("\nOne row, by part (average bytes):\n")
    print("| part | bytes |")
    print("|---|---:|")
    for label, size in parts.items():
        print(f"| {label} | {size:.0f} |")


if __name__ == "__main__":
    main()
