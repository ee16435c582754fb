"""The C parser's path against the pure-Python path, on every example frame and row and on damaged ones.

Whether a C compiler was there at install must never change the answer to a frame or a row: for
every text the two paths give equal values (same types, same float bits) or the same ProtocolError.
The damage is deterministic: truncation at every offset, each token deleted or replaced (wide
numbers, other variant names, wrong shapes), and deep nesting. ``--runslow`` tries every
replacement at every token instead of one per token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rx_spacetimedb.cache import primary_key_getter
from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import (
    ConnectionId,
    EnergyQuanta,
    Identity,
    IdentityToken,
    ModuleSchema,
    ScheduleAt,
    SumValue,
    TableDef,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    codec,
    decode_server_message,
    fastpath,
)
from rx_spacetimedb.protocol import schema as schema_module
from rx_spacetimedb.protocol.schema import MAX_TYPE_DEPTH, ReducerDef
from rx_spacetimedb.protocol.types import (
    BYTES,
    I64,
    SCHEDULE_AT,
    STRING,
    U8,
    U32,
    UNIT,
    ArrayType,
    Element,
    ProductType,
    RefType,
    SumType,
    Variant,
    option_of,
)
from tests.protocol._examples import SERVER_EXAMPLES, example
from tests.protocol._schemas import COLOR, wide_schema
from tests.protocol.test_fuzz import PLAYER_ROWS, WIDE_ROW

needs_parser = pytest.mark.skipif(fastpath.PARSER is None,
                                  reason="the C parser is not built here: there is only one path")


@contextlib.contextmanager
def pure_python() -> Iterator[None]:
    """Within: frames and newly made schemas take the pure-Python path (as without a C compiler)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_FRAME_PLAN", None)
        patch.setattr(schema_module, "PARSER", None)
        yield


def shape(value: Any) -> Any:
    """A comparable form that tells apart what == does not (bool/int/float, -0.0/0.0, NaN) and
    compares classes by name (each schema generates its own row classes)."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__, *(shape(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple | list):
        return (type(value).__name__, *(shape(v) for v in value))
    if isinstance(value, dict):
        return ("dict", *((shape(k), shape(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def outcome(decode: Callable[[Any], Any], text: Any) -> Any:
    try:
        return "ok", shape(decode(text))
    except ProtocolError as err:
        return type(err).__name__, err.reason, err.path


@pytest.fixture(params=["c", "python"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the C parser's path (where it is built) and on the pure-Python path."""
    if request.param == "c":
        if fastpath.PARSER is None:
            pytest.skip("the C parser is not built here")
        yield "c"
    else:
        with pure_python():
            yield "python"


# -- what each path once answered in its own way -------------------------------------------------

def test_wide_integers_in_envelopes_are_exact(path: str) -> None:
    identity = decode_server_message('{"IdentityToken":{"identity":{"__identity__":18446744073709551616},'
                                     '"token":"t","connection_id":{"__connection_id__":1}}}')
    assert isinstance(identity, IdentityToken) and identity.identity == Identity(2**64)
    wide = 41279989226247141793968051798400034689
    committed = json.loads(example("server-TransactionUpdate-committed.json"), parse_int=str)
    body = committed["TransactionUpdate"]
    body["caller_connection_id"] = [str(wide)]          # the array form of both
    body["energy_quanta_used"] = [str(wide + 1)]
    frame = re.sub(r'"(\d+)"(?=[\],}])', r"\1", json.dumps(committed))   # digits unquoted again
    message = decode_server_message(frame)
    assert isinstance(message, TransactionUpdate)
    assert message.caller_connection_id == ConnectionId(wide)
    assert message.energy_quanta_used == EnergyQuanta(wide + 1)
    with pytest.raises(ProtocolError, match="integer literal"):   # a float stays an error
        decode_server_message(frame.replace(str(wide + 1), "1.5"))


