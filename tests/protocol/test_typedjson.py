"""The C parser (``_typedjson.c``) against the Python decoders, which are the reference.

It is a fast path only: on any text, valid or not, a schema must give with it exactly what it gives
without it, the same value (same types, same float bits) or the same ProtocolError.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rx_spacetimedb.cache import primary_key_getter
from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import (
    ModuleSchema,
    TableDef,
    codec,
    decode_server_message,
    encode_server_message,
    fastpath,
)
from rx_spacetimedb.protocol import schema as schema_module
from rx_spacetimedb.protocol.jsontext import dumps, format_f32, format_f64, loads_exact
from rx_spacetimedb.protocol.types import (
    F32,
    F64,
    I8,
    I64,
    I128,
    I256,
    IDENTITY,
    STRING,
    U8,
    U64,
    U128,
    U256,
    AlgebraicType,
    ArrayType,
    Element,
    ProductType,
    RefType,
    option_of,
)
from tests.protocol._examples import SERVER_EXAMPLES
from tests.protocol._examples import example as example_frame
from tests.protocol._strategies import LEAF_TYPES, PROPERTY, canon, types, values
from tests.protocol.test_fast_decode import PLAYER, POINT, mutate
from tests.protocol.test_fuzz import SERVER_DOCS, mutated_json, mutated_text
from tests.protocol.test_properties import SERVER_MESSAGES

pytestmark = pytest.mark.skipif(fastpath.PARSER is None,
                                reason="the C parser is not built here (no C compiler at install?)")

def exact(value: Any) -> Any:
    """A comparable form that tells apart what == does not: bool/int/float, -0.0/0.0, NaN."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), *(exact(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple | list):
        return (type(value), *(exact(v) for v in value))
    return (type(value), value)


def outcome(decode: Any, text: str) -> Any:
    try:
        return "ok", exact(decode(text))
    except ProtocolError as err:
        return type(err).__name__, err.reason, err.path


def both(schema: ModuleSchema, table: str, text: str) -> tuple[Any, Any]:
    """(with the C parser, Python alone) for one row text."""
    fast = outcome(lambda t: schema.decode_row(table, t), text)
    slow = outcome(lambda t: schema._decode_row_python(table, t), text)
    return fast, slow


def one_table(ty: ProductType, *more: AlgebraicType, key: tuple[int, ...] = ()) -> ModuleSchema:
    return ModuleSchema([ty, *more], tables=[TableDef("t", 0, key)])


def texts_of(data: st.DataObject, value: Any) -> list[str]:
    """The server's compact text of a value, and variants the fast path must hand back or match."""
    text = dumps(value)
    out = [text, json.dumps(value, indent=1), json.dumps(value, ensure_ascii=True),
           dumps(mutate(data, value, top=True)) if isinstance(value, list | dict) and value else text]
    cut = data.draw(st.integers(0, max(len(text) - 1, 0)), label="cut")
    out.append(text[:cut])
    if isinstance(value, dict):
        out.append(json.dumps(dict(reversed(value.items()))))
    return out


@PROPERTY
@given(st.data())
def test_rows_of_random_types_decode_as_without_the_parser(data: st.DataObject) -> None:
    column = st.one_of(st.sampled_from(LEAF_TYPES), types())
    columns = data.draw(st.lists(column, min_size=1, max_size=4), label="columns")
    ty = ProductType(tuple(Element(f"c{i}", t) for i, t in enumerate(columns)))
    schema = one_table(ty, key=(0,))
    row = data.draw(values(ty, schema.codec), label="row")
    form = data.draw(st.sampled_from(["B", "C"]), label="form")
    value = loads_exact(dumps(schema.codec.encoder(ty, form)(row)))
    for text in texts_of(data, value):
        fast, slow = both(schema, "t", text)
        assert fast == slow, text
    text = dumps(value)
    decoded = schema.decode_row("t", text)
    names = [f.name for f in dataclasses.fields(row)]
    assert [canon(getattr(decoded, n)) for n in names] == [canon(getattr(row, n)) for n in names]
    plain_key = schema.key_decoder("t")
    assert plain_key is not None
    assert canon(plain_key(text)) == canon(getattr(row, names[0]))


