"""Round trips with hypothesis: every value type at its extremes, through all three wire forms."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rx_spacetimedb.protocol import (
    CallProcedure,
    CallReducer,
    Committed,
    ConnectionId,
    DatabaseUpdate,
    EnergyQuanta,
    Failed,
    Identity,
    IdentityToken,
    ModuleSchema,
    OneOffQuery,
    OutOfEnergy,
    QueryUpdate,
    ReducerCallInfo,
    Subscribe,
    SubscribeMulti,
    SubscribeSingle,
    TableDef,
    TableUpdate,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeMulti,
    decode_client_message,
    decode_server_message,
    encode_client_message,
    encode_server_message,
)
from rx_spacetimedb.protocol.jsontext import dumps, format_f32, format_f64, loads_exact
from rx_spacetimedb.protocol.sats import Form
from rx_spacetimedb.protocol.types import AlgebraicType, Element, ProductType, RefType
from tests.protocol._strategies import (
    I64_MAX,
    I64_MIN,
    PROPERTY,
    TEXT,
    U128_MAX,
    U256_MAX,
    canon,
    types,
    values,
)


def one_column_schema(ty: AlgebraicType) -> ModuleSchema:
    return ModuleSchema([ProductType((Element("v", ty),))], tables=[TableDef("t", 0)])


@PROPERTY
@given(st.data())
def test_any_value_round_trips_through_forms_a_b_and_c(data: st.DataObject) -> None:
    ty = data.draw(types(), label="type")
    schema = one_column_schema(ty)
    row_class = schema.row_class("t")
    value = data.draw(values(ty, schema.codec), label="value")
    row = row_class(value)
    texts = {
        "A": dumps(schema.codec.encoder(RefType(0), "A")(row)),
        "B": schema.encode_row("t", row, "B"),
        "C": schema.encode_row("t", row, "C"),
    }
    for form, text in texts.items():
        decoded = schema.decode_row("t", text)
        assert canon(decoded) == canon(row), form
        assert schema.encode_row("t", decoded, "C") == texts["C"], form  # stable text too
        assert loads_exact(text) is not None


@PROPERTY
@given(st.data())
def test_bare_values_round_trip_through_the_codec(data: st.DataObject) -> None:
    ty = data.draw(types(), label="type")
    codec = one_column_schema(ty).codec
    value = data.draw(values(ty, codec), label="value")
    decode = codec.decoder(ty)
    forms: tuple[Form, ...] = ("A", "B", "C")
    for form in forms:
        text = dumps(codec.encoder(ty, form)(value))
        assert canon(decode(loads_exact(text))) == canon(value), form


INTS = st.sampled_from(["U8", "U16", "U32", "U64", "U128", "U256", "I8", "I16", "I32", "I64", "I128", "I256"])


@PROPERTY
@given(st.data())
def test_integers_exact_at_every_width(data: st.DataObject) -> None:
    from rx_spacetimedb.protocol.types import INT_RANGES, PrimitiveType
    name = data.draw(INTS)
    low, high = INT_RANGES[name]
    value = data.draw(st.one_of(st.sampled_from([low, high, low + 1, high - 1]), st.integers(low, high)))
    schema = one_column_schema(PrimitiveType(name))
    row = schema.row_class("t")(value)
    forms: tuple[Form, ...] = ("B", "C")
    for form in forms:
        decoded = schema.decode_row("t", schema.encode_row("t", row, form))
        assert decoded.v == value and type(decoded.v) is int


@PROPERTY
@given(st.floats())
def test_f64_text_is_shortest_round_trip_in_ryu_layout(value: float) -> None:
    text = format_f64(value)
    if not math.isfinite(value):
        assert text == "null"
        return
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    assert "+" not in text and ("." in text or "e" in text)
    plain = "e" not in text
    assert plain == (value == 0 or 1e-5 <= abs(value) < 1e16)


@PROPERTY
@given(st.floats(width=32))
def test_f32_text_is_the_shortest_that_round_trips_through_f32(value: float) -> None:
    text = format_f32(value)
    if not math.isfinite(value):
        assert text == "null"
        return

    def as_f32(x: float) -> bytes:
        return struct.pack("<f", x)

    assert as_f32(float(text)) == as_f32(value)
    assert "+" not in text and ("." in text or "e" in text)
    assert ("e" not in text) == (value == 0 or 1e-6 <= abs(value) < 1e13)
    digits = len(text.lstrip("-").split("e")[0].replace(".", "").strip("0")) or 1
    for fewer in range(1, digits):
        shorter = f"{value:.{fewer}g}"
        with contextlib.suppress(OverflowError):  # 3e+38 and the like: not an f32 at all
            assert as_f32(float(shorter)) != as_f32(value), (text, shorter)


# -- messages --------------------------------------------------------------------------------

U32 = st.integers(0, 2**32 - 1)
QUERIES = st.lists(TEXT, max_size=3).map(tuple)

CLIENT_MESSAGES = st.one_of(
    st.builds(CallReducer, TEXT, TEXT, U32, st.sampled_from([0, 1])),
    st.builds(CallProcedure, TEXT, TEXT, U32, st.just(0)),
    st.builds(Subscribe, QUERIES, U32),
    st.builds(SubscribeSingle, TEXT, U32, U32),
    st.builds(SubscribeMulti, QUERIES, U32, U32),
    st.builds(Unsubscribe, U32, U32),
    st.builds(UnsubscribeMulti, U32, U32),
    st.builds(OneOffQuery, st.binary(), TEXT),
)


@PROPERTY
@given(CLIENT_MESSAGES)
def test_client_messages_round_trip(message: Any) -> None:
    frame = encode_client_message(message)
    assert decode_client_message(frame) == message
    assert decode_client_message(frame.encode()) == message
    assert frame.startswith('{"' + type(message).__name__ + '":{')
    # compact, fields in declaration order, escapes as serde_json writes them
    assert frame == json.dumps(json.loads(frame), separators=(",", ":"), ensure_ascii=False)


ROWS = st.lists(TEXT, max_size=3).map(tuple)
DATABASE_UPDATE = st.builds(DatabaseUpdate, st.lists(st.builds(
    TableUpdate, U32, TEXT, st.integers(0, 2**64 - 1),
    st.lists(st.builds(QueryUpdate, ROWS, ROWS), max_size=2).map(tuple)), max_size=2).map(tuple))
U128 = st.one_of(st.sampled_from([0, 2**64 - 1, 2**64, U128_MAX]), st.integers(0, U128_MAX))

SERVER_MESSAGES = st.one_of(
    st.builds(IdentityToken, st.integers(0, U256_MAX).map(Identity), TEXT, U128.map(ConnectionId)),
    st.builds(
        TransactionUpdate,
        st.one_of(DATABASE_UPDATE.map(Committed), TEXT.map(Failed), st.just(OutOfEnergy())),
        st.integers(I64_MIN, I64_MAX).map(Timestamp),
        st.integers(0, U256_MAX).map(Identity),
        U128.map(ConnectionId),
        st.builds(ReducerCallInfo, TEXT, U32, TEXT, U32),
        U128.map(EnergyQuanta),
        st.integers(I64_MIN, I64_MAX).map(TimeDuration),
    ),
)


@PROPERTY
@given(SERVER_MESSAGES)
def test_server_messages_round_trip_with_exact_128_bit_fields(message: Any) -> None:
    frame = encode_server_message(message)
    decoded = decode_server_message(frame)
    assert decoded == message
    assert decode_server_message(frame.encode()) == message
    assert encode_server_message(decoded) == frame