def test_a_frame_is_an_object_of_one_key_never_a_tag_and_body(path: str) -> None:
    # spec §4: the server writes {"Tag": body}; [tag, body] is a sum's shape in rows, not a frame's
    (tag, body), = json.loads(example("server-IdentityToken.json")).items()
    for frame in ([3, body], [tag, body]):
        with pytest.raises(ProtocolError, match="exactly one key"):
            decode_server_message(json.dumps(frame))


def test_rows_by_key_report_a_malformed_row_after_a_repeated_key(path: str) -> None:
    schema = SCHEMAS["Player"]()
    key_of = primary_key_getter(schema, "Player")
    assert key_of is not None
    good = PLAYER_ROWS[0]
    assert schema.decode_rows_by_key("Player", [good, good], key_of) is None   # the caller counts
    with pytest.raises(ProtocolError, match="Player"):
        schema.decode_rows_by_key("Player", [good, good, good.replace("[", "[[", 1)], key_of)


def test_an_integer_beyond_every_double_is_a_protocol_error(path: str) -> None:
    # the wide table's rows are parsed exactly: a 400-digit integer reaches the f64 column whole
    schema = SCHEMAS["wide"]()
    row = json.loads(WIDE_ROW)
    row[13] = 10**400   # the f64 column
    with pytest.raises(ProtocolError, match="f64 range"):
        schema.decode_row("wide", json.dumps(row))


def test_decoding_leaks_no_references(path: str) -> None:
    schema = SCHEMAS["wide"]()
    cls = schema.row_class("wide")
    texts = [WIDE_ROW, WIDE_ROW.replace("[1,-2]", '[1,"x"]'), WIDE_ROW[:-9],
             WIDE_ROW.replace("[", '["\\u00e9",', 1)]
    key = schema.key_decoder("wide")
    key_of = primary_key_getter(schema, "wide")
    assert key is not None and key_of is not None

    def run() -> None:
        for text in texts:
            with contextlib.suppress(ProtocolError):
                schema.decode_row("wide", text)
            with contextlib.suppress(ProtocolError):
                key(text)
            with contextlib.suppress(ProtocolError):
                schema.decode_rows_by_key("wide", [WIDE_ROW, WIDE_ROW, text], key_of)   # a key twice
        schema.decode_rows("wide", texts[:1] * 5)
        schema.decode_rows_by_key("wide", texts[:1], key_of)
        with contextlib.suppress(ProtocolError):
            decode_server_message(FRAMES[0][:-1])
        decode_server_message(FRAMES[0])

    def counts() -> tuple[int, ...]:
        gc.collect()   # garbage of earlier tests or rounds, freed at some point, moves them too
        return sys.getrefcount(cls), sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount("x")

    # Drift over many rounds, not one snapshot: a count may move for reasons of its own (interning;
    # PYTHONMALLOC=malloc under the sanitizer run; on 3.11 another test's leftover thread touching
    # None), but a reference leaked on any path of run() grows it by at least one per round, in
    # every window. Only growth in all three windows of 20 rounds counts as a leak.
    run()
    samples = [counts()]
    for _ in range(3):
        for _ in range(20):
            run()
        samples.append(counts())
    growth = [[b - a for a, b in zip(was, now, strict=True)] for was, now in itertools.pairwise(samples)]
    leaking = [all(window[i] >= 10 for window in growth) for i in range(len(samples[0]))]
    assert not any(leaking), growth


# -- the damage ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[{}\[\],:]')

# what a token is replaced by: integers just past every width, floats where integers go, hex
# strings of every length, other variant names and option tags, wrong shapes, escapes
REPLACEMENTS = [
    "18446744073709551615", "18446744073709551616", "-9223372036854775809",
    "340282366920938463463374607431768211455", "340282366920938463463374607431768211456",
    "-170141183460469231731687303715884105729", "1" + "0" * 80, "9" * 400, "1e400", "1.5", "-0", "1e2",
    '"0x1"', '"0x' + "f" * 64 + '"', '"0x' + "f" * 65 + '"', '"-0x1"', '"0xg"',
    '"Committed"', '"Failed"', '"OutOfEnergy"', '"Returned"', '"some"', '"none"', '"IdentityToken"',
    '"__identity__"', '"__connection_id__"', '"quanta"', '"x"', '"\\u00e9"', '"\\ud800"', '""',
    "null", "true", "[]", "{}", "[0,[]]", "[1,[]]", "[2,[]]", '{"some":1}', '{"none":[]}', "[1]",
    "[" * 300 + "]" * 300,
]


