"""SATS-JSON values: exact integers, floats, strings and the three wire shapes (spec §3)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import orjson
import pytest

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import (
    ConnectionId,
    Failed,
    Identity,
    IdentityToken,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    Uuid,
    decode_json,
    decode_server_message,
    encode_server_message,
)
from rx_spacetimedb.protocol.fastpath import FALLBACK, PARSER
from rx_spacetimedb.protocol.jsontext import dumps, format_f32, format_f64, loads_exact
from rx_spacetimedb.protocol.sats import TypeCodec
from rx_spacetimedb.protocol.types import (
    F32,
    F64,
    STRING,
    U8,
    UNIT,
    Element,
    ProductType,
    RefType,
    SumType,
    Variant,
    option_of,
)
from tests.protocol._examples import example
from tests.protocol._schemas import WIDE, wide_schema

SCHEMA = wide_schema()
Wide = SCHEMA.row_class("wide")
Location = SCHEMA.codec.class_for(WIDE.elements[WIDE.names.index("location")].type)

U128_MAX = (1 << 128) - 1
I128_MIN = -(1 << 127)
U256_MAX = (1 << 256) - 1
I256_MIN = -(1 << 255)


def wide(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "u8": 0, "u16": 0, "u32": 0, "u64": 0, "u128": 0, "u256": 0,
        "i8": 0, "i16": 0, "i32": 0, "i64": 0, "i128": 0, "i256": 0,
        "f32": 0.0, "f64": 0.0, "flag": False, "text": "", "blob": b"", "ints": (), "maybe": None,
        "maybe_maybe": None, "color": SumValue("red", (), 0), "location": Location(0.0, 0.0),
        "path": (), "colors": (), "identity": Identity(0), "connection_id": ConnectionId(0),
        "at": Timestamp(0), "duration": TimeDuration(0), "uuid": Uuid(0),
        "schedule": ScheduleAt(TimeDuration(0)), "nothing": (),
    }
    values.update(overrides)
    return Wide(**values)


def round_trip(row: Any) -> tuple[str, str]:
    """Encode in both row forms, decode both, check they give the row back."""
    stored, untyped = SCHEMA.encode_row("wide", row, "B"), SCHEMA.encode_row("wide", row, "C")
    assert SCHEMA.decode_row("wide", stored) == row
    assert SCHEMA.decode_row("wide", untyped) == row
    return stored, untyped


# -- exact integers --------------------------------------------------------------------------


EXTREMES = {
    "u8": (0, 255), "u16": (0, 65535), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1),
    "u128": (0, U128_MAX), "u256": (0, U256_MAX), "i8": (-128, 127), "i16": (-32768, 32767),
    "i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1), "i128": (I128_MIN, -I128_MIN - 1),
    "i256": (I256_MIN, -I256_MIN - 1),
}


@pytest.mark.parametrize("column", sorted(EXTREMES))
def test_integer_columns_exact_at_both_extremes(column: str) -> None:
    for value in EXTREMES[column]:
        row = wide(**{column: value})
        round_trip(row)
        decoded = SCHEMA.decode_row("wide", SCHEMA.encode_row("wide", row, "C"))
        assert getattr(decoded, column) == value and type(getattr(decoded, column)) is int


def test_wide_integers_on_the_wire_and_exact_where_orjson_floats() -> None:
    row = wide(u128=U128_MAX, i128=I128_MIN, u256=U256_MAX, i256=I256_MIN, maybe=U128_MAX,
               connection_id=ConnectionId(U128_MAX), uuid=Uuid(U128_MAX), identity=Identity(U256_MAX))
    _, untyped = round_trip(row)
    parsed = json.loads(untyped)
    names = WIDE.names
    assert parsed[names.index("u128")] == U128_MAX  # a bare JSON integer, 39 digits
    assert str(U128_MAX) in untyped and str(I128_MIN) in untyped
    assert parsed[names.index("u256")] == "0x" + "f" * 64  # u256: 0x string, lowercase
    assert parsed[names.index("i256")] == "-0x8" + "0" * 63  # i256: sign-magnitude
    assert parsed[names.index("connection_id")] == [U128_MAX]
    assert parsed[names.index("identity")] == ["0x" + "f" * 64]
    # the precondition: orjson alone loses these digits
    assert type(orjson.loads(untyped)[names.index("u128")]) is float
    decoded = SCHEMA.decode_row("wide", untyped)
    assert decoded.u128 == U128_MAX and decoded.i128 == I128_MIN and decoded.maybe == U128_MAX
    assert decoded.connection_id.value == U128_MAX and decoded.uuid.value == U128_MAX


def test_u256_has_no_leading_zeros_and_zero_is_0x0() -> None:
    _, untyped = round_trip(wide(u256=0, i256=-42, identity=Identity(0x2A)))
    parsed = json.loads(untyped)
    assert parsed[WIDE.names.index("u256")] == "0x0"
    assert parsed[WIDE.names.index("i256")] == "-0x2a"
    assert parsed[WIDE.names.index("identity")] == ["0x2a"]


def test_u256_accepted_spellings() -> None:
    codec = TypeCodec()
    from rx_spacetimedb.protocol.types import I256, U256
    assert codec.decoder(U256)("0xFF") == 255 == codec.decoder(U256)("0Xff")
    assert codec.decoder(I256)("+0x2a") == 42 and codec.decoder(I256)("-0x2A") == -42


def test_connection_id_exact_in_envelope_messages() -> None:
    token = decode_server_message(example("server-IdentityToken.json"))
    assert isinstance(token, IdentityToken)
    assert token.connection_id.value == 41279989226247141793968051798400034689
    update = decode_server_message(example("server-TransactionUpdate-committed.json"))
    assert isinstance(update, TransactionUpdate)
    assert update.caller_connection_id.value == 41279989226247141793968051798400034689


def test_envelope_u128_extremes_and_bytes_frames() -> None:
    frame = example("server-TransactionUpdate-failed.json").replace(
        "41279989226247141793968051798400034689", str(U128_MAX)).replace(
        '"quanta":612800', f'"quanta":{U128_MAX - 1}')
    for data in (frame, frame.encode()):
        message = decode_server_message(data)
        assert isinstance(message, TransactionUpdate)
        assert message.caller_connection_id.value == U128_MAX
        assert message.energy_quanta_used.quanta == U128_MAX - 1
    assert encode_server_message(decode_server_message(frame)) == frame


def test_envelope_wide_integer_with_a_row_mentioning_the_same_key() -> None:
    # a row string holding "quanta" (escaped inside the frame) must not confuse the envelope fix
    frame = example("server-TransactionUpdate-committed.json").replace(
        '\\"carol\\"', '\\"quanta\\":1\\"').replace("1843200", str(U128_MAX))
    message = decode_server_message(frame)
    assert isinstance(message, TransactionUpdate)
    assert message.energy_quanta_used.quanta == U128_MAX


def test_envelope_wide_integer_when_the_key_is_also_a_string_value() -> None:
    frame = example("server-TransactionUpdate-failed.json").replace(
        '"reducer_name":"CreatePlayer"', '"reducer_name":"__connection_id__"').replace(
        '"name \\"carol\\" is already taken"', '"quanta"')
    message = decode_server_message(frame)
    assert isinstance(message, TransactionUpdate)
    assert message.reducer_call.reducer_name == "__connection_id__"
    assert message.status == Failed("quanta")
    assert message.caller_connection_id.value == 41279989226247141793968051798400034689
    assert encode_server_message(message) == frame


def test_rows_of_tables_with_128_bit_columns() -> None:
    # long digit runs inside strings send the row to the exact parser too: same values
    schema = wide_schema()
    big = schema.row_class("big")
    rows = [big(1, 2, 3, 4, ConnectionId(5)), big(2**64 - 1, U128_MAX, I128_MIN, 0, ConnectionId(U128_MAX))]
    for row in rows:
        assert schema.decode_row("big", schema.encode_row("big", row, "C")) == row
        assert schema.decode_row("big", schema.encode_row("big", row, "B")) == row
    text = '"' + "1" * 40 + '"'
    assert SCHEMA.decode_row("wide", SCHEMA.encode_row("wide", wide(text=text, u128=5), "C")).text == text


def test_loads_exact_and_decode_json_keep_integers() -> None:
    assert loads_exact(f"[{U128_MAX},{I128_MIN},1.5]") == [U128_MAX, I128_MIN, 1.5]
    assert loads_exact(b"[18446744073709551615]") == [2**64 - 1]
    assert decode_json(f'{{"a":{U128_MAX}}}') == {"a": U128_MAX}


# -- timestamps ------------------------------------------------------------------------------


def test_negative_timestamps_in_rows() -> None:
    row = wide(at=Timestamp(-1), duration=TimeDuration(-(2**63)), schedule=ScheduleAt(Timestamp(-5)))
    stored, untyped = round_trip(row)
    assert '"at":{"__timestamp_micros_since_unix_epoch__":-1}' in stored
    assert '"schedule":[1,{"__timestamp_micros_since_unix_epoch__":-5}]' in stored
    assert json.loads(untyped)[WIDE.names.index("schedule")] == [1, [-5]]


def test_schedule_at_interval_shapes() -> None:
    stored, untyped = round_trip(wide(schedule=ScheduleAt(TimeDuration(60_000_000))))
    assert '"schedule":[0,{"__time_duration_micros__":60000000}]' in stored
    assert json.loads(untyped)[WIDE.names.index("schedule")] == [0, [60000000]]
    decode = TypeCodec().decoder(WIDE.elements[WIDE.names.index("schedule")].type)
    assert decode({"Interval": {"__time_duration_micros__": 60000000}}) == ScheduleAt(TimeDuration(60000000))


# -- floats ----------------------------------------------------------------------------------


def test_nan_and_infinities_are_null_and_null_decodes_as_nan() -> None:
    for value in (math.nan, math.inf, -math.inf):
        stored, untyped = SCHEMA.encode_row("wide", wide(f64=value, f32=value), "B"), \
            SCHEMA.encode_row("wide", wide(f64=value, f32=value), "C")
        assert '"f32":null,"f64":null' in stored
        decoded = SCHEMA.decode_row("wide", untyped)
        assert math.isnan(decoded.f32) and math.isnan(decoded.f64)
    assert dumps([math.nan, math.inf]) == "[null,null]"


def test_negative_zero_keeps_its_sign() -> None:
    stored, untyped = round_trip(wide(f64=-0.0, f32=-0.0))
    assert '"f32":-0.0,"f64":-0.0' in stored
    decoded = SCHEMA.decode_row("wide", untyped)
    assert math.copysign(1, decoded.f64) == -1 and math.copysign(1, decoded.f32) == -1


def test_integer_literal_accepted_for_floats() -> None:
    codec = TypeCodec()
    assert codec.decoder(F64)(4) == 4.0 and type(codec.decoder(F64)(4)) is float
    assert codec.decoder(F32)(None) != codec.decoder(F32)(None)  # NaN


F64_TEXTS = [
    # Rust's ryu layout (serde_json): plain decimals for 1e-5 <= |x| < 1e16, else exponent
    (12.5, "12.5"), (4.0, "4.0"), (-0.0, "-0.0"), (0.0, "0.0"), (0.1, "0.1"), (1e16, "1e16"),
    (-2.5e-7, "-2.5e-7"), (1e15, "1000000000000000.0"), (1.5e16, "1.5e16"),
    (123456789.125, "123456789.125"), (1e-4, "0.0001"), (1e-5, "0.00001"), (2.5e-5, "0.000025"),
    (-2.5e-5, "-0.000025"), (1e-6, "1e-6"), (1.25e-6, "1.25e-6"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e308"), (1e100, "1e100"),
]


@pytest.mark.parametrize(("value", "text"), F64_TEXTS)
def test_f64_written_as_rust_writes_it(value: float, text: str) -> None:
    assert format_f64(value) == text
    assert dumps(value) == text
    assert float(text) == value


F32_TEXTS = [
    # shortest digits that round-trip through f32; ryu layout for f32: plain for 1e-6 <= |x| < 1e13
    (0.1, "0.1"), (12.5, "12.5"), (-3.25, "-3.25"), (4.0, "4.0"), (-0.0, "-0.0"), (1e16, "1e16"),
    (-2.5e-7, "-2.5e-7"), (16777216.0, "16777216.0"), (1e12, "1000000000000.0"), (1e13, "1e13"),
    (1e-6, "0.000001"), (1.5e-6, "0.0000015"), (1e-7, "1e-7"), (3.4028234663852886e38, "3.4028235e38"),
    (1e-45, "1e-45"), (0.30000001192092896, "0.3"), (1.100000023841858, "1.1"),
]


@pytest.mark.parametrize(("value", "text"), F32_TEXTS)
def test_f32_written_shortest_as_rust_writes_it(value: float, text: str) -> None:
    assert format_f32(value) == text


def test_f32_column_written_shortest_in_rows() -> None:
    untyped = SCHEMA.encode_row("wide", wide(f32=0.10000000149011612, location=Location(12.5, -3.25)), "C")
    assert ",0.1," in untyped and "[12.5,-3.25]" in untyped
    # an f32 decodes to the float of its shortest text, and writes back the same text
    decoded = SCHEMA.decode_row("wide", untyped)
    assert decoded.f32 == 0.1 and SCHEMA.encode_row("wide", decoded, "C") == untyped


# -- strings ---------------------------------------------------------------------------------


def test_strings_escaped_as_the_server_escapes_them() -> None:
    text = "\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f/\u2028\u2029é\"\\ \U0001f600"
    written = dumps(text)
    assert written == '"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\x7f/\u2028\u2029é\\"\\\\ \U0001f600"'
    stored, untyped = round_trip(wide(text=text))
    assert written in stored and written in untyped
    # row strings inside a frame: escaped once more, and still exact after both decodes
    frame = dumps({"rows": [untyped]})
    assert SCHEMA.decode_row("wide", orjson.loads(frame)["rows"][0]).text == text


# -- shapes ----------------------------------------------------------------------------------


def test_nested_options() -> None:
    decode = TypeCodec().decoder(option_of(option_of(STRING)))
    encode = TypeCodec().encoder(option_of(option_of(STRING)), "C")
    assert decode({"some": {"some": "x"}}) == "x" == decode([0, [0, "x"]])
    assert encode("x") == [0, [0, "x"]] and encode(None) == [1, []]
    assert decode([1, []]) is None and decode(None) is None and decode({"none": {}}) is None
    # Options decode to the value or None, so Some(None) of an Option<Option<T>> also reads as None
    assert decode([0, [1, []]]) is None


def test_sum_accepts_every_documented_shape() -> None:
    rgb = SumValue("rgb", SCHEMA.codec.decoder(WIDE.elements[WIDE.names.index("color")].type)(
        [2, [1, 2, 3]]).value, 2)
    decode = SCHEMA.codec.decoder(WIDE.elements[WIDE.names.index("color")].type)
    for shape in ([2, [1, 2, 3]], ["rgb", [1, 2, 3]], ["2", [1, 2, 3]], {"rgb": {"r": 1, "g": 2, "b": 3}},
                  {"2": [1, 2, 3]}):
        assert decode(shape) == rgb
    assert decode([0, []]) == SumValue("red") == decode({"red": {}}) == decode(["red", []])


def test_variants_without_a_name_or_named_by_digits_decode_and_encode_by_the_same_rule() -> None:
    # tag 0 has no name (it is written and shown by its tag), tag 1 is named "0"
    ty = SumType((Variant(None, U8), Variant("0", STRING), Variant("two", UNIT)))
    codec = TypeCodec()
    decode = codec.decoder(ty)
    assert decode([0, 7]) == SumValue("0", 7, 0) and decode([0, 7]).tag == 0
    assert decode({"0": "s"}).tag == 1 and decode({"1": "s"}).tag == 1 and decode({"2": []}).tag == 2
    for value, tag in ((decode([0, 7]), 0), (decode([1, "s"]), 1), (SumValue("two"), 2), ("two", 2)):
        for form in ("A", "B", "C") if tag else ("B", "C"):
            again = decode(codec.encoder(ty, form)(value))
            assert again == (SumValue(value) if isinstance(value, str) else value) and again.tag == tag
    # form A (envelopes) writes tag 0 by its tag, which reads as variant 1's name: only the
    # positional forms tell them apart
    assert codec.encoder(ty, "A")(decode([0, 7])) == {"0": 7}
    assert codec.encoder(ty, "C")(SumValue("1", "s")) == [1, "s"]   # by digits, as {"1": "s"} decodes
    with pytest.raises(ProtocolError) as caught:
        decode([0, 300])
    assert caught.value.path == "0"   # the variant, by its tag
    with pytest.raises(ValueError, match="unknown variant 'three'"):
        codec.encoder(ty, "C")(SumValue("three"))


def test_stored_form_writes_nested_arrays_untyped_and_unit_as_object() -> None:
    row = wide(path=(Location(1.5, 2.0), Location(-1.0, 0.5)), location=Location(1.5, 2.0),
               colors=(None, SumValue("green", (), 1)), nothing=())
    stored, untyped = round_trip(row)
    assert '"path":[[1.5,2.0],[-1.0,0.5]]' in stored  # Vec<Location> in form C inside a B row
    assert '"location":{"x":1.5,"y":2.0}' in stored
    assert '"colors":[[1,[]],[0,[1,[]]]]' in stored
    assert '"color":[0,{}]' in stored and '"nothing":{}' in stored
    assert untyped.endswith(",[]]") and "[0,[]]" in untyped


def test_bytes_hex_and_array_forms() -> None:
    stored, _ = round_trip(wide(blob=b"\x00\xab\xff"))
    assert '"blob":"00abff"' in stored
    decode = TypeCodec().decoder(WIDE.elements[WIDE.names.index("blob")].type)
    assert decode("00ABFF") == b"\x00\xab\xff" == decode([0, 171, 255])
    assert decode("") == b""


def test_generated_row_class_and_python_types() -> None:
    assert Wide.__name__ == "wide" and Wide.__module__ == "rx_spacetimedb.rows"
    row = wide(u8=1)
    with pytest.raises(AttributeError):
        row.u8 = 2
    assert hash(row) == hash(wide(u8=1))


def test_an_f32_beyond_its_range_is_infinity_as_on_the_server() -> None:
    decode = TypeCodec().decoder(F32)
    assert decode(1e300) == math.inf and decode(-1e39) == -math.inf
    assert decode(3.4028234663852886e38) == 3.4028234663852886e38  # f32::MAX itself stays
    assert format_f32(3.4028235e38) == "3.4028235e38"  # its shortest text, a hair above it, too
    assert format_f32(1e300) == "null" and format_f32(-1e39) == "null"
    assert TypeCodec().decoder(F64)(1e300) == 1e300  # f64 is not clamped


@dataclasses.dataclass(frozen=True)
class _Mine:
    x: int
    y: str


def test_the_plan_is_the_one_description_of_both_paths() -> None:
    """A plan node changed by hand (another class, other field names) is what Python decodes by too."""
    codec = TypeCodec([ProductType((Element("a", U8), Element("b", STRING)))])
    _, _, _, _, (column_a, column_b) = codec.plan(RefType(0))
    node = ("product", _Mine, ("x", "y"), None, (column_a, column_b))
    decode = codec.node_decoder(node)
    assert decode({"x": 1, "y": "s"}) == decode([1, "s"]) == _Mine(1, "s")
    with pytest.raises(ProtocolError) as err:
        decode({"a": 1, "b": "s"})
    assert err.value.reason == "missing field 'x'"
    with pytest.raises(ProtocolError) as err:
        decode([256, "s"])
    assert (err.value.reason, err.value.path) == ("expected U8 in range, got 256", "x")
    key_of = codec.node_decoder(codec.key_plan(ProductType((Element("a", U8), Element("b", STRING))), (1,)))
    assert key_of({"a": "not read", "b": "k"}) == "k"
    if PARSER is not None:
        plan = PARSER.compile(node)
        assert PARSER.decode(plan, '{"x": 1, "y": "s"}') == _Mine(1, "s")
        assert PARSER.decode(plan, '[256, "s"]') is FALLBACK  # Python raises the error above
