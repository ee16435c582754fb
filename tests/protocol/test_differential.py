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
    TableDef,
    TransactionUpdate,
    codec,
    decode_server_message,
    fastpath,
)
from rx_spacetimedb.protocol import schema as schema_module
from rx_spacetimedb.protocol.schema import MAX_TYPE_DEPTH, ReducerDef
from rx_spacetimedb.protocol.types import U32, ArrayType, Element, ProductType, RefType, SumType, option_of
from tests.protocol._examples import SERVER_EXAMPLES, example
from tests.protocol._schemas import wide_schema
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


def damaged(text: str, every_replacement: bool = False) -> Iterator[str]:
    """Every truncation, every token deleted, and each token replaced (by one replacement, chosen
    in turn, or by all of them)."""
    for end in range(len(text)):
        yield text[:end]
    for i, token in enumerate(tokens(text)):
        head, tail = text[:token.start()], text[token.end():]
        yield head + tail
        chosen = REPLACEMENTS if every_replacement else [REPLACEMENTS[i % len(REPLACEMENTS)]]
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


SCHEMAS: dict[str, Callable[[], ModuleSchema]] = {
    "Player": lambda: ModuleSchema.from_json(example("http-schema-v9-response.json")),
    "wide": wide_schema,
    "deep": deep_schema,
}
ROWS = {"Player": PLAYER_ROWS, "wide": [WIDE_ROW], "deep": [DEEP_ROW]}


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