def tokens(text: str) -> list[re.Match[str]]:
    return list(_TOKEN.finditer(text))


# for sums: every variant name and tag of the sums table's types, names that are digits, tags
# past the end, hex strings of odd length or with a non-hex digit, byte values out of range
SUM_REPLACEMENTS = [
    '"red"', '"green"', '"rgb"', '"Interval"', '"Time"', '"Some"', '"0"', '"1"', '"2"', '"3"', '"9"',
    '"007"', '"1 "', '"-1"', '"a"', '"b"', "0", "1", "2", "3", "-1", "255", "256", "-0", '"0a"', '"0A"',
    '"abc"', '"0g"', '"0a 0b"', '"\u0030a"', "[0,1]", "[256]", "[1.0]", "[true]", '{"red":[]}',
    '{"0":7}', '{"2":[]}', "[2,{}]", "[0,null]",
]


def damaged(text: str, every_replacement: bool = False,
            replacements: list[str] = REPLACEMENTS) -> Iterator[str]:
    """Every truncation, every token deleted, and each token replaced (by one replacement, chosen
    in turn, or by all of them)."""
    for end in range(len(text)):
        yield text[:end]
    for i, token in enumerate(tokens(text)):
        head, tail = text[:token.start()], text[token.end():]
        yield head + tail
        chosen = replacements if every_replacement else [replacements[i % len(replacements)]]
        for replacement in chosen:
            yield head + replacement + tail


def nested(text: str, depth: int) -> str:
    return "[" * depth + text + "]" * depth


DEPTHS = (100, 250, 600, 1100)   # past the plan limit, the parser's 512, orjson's 1024

# -- frames --------------------------------------------------------------------------------------

FRAMES = [example(name) for name in SERVER_EXAMPLES]
COMPACT = [json.dumps(json.loads(frame), separators=(",", ":")) for frame in FRAMES]


def frame_outcomes(text: str | bytes) -> tuple[Any, Any]:
    fast = outcome(decode_server_message, text)
    with pure_python():
        slow = outcome(decode_server_message, text)
    return fast, slow


def check_frames(texts: list[str]) -> None:
    differences = [(text, *both) for text in texts for both in [frame_outcomes(text)] if both[0] != both[1]]
    assert not differences, differences[:3]


def other_shapes(compact: str) -> list[str]:
    """The frame as a sum in its other shapes: [tag, body] by number and by name, a numeric key."""
    (tag, body), = json.loads(compact).items()
    index = [name for name, _, _ in codec.SERVER_VARIANTS].index(tag)
    return [json.dumps(form) for form in ([index, body], [tag, body], {str(index): body}, [body], {})]


@needs_parser
@pytest.mark.parametrize("name", SERVER_EXAMPLES)
def test_example_frames_and_their_damage_decode_alike(name: str) -> None:
    frame = example(name)
    compact = json.dumps(json.loads(frame), separators=(",", ":"))
    assert frame_outcomes(frame)[0][0] == "ok"
    check_frames([frame, compact, *damaged(compact), *other_shapes(compact)])
    assert frame_outcomes(frame.encode()) == frame_outcomes(frame)


@needs_parser
def test_deeply_nested_frames_decode_alike() -> None:
    (tag, body), = json.loads(COMPACT[0]).items()
    body_text = json.dumps(body, separators=(",", ":"))
    check_frames([f'{{"{tag}":{nested(body_text, depth)}}}' for depth in DEPTHS]
                 + [nested(COMPACT[0], depth) for depth in DEPTHS])


@needs_parser
@pytest.mark.slow
def test_every_replacement_at_every_token_of_every_frame() -> None:
    for compact in COMPACT:
        check_frames(list(damaged(compact, every_replacement=True)))


