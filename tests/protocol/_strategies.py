"""Hypothesis strategies: SATS types, Python values of a type, and protocol messages; and the
settings of the property tests."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rx_spacetimedb.protocol import (
    ConnectionId,
    Identity,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    Uuid,
)
from rx_spacetimedb.protocol.jsontext import format_f32
from rx_spacetimedb.protocol.sats import TypeCodec
from rx_spacetimedb.protocol.types import (
    BYTES,
    CONNECTION_ID,
    IDENTITY,
    INT_RANGES,
    PRIMITIVES,
    SCHEDULE_AT,
    TIME_DURATION,
    TIMESTAMP,
    UNIT,
    UUID,
    AlgebraicType,
    ArrayType,
    Element,
    PrimitiveType,
    ProductType,
    SumType,
    Variant,
    option_of,
)

# PROPERTY_EXAMPLES=3000 for a longer hunt; the default keeps the suite fast
PROPERTY = settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

I64_MIN, I64_MAX = INT_RANGES["I64"]
U128_MAX = INT_RANGES["U128"][1]
U256_MAX = INT_RANGES["U256"][1]

# strings with everything the wire must carry: controls, quotes, backslashes, U+2028, astral planes
TRICKY = st.sampled_from([
    "\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "\u2029", "\ufeff", "é", "\U0001f600",
    "\\u0000", '\\"', "quanta", '"quanta":1', '"__connection_id__":1.0',
])
TEXT = st.one_of(st.text(), st.lists(st.one_of(TRICKY, st.text(max_size=3))).map("".join))

LEAF_TYPES: list[AlgebraicType] = [
    *(PrimitiveType(name) for name in PRIMITIVES), BYTES, UNIT,
    IDENTITY, CONNECTION_ID, TIMESTAMP, TIME_DURATION, UUID, SCHEDULE_AT,
]


def _product(types: list[AlgebraicType]) -> ProductType:
    return ProductType(tuple(Element(f"f{i}", t) for i, t in enumerate(types)))


def _sum(types: list[AlgebraicType]) -> SumType:
    return SumType(tuple(Variant(f"v{i}", t) for i, t in enumerate(types)))


def types() -> st.SearchStrategy[AlgebraicType]:
    """Any SATS type (without Refs): primitives, specials, and nested arrays/options/products/sums."""
    return st.recursive(
        st.sampled_from(LEAF_TYPES),
        lambda inner: st.one_of(
            inner.map(ArrayType),
            inner.map(option_of),
            st.lists(inner, min_size=1, max_size=4).map(_product),
            st.lists(inner, min_size=1, max_size=3).map(_sum),
        ),
        max_leaves=8,
    )


def f32_values() -> st.SearchStrategy[float]:
    """f32 values as they decode: the float of their shortest text (NaN/inf included)."""
    return st.floats(width=32).map(lambda x: float(format_f32(x)) if math.isfinite(x) else x)


def values(ty: AlgebraicType, codec: TypeCodec) -> st.SearchStrategy[Any]:
    """Python values of ``ty``, as the decoder builds them."""
    if isinstance(ty, PrimitiveType):
        if ty.name in INT_RANGES:
            low, high = INT_RANGES[ty.name]
            return st.one_of(st.sampled_from([low, high, 0]), st.integers(low, high))
        return {"Bool": st.booleans(), "F32": f32_values(), "F64": st.floats(), "String": TEXT}[ty.name]
    if ty == BYTES:
        return st.binary()
    if isinstance(ty, ArrayType):
        return st.lists(values(ty.elem, codec), max_size=4).map(tuple)
    if isinstance(ty, ProductType):
        if not ty.elements:
            return st.just(())
        special = {IDENTITY: st.integers(0, U256_MAX).map(Identity),
                   CONNECTION_ID: st.integers(0, U128_MAX).map(ConnectionId),
                   TIMESTAMP: st.integers(I64_MIN, I64_MAX).map(Timestamp),
                   TIME_DURATION: st.integers(I64_MIN, I64_MAX).map(TimeDuration),
                   UUID: st.integers(0, U128_MAX).map(Uuid)}.get(ty)
        if special is not None:
            return special
        cls = codec.class_for(ty)
        return st.tuples(*(values(e.type, codec) for e in ty.elements)).map(lambda vs: cls(*vs))
    assert isinstance(ty, SumType)
    if ty.is_option:
        return st.one_of(st.none(), values(ty.variants[0].type, codec))
    if ty.is_schedule_at:
        return st.one_of(values(TIME_DURATION, codec), values(TIMESTAMP, codec)).map(ScheduleAt)
    return st.one_of(*(
        st.builds(SumValue, st.just(v.name), values(v.type, codec), st.just(tag))
        for tag, v in enumerate(ty.variants)
    ))


def canon(value: Any) -> Any:
    """A comparable form: -0.0 differs from 0.0; NaN and ±inf are all one value (``null`` on the wire)."""
    if isinstance(value, float):
        return ("null",) if not math.isfinite(value) else ("float", value, math.copysign(1.0, value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(canon(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple | list):
        return tuple(canon(v) for v in value)
    return value
