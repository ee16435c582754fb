"""Every SATS type through the emulator: client args in, stored-row snapshots and untyped deltas out.

A client-side ``ModuleSchema`` parsed from the served schema decodes what the emulator writes, and the
values must equal what the emulator stores, in both row shapes (spec §3.1/§3.2).
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from typing import Any

from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.types import (
    BOOL,
    BYTES,
    CONNECTION_ID,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    I128,
    I256,
    IDENTITY,
    SCHEDULE_AT,
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    UNIT,
    UUID,
    ArrayType,
    Element,
    ProductType,
    SumType,
    Variant,
    option_of,
)
from rx_spacetimedb.protocol.values import (
    ConnectionId,
    Identity,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    Uuid,
)
from rx_spacetimedb.testing import Column, Module, ReducerContext, SpacetimeDBEmulator
from tests.testing.helpers import Client, run


def everything_module() -> Module:
    """A table with one column of every kind and a reducer that upserts a whole row."""
    module = Module()
    point = module.add_type("Point", ProductType((Element("x", F32), Element("y", F64))))
    color = module.add_type("Color", SumType((Variant("Red", UNIT), Variant("Custom", STRING))))
    columns = [
        Column("id", U32, primary_key=True),
        Column("flag", BOOL), Column("u8", U8), Column("u16", U16), Column("u32", U32), Column("u64", U64),
        Column("u128", U128), Column("u256", U256), Column("i8", I8), Column("i16", I16), Column("i32", I32),
        Column("i64", I64), Column("i128", I128), Column("i256", I256),
        Column("f32", F32), Column("f64", F64),
        Column("text", STRING), Column("blob", BYTES), Column("points", ArrayType(point)),
        Column("words", ArrayType(STRING)), Column("nothing", UNIT), Column("color", color),
        Column("maybe", option_of(I32)), Column("who", IDENTITY), Column("conn", CONNECTION_ID),
        Column("at", TIMESTAMP), Column("took", TIME_DURATION), Column("uuid", UUID),
        Column("when", SCHEDULE_AT),
        Column("point", point),
    ]  # fmt: skip
    table = module.table("Everything", columns)

    @module.reducer("Put", [("row", table.provisional_ref)])
    def put(ctx: ReducerContext, row: Any) -> None:
        handle = ctx.db.Everything
        if handle.find("id", row.id) is None:
            handle.insert(row)
        else:
            handle.update(row)

    return module


ROW: dict[str, Any] = {
    "id": 1, "flag": True, "u8": 255, "u16": 65535, "u32": 2**32 - 1, "u64": 2**64 - 1, "u128": 2**128 - 1,
    "u256": 2**256 - 1, "i8": -128, "i16": -(2**15), "i32": -(2**31), "i64": -(2**63), "i128": -(2**127),
    "i256": -(2**255), "f32": 0.1, "f64": -2.5e-7, "text": 'quote " backslash \\ newline \n é \u2028 /',
    "blob": b"\x00\xff", "points": [{"x": 1.5, "y": 1e16}], "words": ["a", ""], "nothing": (),
    "color": SumValue("Custom", "teal"), "maybe": None, "who": Identity(1), "conn": ConnectionId(2**127 + 5),
    "at": Timestamp(-1), "took": TimeDuration(1312), "uuid": Uuid(2**100),
    "when": ScheduleAt(TimeDuration(60)),
    "point": {"x": float("nan"), "y": float("inf")},
}  # fmt: skip


def test_every_type_round_trips_in_both_row_shapes() -> None:
    with SpacetimeDBEmulator(everything_module()) as server:
        url = f"{server.http_url}/v1/database/{server.database}/schema?version=9"
        with urllib.request.urlopen(url, timeout=5) as response:
            schema = ModuleSchema.from_json(response.read())

        async def body() -> None:
            client = await Client.connect(server)
            args = schema.encode_reducer_args("Put", [ROW])
            reply = await client.request(
                {"CallReducer": {"reducer": "Put", "args": args, "request_id": 1, "flags": 0}}
            )
            assert "Committed" in reply["TransactionUpdate"]["status"], reply
            (stored,) = server.table_rows("Everything")
            initial = await client.request(
                {"Subscribe": {"query_strings": ["SELECT * FROM Everything"], "request_id": 2}}
            )
            (snapshot_text,) = initial["InitialSubscription"]["database_update"]["tables"][0]["updates"][0][
                "inserts"
            ]
            assert snapshot_text.startswith('{"id":1,')  # form B
            assert '"nothing":{}' in snapshot_text and '"color":[1,"teal"]' in snapshot_text
            assert '"points":[[1.5,1e16]]' in snapshot_text  # arrays inside a stored row: form C
            assert '"u128":340282366920938463463374607431768211455' in snapshot_text  # exact
            assert '"f32":0.1' in snapshot_text and '"point":{"x":null,"y":null}' in snapshot_text
            assert json.loads(snapshot_text)["text"] == ROW["text"]
            assert "\u2028" in snapshot_text and "\\/" not in snapshot_text  # raw UTF-8, no escaped slash
            decoded = schema.decode_row("Everything", snapshot_text)
            assert _comparable(decoded) == _comparable(stored)
            changed = dict(ROW, flag=False, maybe=7, color=SumValue("Red"), when=ScheduleAt(Timestamp(5)))
            args = schema.encode_reducer_args("Put", [changed])
            update = await client.request(
                {"CallReducer": {"reducer": "Put", "args": args, "request_id": 3, "flags": 0}}
            )
            (table,) = update["TransactionUpdate"]["status"]["Committed"]["tables"]
            (delta_text,) = table["updates"][0]["inserts"]
            assert delta_text.startswith("[1,false,")  # form C
            assert (
                ',[],[0,[]],[0,7],["0x1"],[170141183460469231731687303715884105733],[-1],[1312],'
                in delta_text
            )
            (new,) = server.table_rows("Everything")
            assert _comparable(schema.decode_row("Everything", delta_text)) == _comparable(new)
            assert new.maybe == 7 and new.color == SumValue("Red") and not new.flag

        run(body)


def _comparable(row: Any) -> Any:
    """Field values as plain data (NaN made comparable, classes from either schema made equal)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return (
                type(value).__name__,
                tuple(plain(getattr(value, f.name)) for f in dataclasses.fields(value)),
            )
        if isinstance(value, tuple):
            return tuple(plain(v) for v in value)
        if isinstance(value, float) and value != value:
            return "nan"
        return value

    return plain(row)