# -- rows ----------------------------------------------------------------------------------------

def deep_schema() -> ModuleSchema:
    """A column nested as deep as a schema may be (schema.MAX_TYPE_DEPTH): products, options and
    arrays in turn, down to a u32."""
    typespace: list[Any] = [ProductType((Element("v", U32),))]
    column: Any = RefType(0)
    for level in range(MAX_TYPE_DEPTH - 2):   # the row product and the u32's product add two
        if level % 3 == 0:
            column = ArrayType(column)
        elif level % 3 == 1:
            column = option_of(column)
        else:
            typespace.append(ProductType((Element("n", column),)))
            column = RefType(len(typespace) - 1)
    row = ProductType((Element("id", U32), Element("deep", column)))
    assert depth_of(row, typespace) == MAX_TYPE_DEPTH
    return ModuleSchema([*typespace, row], tables=[TableDef("deep", len(typespace), (0,))])


def depth_of(ty: Any, typespace: list[Any]) -> int:
    if isinstance(ty, RefType):
        return depth_of(typespace[ty.index], typespace)
    if isinstance(ty, ArrayType):
        return 1 + depth_of(ty.elem, typespace)
    if isinstance(ty, ProductType | SumType):
        parts = ty.elements if isinstance(ty, ProductType) else ty.variants
        return 1 + max((depth_of(p.type, typespace) for p in parts), default=0)
    return 0


def deep_row() -> str:
    """A row of deep_schema(): every array of one item, every option some."""
    schema = deep_schema()
    value: Any = schema.codec.encoder(RefType(0), "C")(schema.codec.class_for(RefType(0))(3))
    column = schema.row_product("deep").elements[1].type
    layers = []
    while not (isinstance(column, RefType) and column.index == 0):
        layers.append(column)
        column = column.elem if isinstance(column, ArrayType) else (
            column.variants[0].type if isinstance(column, SumType) else
            schema.typespace[column.index].elements[0].type)
    for layer in reversed(layers):
        value = [0, value] if isinstance(layer, SumType) else [value]   # an option, or an array or product
    return json.dumps([7, value], separators=(",", ":"))


DEEP_ROW = deep_row()


def test_types_deeper_than_a_schema_may_be_are_refused_at_schema_time_on_both_paths() -> None:
    deep = deep_schema()
    (row,) = [t for t in deep.typespace if isinstance(t, ProductType) and t.names == ("id", "deep")]
    deeper = ProductType((Element("id", U32), Element("deep", ArrayType(row.elements[1].type))))
    for make in (lambda: ModuleSchema([*deep.typespace, deeper]),
                 lambda: ModuleSchema(deep.typespace, reducers=[ReducerDef("r", deeper)])):
        for context in (contextlib.nullcontext(), pure_python()):
            with context, pytest.raises(ProtocolError, match=f"more than {MAX_TYPE_DEPTH} levels deep"):
                make()
    assert deep.decode_row("deep", DEEP_ROW).id == 7
    inline: Any = U32
    for _ in range(5000):   # without a Ref between: the check itself must not recurse that deep
        inline = ArrayType(inline)
    with pytest.raises(ProtocolError, match=re.escape("typespace.types[0] nests more than")):
        ModuleSchema([ProductType((Element("a", inline),))])


# a sum with a variant without a name (written by its tag) and one named by digits ("0" is tag 1's
# name; key "2" is tag 2 by number); payloads of bytes, arrays of sums and options of sums
NUMBERED = SumType((Variant(None, U32), Variant("0", STRING), Variant("x", BYTES),
                    Variant("many", ArrayType(RefType(1))), Variant(None, UNIT)))