def float_texts() -> st.SearchStrategy[str]:
    doubles = st.floats(allow_nan=False, allow_infinity=False)
    return st.one_of(
        doubles.map(repr), doubles.map(format_f64),
        doubles.map(lambda x: format_f32(x) if abs(x) < 3e38 else "1"),
        doubles.map(lambda x: f"{x:.17g}"), doubles.map(lambda x: f"{x:.3E}"),
        st.integers(-(10**20), 10**20).map(str),
        st.sampled_from(["0", "-0", "0.0", "-0.0", "1e22", "1e23", "9007199254740993", "9007199254740992.0",
                         "4.9e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "1e309", "-1e400",
                         "0.1", "0.30000000000000004", "123456789012345678901234567890", "1E5", "1e-5", "01",
                         "1.", ".5", "-", "1e", "+1", "null", "NaN", "3.4028235e38", "3.4028236e38",
                         "340282356779733661637539395458142568448"]),
    )


@PROPERTY
@given(float_texts())
@example("0.1")
def test_floats_are_the_doubles_python_reads(text: str) -> None:
    schema = one_table(ProductType((Element("d", F64), Element("f", F32))))
    for row in (f"[{text},{text}]", f'{{"d":{text},"f":{text}}}'):
        fast, slow = both(schema, "t", row)
        assert fast == slow, row


INT_TYPES = [U8, I8, U64, I64, U128, I128, U256, I256]


def int_texts() -> st.SearchStrategy[str]:
    edges = [v + d for b in (7, 8, 63, 64, 127, 128, 255, 256) for v in (2**b, -(2**b)) for d in (-1, 0, 1)]
    return st.one_of(
        st.sampled_from(edges).map(str), st.integers().map(str), st.sampled_from(edges).map(
            lambda v: f'"{"-" if v < 0 else ""}0x{abs(v):x}"'),
        st.sampled_from(['"0x"', '"0X1F"', '"+0x1"', '"-0x0"', '"0x_1"', '" 0x1"', '"0x1 "',
                         '"0x' + "0" * 70 + '1"', '"0x' + "f" * 65 + '"', "-0", "00", "1.0", "1e2", "-",
                         '"1"']),
    )


@PROPERTY
@given(st.sampled_from(INT_TYPES), int_texts())
def test_integers_are_exact_and_checked_as_without_the_parser(ty: AlgebraicType, text: str) -> None:
    schema = one_table(ProductType((Element("a", ty), Element("b", option_of(ty)))))
    for row in (f"[{text},[0,{text}]]", f'{{"a":{text},"b":{{"some":{text}}}}}'):
        fast, slow = both(schema, "t", row)
        assert fast == slow, row


