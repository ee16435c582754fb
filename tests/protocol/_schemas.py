"""A test module with a column of every SATS type, built in code."""

from __future__ import annotations

from rx_spacetimedb.protocol import ModuleSchema, TableDef
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
    AlgebraicType,
    ArrayType,
    Element,
    ProductType,
    RefType,
    SumType,
    Variant,
    option_of,
)

INT_TYPES = {"u8": U8, "u16": U16, "u32": U32, "u64": U64, "u128": U128, "u256": U256,
             "i8": I8, "i16": I16, "i32": I32, "i64": I64, "i128": I128, "i256": I256}

LOCATION = ProductType((Element("x", F32), Element("y", F32)))
COLOR = SumType((Variant("red", UNIT), Variant("green", UNIT), Variant("rgb", ProductType((
    Element("r", U8), Element("g", U8), Element("b", U8))))))

WIDE_COLUMNS: list[tuple[str, AlgebraicType]] = [
    *INT_TYPES.items(),
    ("f32", F32), ("f64", F64), ("flag", BOOL), ("text", STRING), ("blob", BYTES),
    ("ints", ArrayType(I32)), ("maybe", option_of(U128)), ("maybe_maybe", option_of(option_of(STRING))),
    ("color", RefType(2)), ("location", RefType(1)), ("path", ArrayType(RefType(1))),
    ("colors", ArrayType(option_of(RefType(2)))),
    ("identity", IDENTITY), ("connection_id", CONNECTION_ID), ("at", TIMESTAMP),
    ("duration", TIME_DURATION), ("uuid", UUID), ("schedule", SCHEDULE_AT), ("nothing", UNIT),
]
WIDE = ProductType(tuple(Element(name, ty) for name, ty in WIDE_COLUMNS))

# a u128-heavy table: what orjson alone gets wrong on every row
BIG = ProductType((Element("id", U64), Element("a", U128), Element("b", I128), Element("c", U128),
                   Element("owner", CONNECTION_ID)))


def wide_schema() -> ModuleSchema:
    return ModuleSchema(
        [WIDE, LOCATION, COLOR, BIG],
        tables=[TableDef("wide", 0, (0,)), TableDef("big", 3, (0,))],
        type_names={1: "Location", 2: "Color"},
    )
