"""Generated classes against run-time classes: the same rows decoded through both, in one run.

Run on demand (not a test):  python benchmarks/generated.py [--quick]

``python -m rx_spacetimedb generate`` writes dataclasses that ``ModuleSchema(row_classes=ROW_TYPES)``
binds with their slot setters, so the C parser builds them as it builds the classes made at run
time. For 10,000 rows of the example ``Player`` table (positional form C and object form B) and of
an ``Entity`` table with a user enum, nested options and arrays of products, it prints the best
time per batch for each and the ratio generated/runtime (1.0: the same speed; below: faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._players import player_rows
from rx_spacetimedb.protocol.codegen import generate_module
from rx_spacetimedb.protocol.fastpath import PARSER
from rx_spacetimedb.protocol.schema import ModuleSchema
from tests._schemas import imported, rich_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "protocol" / "examples"


def entity_row(i: int, rng: random.Random) -> list[Any]:
    """A positional (form C) row of the rich schema's Entity table."""
    def vec2() -> list[float]:
        return [rng.uniform(-9, 9), rng.uniform(-9, 9)]

    shape = [[0, rng.uniform(0, 5)], [1, vec2()], [2, []]][i % 3]
    pos = [[0, [0, vec2()]], [0, [1, []]], [1, []]][i % 3]
    return [i, f"entity-{i}", shape, pos, [vec2() for _ in range(i % 4)], rng.getrandbits(200),
            -rng.getrandbits(100), rng.randbytes(4).hex()]


def best(fn: Any, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter (noisier) loops")
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    compare(args.rows, args.quick)


def compare(n_rows: int, quick: bool) -> None:
    """Print generated vs run-time decode times (also the last part of ``decode.py``)."""
    repeat, number = (3, 3) if quick else (7, 5)
    rng = random.Random(14)
    print(f"Python {platform.python_version()}, C parser: {'yes' if PARSER is not None else 'NO'}; "
          f"{n_rows} rows per batch, best of {repeat} x {number}")

    example = json.loads((EXAMPLES / "http-schema-v9-response.json").read_text())
    cases: list[tuple[str, dict[str, Any], str, list[str]]] = []
    runtime = ModuleSchema.from_json(example)
    rows = player_rows(runtime, n_rows, rng)
    for form in ("C", "B"):
        cases.append((f"Player, form {form}", example, "Player", [runtime.encode_row("Player", r, form)
                                                                   for r in rows]))
    rich = rich_schema()
    rich_runtime = ModuleSchema.from_json(rich)
    texts = [json.dumps(entity_row(i, rng)) for i in range(n_rows)]
    assert rich_runtime.decode_rows("Entity", texts[:3])
    cases.append(("Entity (enum, options, arrays), form C", rich, "Entity", texts))

    print(f"{'':42} {'runtime':>10} {'generated':>10} {'gen/runtime':>12}")
    for title, data, table, batch in cases:
        plain = ModuleSchema.from_json(data)
        with imported(generate_module(plain)) as mod:
            bound = ModuleSchema.from_json(data, row_classes=mod.ROW_TYPES)
            assert type(bound.decode_row(table, batch[0])) is mod.ROW_TYPES[table]
            plain.decode_rows(table, batch[:10])
            bound.decode_rows(table, batch[:10])
            # interleaved, so drift of the machine's load hits both alike
            times_runtime, times_generated = [], []
            for _ in range(repeat):
                times_runtime.append(best(lambda p=plain, b=batch, t=table: p.decode_rows(t, b), number, 1))
                times_generated.append(best(lambda p=bound, b=batch, t=table: p.decode_rows(t, b), number, 1))
            a, b = min(times_runtime), min(times_generated)
            print(f"{title:42} {a * 1e3:8.2f}ms {b * 1e3:8.2f}ms {b / a:12.2f}")


if __name__ == "__main__":
    main()
