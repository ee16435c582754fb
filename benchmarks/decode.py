"""Decode benchmark: our protocol layer against the bare-orjson floor and a naive stdlib decoder.

Run on demand (not a test):  python benchmarks/decode.py [--quick]

For generated ``TransactionUpdate`` frames of 1, 100 and 10,000 rows it prints, all from one run:

  a  the floor: bare ``orjson.loads`` of the frame plus of every row string (no types, u128 wrong)
  b  our envelope decode: ``decode_server_message`` (message dataclasses, rows left as text)
  c  our full typed decode: envelope + every row through ``ModuleSchema`` (row dataclasses)
  d  a naive decoder building the same typed values with the standard library ``json``

and the ratios b/a, c/a, d/c (targets from the issue: b/a <= 1.1, c/a <= 1.3, d/c >= 2), for
positional rows (form C, as in transaction deltas), object-shaped rows (form B) and a u128-heavy
table. Then lazy vs eager: a frame with four tables of which the consumer reads only one.
Times are the best of several repeats (timeit), per frame.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import generated
import orjson

from rx_spacetimedb.protocol import (
    Committed,
    ConnectionId,
    DatabaseUpdate,
    EnergyQuanta,
    Identity,
    ModuleSchema,
    QueryUpdate,
    ReducerCallInfo,
    TableDef,
    TableUpdate,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    decode_server_message,
    encode_server_message,
)
from rx_spacetimedb.protocol.types import (
    CONNECTION_ID,
    I128,
    U64,
    U128,
    AlgebraicType,
    ArrayType,
    Element,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "protocol" / "examples"
SCHEMA_FILE = EXAMPLES / "http-schema-v9-response.json"
CALLER = ConnectionId(41279989226247141793968051798400034689)

# -- the module: the example's Player and Location, plus a u128-heavy table -------------------


def build_schema() -> ModuleSchema:
    example = ModuleSchema.from_json(SCHEMA_FILE.read_text())
    ledger = ProductType((Element("id", U64), Element("owner", CONNECTION_ID), Element("credit", U128),
                          Element("debit", I128), Element("nonce", U128)))
    typespace = [*example.typespace, ledger]
    return ModuleSchema(
        typespace,
        tables=[*example.tables.values(), TableDef("ledger", len(typespace) - 1, (0,))],
        reducers=list(example.reducers.values()),
        procedures=list(example.procedures.values()),
        type_names={**example.type_names, len(typespace) - 1: "Ledger"},
    )


def player_rows(schema: ModuleSchema, n: int, rng: random.Random) -> list[Any]:
    player, location = schema.row_class("Player"), schema.codec.class_for(RefType(1))
    return [
        player(i, Identity(rng.getrandbits(256)), f"player-{i}-{rng.getrandbits(20):x}",
               rng.randrange(-5000, 5000), Timestamp(1787217300123456 + i * 1_000_003),
               location(rng.uniform(-500, 500), rng.uniform(-500, 500)) if i % 3 else None)
        for i in range(n)
    ]


def ledger_rows(schema: ModuleSchema, n: int, rng: random.Random) -> list[Any]:
    ledger = schema.row_class("ledger")
    return [
        ledger(i, ConnectionId(rng.getrandbits(128)), rng.getrandbits(128), -rng.getrandbits(127),
               rng.getrandbits(128))
        for i in range(n)
    ]


def frame_of(tables: Sequence[tuple[str, list[str]]]) -> str:
    """A committed TransactionUpdate inserting these rows (the caller's ConnectionId exceeds 2^64)."""
    update = DatabaseUpdate(tuple(
        TableUpdate(4097 + i, name, len(rows), (QueryUpdate((), tuple(rows)),))
        for i, (name, rows) in enumerate(tables)
    ))
    return encode_server_message(TransactionUpdate(
        Committed(update), Timestamp(1787409005250000), Identity(0xC200EA03), CALLER,
        ReducerCallInfo("Tick", 0, "[]", 6), EnergyQuanta(1843200), TimeDuration(1312)))


# -- the decoders being compared ---------------------------------------------------------------


def floor(frame: str) -> None:
    """(a) orjson only: the frame, then each row string; no types (and u128 come out as floats)."""
    loads = orjson.loads
    message = loads(frame)
    for table in message["TransactionUpdate"]["status"]["Committed"]["tables"]:
        for update in table["updates"]:
            for row in update["deletes"]:
                loads(row)
            for row in update["inserts"]:
                loads(row)


def envelope(frame: str) -> Any:
    """(b) our envelope decode: typed message, rows still text."""
    return decode_server_message(frame)


def make_full(schema: ModuleSchema, only: str | None = None) -> Callable[[str], Any]:
    """(c) envelope + every row (or only the rows of table ``only``) typed through the schema."""
    def full(frame: str) -> Any:
        message = decode_server_message(frame)
        assert isinstance(message, TransactionUpdate) and isinstance(message.status, Committed)
        out = []
        for table in message.status.update.tables:
            if only is not None and table.table_name != only:
                continue
            for update in table.updates:
                out.append(schema.decode_rows(table.table_name, update.deletes))
                out.append(schema.decode_rows(table.table_name, update.inserts))
        return message, out

    return full


class Naive:
    """(d) What one writes without care for speed: stdlib json, walk the type for every value."""

    _SPECIAL: ClassVar[dict[str, type]] = {
        "__identity__": Identity, "__connection_id__": ConnectionId,
        "__timestamp_micros_since_unix_epoch__": Timestamp, "__time_duration_micros__": TimeDuration,
    }

    def __init__(self, schema: ModuleSchema) -> None:
        self.schema = schema

    def value(self, ty: AlgebraicType, v: Any) -> Any:
        if isinstance(ty, RefType):
            target = self.schema.typespace[ty.index]
            if isinstance(target, ProductType) and target.special is None and target.elements:
                cls = self.schema.codec.class_for(ty)
                return cls(*self.fields(target, v))
            return self.value(target, v)
        if isinstance(ty, PrimitiveType):
            if ty.name in ("U256", "I256") and isinstance(v, str):
                return int(v, 16)
            if ty.name in ("F32", "F64"):
                return float("nan") if v is None else float(v)
            return v
        if isinstance(ty, ArrayType):
            return tuple(self.value(ty.elem, x) for x in v)
        if isinstance(ty, ProductType):
            if ty.special is not None:
                inner = v[ty.special] if isinstance(v, dict) else v[0]
                return self._SPECIAL[ty.special](self.value(ty.elements[0].type, inner))
            return tuple(self.fields(ty, v))
        assert isinstance(ty, SumType)
        tag, payload = v if isinstance(v, list) else next(iter(v.items()))
        if isinstance(tag, str):
            tag = [variant.name for variant in ty.variants].index(tag)
        if ty.is_option:
            return self.value(ty.variants[0].type, payload) if tag == 0 else None
        raise NotImplementedError("plain sums are not in the benchmark module")

    def fields(self, ty: ProductType, v: Any) -> list[Any]:
        if isinstance(v, dict):
            return [self.value(e.type, v[name]) for name, e in zip(ty.names, ty.elements, strict=True)]
        return [self.value(e.type, x) for e, x in zip(ty.elements, v, strict=True)]

    def decode(self, frame: str) -> Any:
        body = json.loads(frame)["TransactionUpdate"]
        out = []
        tables = []
        for table in body["status"]["Committed"]["tables"]:
            updates = []
            row_type = RefType(self.schema.tables[table["table_name"]].product_type_ref)
            for update in table["updates"]:
                updates.append(QueryUpdate(tuple(update["deletes"]), tuple(update["inserts"])))
                out.append([self.value(row_type, json.loads(r)) for r in update["deletes"]])
                out.append([self.value(row_type, json.loads(r)) for r in update["inserts"]])
            tables.append(
                TableUpdate(table["table_id"], table["table_name"], table["num_rows"], tuple(updates)))
        call = body["reducer_call"]
        message = TransactionUpdate(
            Committed(DatabaseUpdate(tuple(tables))),
            Timestamp(body["timestamp"]["__timestamp_micros_since_unix_epoch__"]),
            Identity(int(body["caller_identity"]["__identity__"], 16)),
            ConnectionId(body["caller_connection_id"]["__connection_id__"]),
            ReducerCallInfo(call["reducer_name"], call["reducer_id"], call["args"], call["request_id"]),
            EnergyQuanta(body["energy_quanta_used"]["quanta"]),
            TimeDuration(body["total_host_execution_duration"]["__time_duration_micros__"]),
        )
        return message, out


# -- measuring -----------------------------------------------------------------------------------


def best(fns: Sequence[Callable[[str], Any]], frame: str, budget: float, repeat: int = 7) -> list[float]:
    """Best time of one call of each function, measured in interleaved rounds (so that a burst of
    load on a shared machine hits all of them alike), each round about ``budget / repeat`` seconds."""
    timers = [timeit.Timer(functools.partial(fn, frame)) for fn in fns]
    numbers = []
    for timer in timers:
        number, elapsed = timer.autorange()
        numbers.append(max(1, int(budget / repeat / len(fns) / (elapsed / number))))
    times = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, (timer, number) in enumerate(zip(timers, numbers, strict=True)):
            times[i] = min(times[i], timer.timeit(number) / number)
    return times


def show(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timing loops (noisier)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 100, 10_000])
    args = parser.parse_args()
    budget = 0.25 if args.quick else 1.0
    rng = random.Random(7)
    schema = build_schema()
    naive = Naive(schema)
    full = make_full(schema)
    print(f"Python {platform.python_version()} ({platform.python_implementation()}),"
          f" orjson {orjson.__version__}, {platform.machine()}; per frame, best of 7 interleaved rounds")
    print()
    header = f"{'rows':>6} {'shape':<6} {'a floor':>11} {'b envelope':>11} {'c typed':>11} {'d naive':>11}" \
             f" {'b/a':>6} {'c/a':>6} {'d/c':>6}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        variants = {
            "C": ("Player", [schema.encode_row("Player", r, "C") for r in player_rows(schema, n, rng)]),
            "B": ("Player", [schema.encode_row("Player", r, "B") for r in player_rows(schema, n, rng)]),
            "u128": ("ledger", [schema.encode_row("ledger", r, "C") for r in ledger_rows(schema, n, rng)]),
        }
        for shape, (table, rows) in variants.items():
            frame = frame_of([(table, rows)])
            typed, naive_typed = full(frame), naive.decode(frame)
            assert typed == naive_typed, "the naive decoder must build the same values"
            a, b, c, d = best([floor, envelope, full, naive.decode], frame, budget)
            print(f"{n:>6} {shape:<6} {show(a)} {show(b)} {show(c)} {show(d)}"
                  f" {b / a:6.2f} {c / a:6.2f} {d / c:6.2f}")
    print()
    print("Lazy vs eager: four tables (Player C, Player B, ledger, Player C) in one frame;")
    print("the consumer reads only the first. Lazy decodes that table's rows, eager all of them.")
    print()
    print(f"{'rows/table':>10} {'envelope':>11} {'lazy':>11} {'eager':>11} {'eager/lazy':>11}")
    for n in args.sizes:
        tables = [
            ("Player", [schema.encode_row("Player", r, "C") for r in player_rows(schema, n, rng)]),
            ("Player", [schema.encode_row("Player", r, "B") for r in player_rows(schema, n, rng)]),
            ("ledger", [schema.encode_row("ledger", r, "C") for r in ledger_rows(schema, n, rng)]),
            ("Player", [schema.encode_row("Player", r, "C") for r in player_rows(schema, n, rng)]),
        ]
        frame = frame_of(tables)
        first_only = make_full(schema, only="Player")

        def lazy(frame: str, first_only: Callable[[str], Any] = first_only) -> Any:
            message = decode_server_message(frame)
            assert isinstance(message, TransactionUpdate) and isinstance(message.status, Committed)
            table = message.status.update.tables[0]
            return [schema.decode_rows(table.table_name, u.inserts) for u in table.updates]

        e, lz, eg = best([envelope, lazy, full], frame, budget)
        print(f"{n:>10} {show(e)} {show(lz)} {show(eg)} {eg / lz:11.2f}")
    print()
    where_the_time_goes(schema, rng, budget)
    print()
    print("Generated row classes (typed modules, issue 14) against the run-time ones, same rows:")
    generated.compare(2_000 if args.quick else 10_000, args.quick)
    print()
    print("Targets: b/a <= 1.1, c/a <= 1.3, d/c >= 2; generated/runtime <= 1.")