def sums_schema() -> ModuleSchema:
    """A table of sum-typed columns: enums with payloads, numbered variants, ScheduleAt, bytes, and
    options and arrays of sums nested in each other."""
    row = ProductType((
        Element("id", U32), Element("color", RefType(1)), Element("numbered", RefType(2)),
        Element("schedule", SCHEDULE_AT), Element("blob", BYTES),
        Element("colors", ArrayType(option_of(RefType(1)))),
        Element("maybe", option_of(option_of(RefType(2)))), Element("schedules", ArrayType(SCHEDULE_AT)),
        Element("pair", SumType((Variant("a", ArrayType(RefType(2))), Variant("b", option_of(I64)),
                                 Variant("c", ArrayType(U8))))),
    ))
    return ModuleSchema([row, COLOR, NUMBERED], tables=[TableDef("sums", 0, (0,))],
                        type_names={1: "Color", 2: "Numbered"})


SUM_ROWS = [
    # positional, sums as [tag, payload]
    '[1,[2,[1,2,255]],[3,[[0,[]],[2,[1,2,255]]]],[0,[86400000000]],"00ff10",[[0,[0,[]]],[1,[]],[0,[2,[3,4,5]]]],'
    '[0,[0,[2,[1,2]]]],[[1,[1700000000000000]],[0,[0]]],[0,[[2,"beef"],[0,4294967295],[1,"s"],[4,[]]]]]',
    # object-shaped, sums as {"name": payload}, a numbered variant by its digits, bytes as an array
    '{"id":2,"color":{"rgb":{"r":1,"g":2,"b":3}},"numbered":{"0":"named by digits"},'
    '"schedule":{"Time":{"__timestamp_micros_since_unix_epoch__":17}},"blob":[0,1,255],'
    '"colors":[{"some":{"red":{}}},{"none":{}},null],"maybe":{"some":{"some":{"4":[]}}},'
    '"schedules":[{"Interval":{"__time_duration_micros__":5}}],"pair":{"b":{"some":-9}}}',
    # numbered variants by number in object form, empty bytes, an empty array of sums
    '[3,{"green":[]},{"2":"0A0b"},[1,[0]],"",[],null,[],{"c":[]}]',
]


SCHEMAS: dict[str, Callable[[], ModuleSchema]] = {
    "Player": lambda: ModuleSchema.from_json(example("http-schema-v9-response.json")),
    "wide": wide_schema,
    "deep": deep_schema,
    "sums": sums_schema,
}
ROWS = {"Player": PLAYER_ROWS, "wide": [WIDE_ROW], "deep": [DEEP_ROW], "sums": SUM_ROWS}


@dataclasses.dataclass
class Paths:
    """One table's decoding on both paths: a schema that takes the C parser and one that does not."""

    table: str
    fast: ModuleSchema
    slow: ModuleSchema

    @classmethod
    def of(cls, table: str) -> Paths:
        fast = SCHEMAS[table]()
        with pure_python():
            slow = SCHEMAS[table]()
            slow.decode_rows(table, ROWS[table][:1])   # its plans are made (as None) under the patch
            slow.decode_keys(table, ROWS[table][:1])
        assert fast._row_plan(table) is not None and slow._row_plan(table) is None
        return cls(table, fast, slow)

    def differences(self, texts: list[str]) -> list[Any]:
        table, found = self.table, []
        fast_key, slow_key = self.fast.key_decoder(table), self.slow.key_decoder(table)
        fast_key_of, slow_key_of = primary_key_getter(self.fast, table), primary_key_getter(self.slow, table)
        assert fast_key and slow_key and fast_key_of and slow_key_of
        good = ROWS[table][0]
        for text in texts:
            pairs = [
                (outcome(lambda t: self.fast.decode_row(table, t), text),
                 outcome(lambda t: self.slow.decode_row(table, t), text)),
                (outcome(fast_key, text), outcome(slow_key, text)),
                (outcome(lambda t: self.fast.decode_keys(table, [good, t]), text),
                 outcome(lambda t: self.slow.decode_keys(table, [good, t]), text)),
                (outcome(lambda t: self.fast.decode_row(table, t.encode("utf-8", "surrogatepass")), text),
                 outcome(lambda t: self.slow.decode_row(table, t.encode("utf-8", "surrogatepass")), text)),
                (outcome(lambda t: self.fast.decode_rows(table, [good, t]), text),
                 outcome(lambda t: self.slow.decode_rows(table, [good, t]), text)),
                # a repeated key first, then the text: both must still decode (and report) it
                (outcome(lambda t: self.fast.decode_rows_by_key(table, [good, good, t], fast_key_of), text),
                 outcome(lambda t: self.slow.decode_rows_by_key(table, [good, good, t], slow_key_of), text)),
            ]
            found += [(text, fast, slow) for fast, slow in pairs if fast != slow]
        return found