@pytest.mark.parametrize("text", [
    '[7,["0xff"],"ann",[5],[0,[1.5,-2.0]],[3]]',
    '[7,["0xff"],"an\\"n",[5],[0,[1.5,-2.0]],[3]]',             # an escape: the Python path
    '[7,["0xff"],"änn 😀",[5],[1,[]],[340282366920938463463374607431768211455]]',
    '[7,["0xff"],"\\ud800",[5],[1,{}],[3]]',                     # a lone surrogate, escaped
    ' [ 7 , [ "0xff" ] , "ann" , [ 5 ] , null , [ 3 ] ] ',
    '[7,["0xff"],"ann",[5],{"none":[]},[3]]', '[7,["0xff"],"ann",[5],{"some":{"x":1,"y":2}},[3]]',
    '[7,["0xff"],"ann",[5],[2,[]],[3]]', '[7,["0xff"],"ann",[5],[0,[1,2],3],[3]]',
    '[7,["0xff"],"ann",[5],[1,[]],[3]] x', '[7,["0xff"],"ann",[5],[1,[]],[3],]', '[7,["0xff"],"ann"]',
    '{"id":7,"identity":{"__identity__":"0xff"},"name":"ann","at":{"__timestamp_micros_since_unix_epoch__":5},'
    '"where":{"some":{"x":1.5,"y":-2.0}},"conn":{"__connection_id__":3}}',
    '{"identity":{"__identity__":"0xff"},"id":7,"name":"ann","at":[5],"where":null,"conn":[3]}',
    '{"id":7,"id":7,"identity":["0xff"],"name":"ann","at":[5],"where":null,"conn":[3]}',
    '{"id":7,"identity":["0xff"],"name":"ann","at":[5],"where":null,"conn":[3],"extra":1}',
    '[7,["0xff"],"ann",[5],[0,[1.5,-2.0]],[-3]]', '[7,[-1],"ann",[5],[1,[]],[3]]',
    '[7,[],"ann",[5],[1,[]],[3]]',
    '[7,["0xff","0x1"],"ann",[5],[1,[]],[3]]', '[true,["0xff"],"ann",[5],[1,[]],[3]]', "[", "", "nul",
    '[7,["0xff"],"a\x01",[5],[1,[]],[3]]',
])
def test_row_texts_decode_as_without_the_parser(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = ModuleSchema([PLAYER, POINT], tables=[TableDef("t", 0, (0,))])
    fast, slow = both(schema, "t", text)
    assert fast == slow
    key = schema.key_decoder("t")
    monkeypatch.setattr(schema_module, "PARSER", None)
    python_key = ModuleSchema([PLAYER, POINT], tables=[TableDef("t", 0, (0,))]).key_decoder("t")
    assert key is not None and python_key is not None and key is not python_key
    assert outcome(key, text) == outcome(python_key, text)


def test_a_row_class_of_the_user_is_built_by_its_constructor_and_its_errors_kept() -> None:
    seen = []

    class Point:
        def __init__(self, x: float, y: float) -> None:
            if x < 0:
                raise ValueError("x must not be negative")
            seen.append((x, y))
            self.x, self.y = x, y

    schema = ModuleSchema([POINT], tables=[TableDef("t", 0)], row_classes={"t": Point})
    row = schema.decode_row("t", "[1.5,2]")
    assert type(row) is Point and (row.x, row.y) == (1.5, 2.0) and seen == [(1.5, 2.0)]
    with pytest.raises(ValueError, match="negative"):
        schema.decode_row("t", "[-1.5,2]")


def test_composite_keys_come_in_key_order() -> None:
    ty = ProductType((Element("a", U64), Element("b", STRING), Element("c", IDENTITY)))
    schema = one_table(ty, key=(2, 0))
    key = schema.key_decoder("t")
    assert key is not None
    row = schema.decode_row("t", '[1,"x",["0x2"]]')
    assert key('[1,"x",["0x2"]]') == (row.c, 1)
    assert key('{"a":1,"b":"x","c":{"__identity__":"0x2"}}') == (row.c, 1)
    assert key('{"c":{"__identity__":"0x2"},"a":1,"b":"x","d":0}') == (row.c, 1)   # the Python path
    with pytest.raises(ProtocolError):
        key('[1,"x",["0x2"],9')


def test_rows_by_key_are_what_python_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # decode_keyed reads the key columns of the rows it builds from their slots; rows the fast path
    # leaves to Python (an escape, another field order) and rows of a user class get key_of(row)
    class Pair:
        def __init__(self, a: int, b: str, c: Any) -> None:
            self.a, self.b, self.c = a, b, c

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Pair) and (self.a, self.b, self.c) == (other.a, other.b, other.c)

    ty = ProductType((Element("a", U64), Element("b", STRING), Element("c", IDENTITY)))
    texts = ['[1,"x",["0x2"]]', '{"a":2,"b":"y","c":{"__identity__":"0x3"}}', '[3,"\\u00e9",["0x4"]]',
             '{"c":{"__identity__":"0x5"},"a":4,"b":"z"}', '[5, "w", ["0x6"]]']
    user: dict[str, Any] = {"row_classes": {"t": Pair}}
    cases = [((0,), {}), ((2, 0), {}), ((0,), user), ((1, 2), user)]

    def plain(by_key: dict[Any, Any] | None) -> Any:  # two schemas generate two row classes
        assert by_key is not None
        return [(k, type(v).__name__, v.a, v.b, v.c) for k, v in by_key.items()]

    for key, kwargs in cases:
        def make() -> ModuleSchema:
            return ModuleSchema([ty], tables=[TableDef("t", 0, key)], **kwargs)  # noqa: B023

        fast = make()
        key_of = primary_key_getter(fast, "t")
        assert key_of is not None
        got = fast.decode_rows_by_key("t", texts, key_of)
        assert got is not None and list(got) == [key_of(row) for row in fast.decode_rows("t", texts)]
        assert fast.decode_rows_by_key("t", [*texts, texts[0]], key_of) is None   # a key twice
        assert fast.decode_rows_by_key("t", [], key_of) == {}
        with monkeypatch.context() as patch:
            patch.setattr(schema_module, "PARSER", None)
            slow = make()
            assert plain(slow.decode_rows_by_key("t", texts, key_of)) == plain(got)
            assert slow.decode_rows_by_key("t", [*texts, texts[0]], key_of) is None
    with pytest.raises(TypeError):
        fastpath.PARSER.decode_keyed(fast._row_plan("t"), texts, str, str, ())