def where_the_time_goes(schema: ModuleSchema, rng: random.Random, budget: float) -> None:
    """Split c for positional Player rows: parsing, building the objects at all, our decoding."""
    n = 10_000
    rows = [schema.encode_row("Player", r, "C") for r in player_rows(schema, n, rng)]
    parsed = [orjson.loads(r) for r in rows]
    player, location = schema.row_class("Player"), schema.codec.class_for(RefType(1))
    decoder = schema.row_decoder("Player")

    def parse(_: str) -> None:
        for row in rows:
            orjson.loads(row)

    def build(_: str) -> None:
        # the least any typed decoder must do: the same objects, from parsed rows, with no checks
        for v in parsed:
            loc = v[5]
            player(v[0], Identity(int(v[1][0], 16)), v[2], v[3], Timestamp(v[4][0]),
                   location(*loc[1]) if loc[0] == 0 else None)

    def decode_parsed(_: str) -> None:
        for v in parsed:
            decoder(v)

    def decode_rows(_: str) -> None:
        schema.decode_rows("Player", rows)

    p, k, d, r = best([parse, build, decode_parsed, decode_rows], "", budget)
    print(f"Where the time of c goes, {n:,} positional Player rows (rows only, no envelope):")
    print(f"  orjson.loads of the row strings        {show(p)}")
    print(f"  building the row objects by hand       {show(k)}   (no checks; Identity, Timestamp, Location)")
    print(f"  our decoder on already-parsed rows     {show(d)}")
    print(f"  ModuleSchema.decode_rows (parse+decode) {show(r)}   = {r / p:.1f}x the parse alone,"
          f" {r / (p + k):.1f}x parse + hand-built objects")


if __name__ == "__main__":
    main()