@needs_parser
@pytest.mark.parametrize("table", list(SCHEMAS))
def test_rows_and_their_damage_decode_alike(table: str) -> None:
    paths = Paths.of(table)
    texts = [text for row in ROWS[table] for text in [row, *damaged(row)]]
    if table == "sums":   # and every sum replacement at every token
        texts += [text for row in ROWS[table] for text in damaged(row, True, SUM_REPLACEMENTS)]
    if table != "deep":
        texts += [nested(ROWS[table][0], depth) for depth in DEPTHS]
    differences = paths.differences(texts)
    assert not differences, differences[:3]


@needs_parser
@pytest.mark.slow
@pytest.mark.parametrize("table", list(SCHEMAS))
def test_every_replacement_at_every_token_of_every_row(table: str) -> None:
    paths = Paths.of(table)
    texts = [text for row in ROWS[table] for text in damaged(row, every_replacement=True)]
    differences = paths.differences(texts)
    assert not differences, differences[:3]


def test_sum_columns_decode_to_their_values_and_the_c_parser_takes_them_whole(path: str) -> None:
    schema = SCHEMAS["sums"]()
    first, second, third = schema.decode_rows("sums", SUM_ROWS)
    rgb = first.color
    assert isinstance(rgb, SumValue) and (rgb.name, rgb.tag) == ("rgb", 2) and rgb.value.b == 255
    assert first.numbered == SumValue("many", (SumValue("red"), SumValue("rgb", rgb.value)))
    assert first.pair.value[1:] == (SumValue("0", 4294967295), SumValue("0", "s"), SumValue("4"))
    assert [v.tag for v in first.pair.value] == [2, 0, 1, 4]   # tag 0 has no name, tag 1 is named "0"
    assert first.schedule == ScheduleAt(TimeDuration(86400000000)) and first.blob == b"\x00\xff\x10"
    assert first.colors == (SumValue("red"), None, SumValue("rgb", first.colors[2].value))
    assert first.maybe == SumValue("x", b"\x01\x02") and first.pair.value[0] == SumValue("x", b"\xbe\xef")
    assert second.numbered.tag == 1 and second.blob == b"\x00\x01\xff" and second.colors[2] is None
    assert second.schedule == ScheduleAt(Timestamp(17)) and second.maybe == SumValue("4")
    assert third.numbered == SumValue("x", b"\x0a\x0b") and third.blob == b""
    assert third.pair == SumValue("c", b"")
    if path == "c":   # no fallback to the Python decoders for any of them
        plan = schema._row_plan("sums")
        assert all(fastpath.PARSER.decode(plan, row) is not fastpath.FALLBACK for row in SUM_ROWS)
    for text, where in [(SUM_ROWS[0].replace("[1,2,255]", "[1,2,256]"), "color.rgb.b"),
                        (SUM_ROWS[0].replace('[1,"s"]', "[1,5]"), "pair.a[2].0"),
                        (SUM_ROWS[0].replace("[2,[1,2,255]]]]", "[2,[1,2]]]]"), "numbered.many[1].rgb"),
                        (SUM_ROWS[0].replace('[2,"beef"]', '[2,"bee"]'), "pair.a[0].x"),
                        (SUM_ROWS[0].replace("[0,4294967295]", "[0,-1]"), "pair.a[1].0")]:
        with pytest.raises(ProtocolError) as caught:
            schema.decode_row("sums", text)
        assert caught.value.path == f"sums.{where}"   # names the variant (by its tag if it has none)