@pytest.mark.parametrize("special", ['\\"', "\\\\", "\\u00e9", "\x01", "\x1f", "\x7f", " ", "~", "é", "😀",
                                     '"'])
def test_strings_are_read_alike_wherever_a_special_character_falls(special: str) -> None:
    # the parser scans strings eight bytes at a time: a quote, backslash or control character may
    # fall at any offset of those eight
    schema = one_table(ProductType((Element("s", STRING),)))
    # and skipped, when only the key of a row is read
    keyed = one_table(ProductType((Element("id", U64), Element("s", STRING))), key=(0,))
    fast_key = keyed.key_decoder("t")
    parts = keyed._key_parts("t")
    assert fast_key is not None and parts is not None
    for before in range(18):
        for after in (0, 9):
            text = '["' + "a" * before + special + "b" * after + '"]'
            fast, slow = both(schema, "t", text)
            assert fast == slow, text
            row = f"[7,{text[1:-1]}]"
            assert outcome(fast_key, row) == outcome(parts[1], row), row


def test_long_escaped_strings_are_read_alike() -> None:
    # an escaped string is unescaped into a buffer on the stack, then on the heap past 256 bytes
    schema = one_table(ProductType((Element("s", STRING),)))
    for piece in ("abc\\\"def", "x\\u00e9y", "\\ud83d\\ude00z", "é\\n"):
        for repeat in (1, 30, 200):
            text = '["' + piece * repeat + '"]'
            fast, slow = both(schema, "t", text)
            assert fast == slow and fast[0] == "ok", text


@pytest.mark.parametrize("ty", [U64, I64, U128, I128, F64], ids=str)
def test_numbers_of_every_length_are_read_alike(ty: AlgebraicType) -> None:
    # digits are read eight at a time: every length, and a non-digit at the end of each run
    schema = one_table(ProductType((Element("n", ty),)))
    for digits in range(1, 42):
        for text in ("9" * digits, "1" + "0" * (digits - 1), "-" + "7" * digits, "1" * digits + "x",
                     "3" * digits + ".5", "4" * digits + "e1", "5" * digits + "/", "6" * digits + ":"):
            fast, slow = both(schema, "t", f"[{text}]")
            assert fast == slow, text


def test_arrays_bytes_sums_and_units_decode_as_without_the_parser() -> None:
    from rx_spacetimedb.protocol.types import SumType, Variant
    color = SumType((Variant("Red", ProductType(())), Variant("Rgb", ArrayType(U8))))
    ty = ProductType((Element("a", ArrayType(ArrayType(STRING))), Element("b", ArrayType(U8)),
                      Element("c", color), Element("d", ProductType(())),
                      Element("e", option_of(RefType(1)))))
    schema = one_table(ty, POINT)
    for text in ['[[["a"],[]],"0a0b",[1,"ff00"],[],[0,[1,2]]]', '[[],[1,2],{"Red":[]},{},null]',
                 '[[[1]],"0g",[0,[]],[],null]', '[[["a"]],"",[2,[]],[],null]',
                 '[[["a"]],"",[0,[]],[1],null]']:
        fast, slow = both(schema, "t", text)
        assert fast == slow, text


def test_the_parser_is_used_here_and_can_be_switched_off() -> None:
    schema = ModuleSchema([PLAYER, POINT], tables=[TableDef("t", 0, (0,))])
    assert schema._row_plan("t") is not None
    code = "from rx_spacetimedb.protocol import fastpath; print(fastpath.PARSER is None)"
    for value, expected in (("1", "True"), ("0", "False")):
        env = {**os.environ, "RX_SPACETIMEDB_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == expected


def test_bad_plans_are_refused_at_compile() -> None:
    parser = fastpath.PARSER
    for plan in [(), ("nope",), ("int", 0), ("product", int, ("a",), None, ()), ("option",),
                 ("special", "k", int, None, ("str",)), ("key", ("a",), (("skip",),), (0,)),
                 ("key", ("a",), (("str",),), (1,)), ("call", len), ("bytes", 1),
                 # a variant built through a slot: (class, data descriptor), or (class,) for none
                 ("variant", ("a",), ((5,),), (("str",),), None),
                 ("variant", ("a",), ((5, Box.value),), (("str",),), None),
                 ("variant", ("a",), ((Box, None),), (("str",),), None),
                 ("variant", ("a",), (None,), (("str",),)),          # no unmake
                 ("variant", (5,), (None,), (("str",),), None),      # a name: str or None
                 ("message", (None,), (None,), (("str",),)),         # a message's: str
                 # a SumValue: (class, its three slots, name, tag)
                 ("variant", ("a",), ((Box, (Box.value,) * 2, "a", 0),), (("str",),), None),
                 ("variant", ("a",), ((Box, (Box.value,) * 3, None, 0),), (("str",),), None),
                 ("variant", ("a",), ((Box, (Box.value,) * 3, "a", "0"),), (("str",),), None)]:
        with pytest.raises((ValueError, TypeError)):
            parser.compile(plan)


@dataclasses.dataclass(frozen=True, slots=True)
class Box:
    value: Any


def test_a_variant_is_built_through_its_slot() -> None:
    plan = fastpath.PARSER.compile(("variant", ("Boxed", "Bare"), ((Box, Box.value), None),
                                    (("str",), ("int", 0, 9, False)), None))
    boxed = fastpath.PARSER.decode(plan, '{"Boxed": "x"}')
    assert type(boxed) is Box and boxed == Box("x")
    assert fastpath.PARSER.decode(plan, '[1, 7]') == 7
    assert fastpath.PARSER.decode(plan, '{"Other": 1}') is fastpath.FALLBACK


@dataclasses.dataclass(frozen=True, slots=True)
class Red:
    pass


def test_a_variant_of_no_fields_is_allocated_without_a_call() -> None:
    # (class,): a generated unit variant (or OutOfEnergy); nothing to store, untracked like a tuple
    plan = fastpath.PARSER.compile(("variant", ("Red", "Other"), ((Red,), None),
                                    (("unit",), ("str",)), None))
    red = fastpath.PARSER.decode(plan, '{"Red": []}')
    assert type(red) is Red and red == Red() and not gc.is_tracked(red)
    assert fastpath.PARSER.decode(plan, '[0, []]') == Red()
    assert fastpath.PARSER.decode(plan, '{"Red": [1]}') is fastpath.FALLBACK  # not a unit payload


def test_a_name_without_utf8_form_never_matches() -> None:
    # a lone surrogate cannot be in valid JSON text: such a field is left to the Python decoder
    plan = fastpath.PARSER.compile(("product", Box, ("\ud800",), (Box.value,), (("str",),)))
    assert fastpath.PARSER.decode(plan, '["x"]') == Box("x")
    assert fastpath.PARSER.decode(plan, '{"\\ud800": "x"}') is fastpath.FALLBACK


def test_a_special_byte_at_every_offset_of_a_word_is_found() -> None:
    # plain bytes are read eight at a time and the first quote, backslash or control character is
    # located within the word: at every offset, after ASCII and after multi-byte UTF-8, the parser
    # itself must take the string (not hand it back) and give what json gives
    plan = fastpath.PARSER.compile(("product", Box, ("value",), (Box.value,), (("str",),)))
    for special in ('\\"', "\\\\", "\\n", "\\u00e9", "\\ud83d\\ude00"):
        for before in range(18):
            for filler in ("a", "é"):
                literal = '"' + filler * before + special + "z" * (17 - before) + '"'
                assert fastpath.PARSER.decode(plan, f"[{literal}]") == Box(json.loads(literal)), literal
                assert fastpath.PARSER.decode(plan, f"[{literal[:-1]}]") is fastpath.FALLBACK
    for control in ("\t", "\x01", "\x1f"):
        for before in range(18):
            assert fastpath.PARSER.decode(plan, '["' + "a" * before + control + '"]') is fastpath.FALLBACK


# -- whole frames: decode_server_message with and without the parser ------------------------------

def frame_outcome(text: str | bytes) -> Any:
    try:
        return "ok", exact(decode_server_message(text))
    except ProtocolError as err:
        return type(err).__name__, err.reason, err.path, err.raw


def frame_both(text: str | bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = frame_outcome(text)
    with monkeypatch.context() as patch:
        patch.setattr(codec, "_FRAME_PLAN", None)
        slow = frame_outcome(text)
    return fast, slow


@pytest.mark.parametrize("name", SERVER_EXAMPLES)
def test_every_example_frame_takes_the_fast_path_to_the_same_message(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = example_frame(name)
    assert fastpath.PARSER.decode(codec._FRAME_PLAN, frame) is not fastpath.FALLBACK
    fast, slow = frame_both(frame, monkeypatch)
    assert fast == slow and fast[0] == "ok"


@PROPERTY
@given(SERVER_MESSAGES, st.data())
def test_frames_decode_as_without_the_parser(message: Any, data: st.DataObject) -> None:
    frame = encode_server_message(message)
    document = json.loads(frame)
    texts = [frame, json.dumps(document, indent=1), json.dumps(document, ensure_ascii=True),
             json.dumps(data.draw(mutated_json(document), label="mutated")),
             data.draw(mutated_text(frame), label="edited"), frame[:data.draw(st.integers(0, len(frame)))]]
    with pytest.MonkeyPatch.context() as monkeypatch:
        for text in texts:
            fast, slow = frame_both(text, monkeypatch)
            assert fast == slow, text
    assert exact(decode_server_message(frame)) == exact(message)


@PROPERTY
@given(st.sampled_from(SERVER_DOCS).flatmap(mutated_json))
def test_mutated_example_frames_decode_as_without_the_parser(document: Any) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = frame_both(json.dumps(document, separators=(",", ":")), monkeypatch)
        assert fast == slow


@pytest.mark.parametrize("text", [
    '"a\\"b\\\\c\\/d\\b\\f\\n\\r\\t"', '"\\u00e9\\u20ac\\ud83d\\ude00"', '"\\ud800"', '"\\udc00x"',
    '"\\ud800\\u0041"', '"\\u12"', '"\\x"', '"a\\', '"tab\tin"', '"\\u0000"', '"é😀\\n"',
])
def test_escaped_strings_decode_as_without_the_parser(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = ('{"TransactionUpdate":{"status":{"Failed":' + text + '},"timestamp":'
             '{"__timestamp_micros_since_unix_epoch__":1},"caller_identity":{"__identity__":"0x1"},"caller_connection_id":{"__connection_id__":'
             '340282366920938463463374607431768211455},"reducer_call":{"reducer_name":"r","reducer_id":0,'
             '"args":"[]","request_id":1},"energy_quanta_used":{"quanta":2},"total_host_execution_duration":'
             '{"__time_duration_micros__":3}}}')
    fast, slow = frame_both(frame, monkeypatch)
    assert fast == slow


def test_rows_of_atomic_values_are_left_out_of_the_garbage_collectors_walks() -> None:
    import gc
    schema = ModuleSchema([PLAYER, POINT], tables=[TableDef("t", 0, (0,))])
    row = schema.decode_row("t", '[7,["0xff"],"ann",[5],[0,[1.5,-2.0]],[3]]')
    assert not gc.is_tracked(row) and not gc.is_tracked(row.identity) and not gc.is_tracked(row.where)
    holder = one_table(ProductType((Element("a", ArrayType(STRING)),)))
    with_tuple = holder.decode_row("t", '[["x"]]')
    assert gc.is_tracked(with_tuple)  # it holds a (tracked) tuple: the collector keeps walking it


@pytest.mark.parametrize("text", ['[1,[1,[{}],[]]', '[1,null,[{}]', '{"a":1,"b":{"none":[{}},"u":[]}',
                                  '[1,[1,[]],[]]', '[1,[1,{}],{}]', '[1,"\\ud800",[]]', '[1,1e400,[]]',
                                  '[1,' + '9' * 400 + ',[]]', '[1,"\\ud83d\\ude00",[]]', '[1,1e99,{}]'])
def test_units_and_skipped_values_are_read_as_strictly_as_python(text: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for second in (option_of(I64), STRING):
        ty = ProductType((Element("a", I64), Element("b", second), Element("u", ProductType(()))))
        schema = one_table(ty, key=(0,))
        assert both(schema, "t", text)[0] == both(schema, "t", text)[1]
        key = schema.key_decoder("t")
        with monkeypatch.context() as patch:
            patch.setattr(schema_module, "PARSER", None)
            python_key = one_table(ty, key=(0,)).key_decoder("t")
        assert key is not None and python_key is not None
        assert outcome(key, text) == outcome(python_key, text), (second, text)


def test_decode_all_keeps_its_texts_while_python_code_changes_the_list() -> None:
    schema = one_table(ProductType((Element("a", I64),)))
    plan = schema._row_plan("t")
    texts = ["[1]", "[x]", "[3]", "[4]"]

    def slow(text: str) -> Any:
        texts.clear()  # the caller's list shrinks under the loop: the parser must not care
        return ("slow", text)

    rows = fastpath.PARSER.decode_all(plan, texts, slow)
    assert [getattr(r, "a", r) for r in rows] == [1, ("slow", "[x]"), 3, 4]


# -- the module's hygiene: its state per module, plans the garbage collector can see -------------

def test_each_module_object_has_its_own_state() -> None:
    import importlib.util
    loaded = fastpath.PARSER
    spec = importlib.util.spec_from_file_location(loaded.__name__, loaded.__file__)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)   # a second module object, not the cached one
    spec.loader.exec_module(fresh)
    assert fresh is not loaded and fresh.Plan is not loaded.Plan
    with pytest.raises(RuntimeError, match="configure"):
        fresh.compile(("str",))                     # its own state: not configured yet
    fresh.configure(fastpath.FALLBACK, (ProtocolError,))
    plan = fresh.compile(("product", Box, ("value",), (Box.value,), (("str",),)))
    assert fresh.decode(plan, '["x"]') == Box("x")
    with pytest.raises(TypeError, match="Plan"):   # a plan belongs to the module that made it
        loaded.decode(plan, '["x"]')


def test_a_cycle_through_a_plan_is_collected() -> None:
    import gc
    import weakref

    class Holder:
        plan: Any = None

    holder = Holder()

    def maker(value: Any, holder: Holder = holder) -> Any:   # the plan -> maker -> holder -> plan
        return value

    holder.plan = fastpath.PARSER.compile(("variant", ("a",), (maker,), (("str",),), None))
    assert gc.is_tracked(holder.plan) and maker in gc.get_referents(holder.plan)
    gone = weakref.ref(holder)
    del holder, maker
    gc.collect()
    assert gone() is None


@dataclasses.dataclass(slots=True, weakref_slot=True)
class OpenBox:
    value: Any


def test_only_rows_of_frozen_classes_leave_the_collectors_walks() -> None:
    import gc
    import weakref
    rows = {}
    for cls in (Box, OpenBox):
        plan = fastpath.PARSER.compile(("product", cls, ("value",), (cls.value,), (("str",),)))
        rows[cls] = fastpath.PARSER.decode(plan, '["x"]')
        assert type(rows[cls]) is cls
    assert not gc.is_tracked(rows[Box]) and gc.is_tracked(rows[OpenBox])
    open_box = rows.pop(OpenBox)
    open_box.value = [open_box]                     # a cycle the collector must still find
    gone = weakref.ref(open_box)
    del open_box
    gc.collect()
    assert gone() is None
