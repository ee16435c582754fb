"""Fuzzing: random JSON and mutated example frames. Only ProtocolError may come out of a decoder."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import (
    ModuleSchema,
    UnknownServerMessage,
    decode_client_message,
    decode_json,
    decode_server_message,
    encode_server_message,
)
from tests.protocol._examples import CLIENT_EXAMPLES, SERVER_EXAMPLES, example
from tests.protocol._schemas import wide_schema
from tests.protocol._strategies import canon

# FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite fast
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SCHEMA = ModuleSchema.from_json(example("http-schema-v9-response.json"))
WIDE = wide_schema()

def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for item in value.values() for k in _keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in _keys(item)}
    return set()


def _row_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value.get("inserts", ()), *value.get("deletes", ()),
                *(row for key, item in value.items() if key not in ("inserts", "deletes")
                  for row in _row_strings(item))]
    if isinstance(value, list):
        return [row for item in value for row in _row_strings(item)]
    return []


# field names and tags of the protocol, so random objects look like messages often enough
VOCABULARY = sorted(
    {k for name in [*SERVER_EXAMPLES, *CLIENT_EXAMPLES] for k in _keys(json.loads(example(name)))}
    | {"some", "none", "0", "1", "x", "y", "__identity__", "__connection_id__"}
)
KEYS = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6))
INTEGERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**128 - 1, 2**128, -(2**127) - 1,
                     10**400]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), INTEGERS, st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["0x0", "-0x2a", "0xFF", "a3f1", "²", "[1]", '{"a":1}']),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


def only_protocol_errors(decode: Callable[[Any], Any], data: Any) -> Any:
    """Call the decoder; a ProtocolError is fine (None), anything else fails the test."""
    try:
        return decode(data)
    except ProtocolError:
        return None


def check_server_frame(frame: str | bytes) -> None:
    try:
        message = decode_server_message(frame)
    except ProtocolError as err:
        # every error keeps the frame for logging (an IdentityToken's with its token blanked)
        assert err.raw == frame or err.path.startswith("IdentityToken")
        return
    if message is not None:
        # whatever decodes must encode, and decode again to the same thing
        again = decode_server_message(encode_server_message(message))
        if not isinstance(message, UnknownServerMessage):
            assert canon(again) == canon(message)


# -- structural mutations of JSON documents ---------------------------------------------------


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*here, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*here, i))
    return found


@st.composite
def mutated_json(draw: st.DrawFn, document: Any) -> Any:
    """The document with one to three random edits: replace a subtree, drop or add a key/item."""
    doc = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(JSON_VALUES)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        edit = draw(st.sampled_from(["replace", "drop", "add", "wrap"]))
        last = path[-1]
        if edit == "replace":
            parent[last] = draw(JSON_VALUES)
        elif edit == "drop":
            del parent[last]
        elif edit == "wrap":
            parent[last] = [parent[last]]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(JSON_VALUES)
        else:
            parent.insert(last, draw(JSON_VALUES))
    return doc


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """The text with random characters inserted, deleted or replaced."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(st.sampled_from(list('{}[]",:.-e0123456789\\ntu')), st.text(max_size=2)))
        if edit == "insert":
            chars.insert(at, piece)
        elif at < len(chars):
            if edit == "delete":
                del chars[at]
            else:
                chars[at] = piece
    return "".join(chars)


SERVER_DOCS = [json.loads(example(name)) for name in SERVER_EXAMPLES]
SERVER_TEXTS = [example(name) for name in SERVER_EXAMPLES]


@FUZZ
@given(JSON_VALUES)
def test_random_json_frames(value: Any) -> None:
    check_server_frame(json.dumps(value))


@FUZZ
@given(st.sampled_from([name.split("-")[1].removesuffix(".json") for name in SERVER_EXAMPLES]), JSON_VALUES)
def test_random_json_under_known_tags(tag: str, body: Any) -> None:
    check_server_frame(json.dumps({tag: body}))


@FUZZ
@given(st.sampled_from(SERVER_DOCS).flatmap(mutated_json))
def test_structurally_mutated_example_frames(document: Any) -> None:
    frame = json.dumps(document, separators=(",", ":"))
    check_server_frame(frame)
    check_server_frame(frame.encode())


@FUZZ
@given(st.sampled_from(SERVER_TEXTS).flatmap(mutated_text))
def test_textually_mutated_example_frames(frame: str) -> None:
    check_server_frame(frame)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_frames(data: bytes) -> None:
    check_server_frame(data)


# -- rows, args, returns ---------------------------------------------------------------------

PLAYER_ROWS = [
    row
    for name in ("server-InitialSubscription.json", "server-TransactionUpdateLight.json",
                 "server-TransactionUpdate-committed.json")
    for row in _row_strings(json.loads(example(name)))
]


def check_row(schema: ModuleSchema, table: str, text: str | bytes) -> None:
    row = only_protocol_errors(lambda t: schema.decode_row(table, t), text)
    if row is not None:
        # One trip may round an f32 the input wrote beyond f32 precision (16777217 -> 16777216) or
        # range (-> inf); from then on the row must survive every trip unchanged.
        once = schema.decode_row(table, schema.encode_row(table, row, "C"))
        again = schema.decode_row(table, schema.encode_row(table, once, "C"))
        assert canon(again) == canon(once)
        assert canon(schema.decode_row(table, schema.encode_row(table, once, "B"))) == canon(once)


def test_player_rows_found() -> None:
    assert len(PLAYER_ROWS) >= 4 and all(SCHEMA.decode_row("Player", r) for r in PLAYER_ROWS)


@FUZZ
@given(JSON_VALUES)
def test_random_json_rows(value: Any) -> None:
    text = json.dumps(value)
    check_row(SCHEMA, "Player", text)
    check_row(WIDE, "big", text)
    only_protocol_errors(decode_json, text)
    only_protocol_errors(lambda t: SCHEMA.decode_reducer_args("SetScore", t), text)
    only_protocol_errors(lambda t: SCHEMA.decode_procedure_return("FindPlayer", t), text)


@FUZZ
@given(st.sampled_from([json.loads(r) for r in PLAYER_ROWS]).flatmap(mutated_json))
def test_structurally_mutated_rows(row: Any) -> None:
    check_row(SCHEMA, "Player", json.dumps(row))


@FUZZ
@given(st.sampled_from(PLAYER_ROWS).flatmap(mutated_text))
def test_textually_mutated_rows(text: str) -> None:
    check_row(SCHEMA, "Player", text)
    check_row(SCHEMA, "Player", text.encode("utf-8", "surrogatepass"))


WIDE_ROW = WIDE.encode_row("wide", WIDE.decode_row("wide", json.dumps([
    255, 65535, 2**32 - 1, 2**64 - 1, 2**128 - 1, "0x" + "f" * 64,
    -128, -32768, -(2**31), -(2**63), -(2**127), "-0x" + "8" + "0" * 63,
    0.1, -0.0, True, "a\u2028\x00", "00ff", [1, -2], [0, 2**128 - 1],
    [0, [0, "x"]], [2, [1, 2, 3]], [1.5, 2.0], [[1.0, 2.0]], [[1, []], [0, [0, []]]], ["0x1"], [2**100],
    [-1], [5], [2**127], [1, [-7]], [],
])), "C")


@FUZZ
@given(st.one_of(st.just(json.loads(WIDE_ROW)).flatmap(mutated_json).map(json.dumps),
                 mutated_text(WIDE_ROW)))
def test_mutated_wide_rows(text: str) -> None:
    check_row(WIDE, "wide", text)


# -- the schema and client frames --------------------------------------------------------------


@FUZZ
@given(mutated_json(json.loads(example("http-schema-v9-response.json"))))
def test_mutated_schemas(document: Any) -> None:
    schema = only_protocol_errors(ModuleSchema.from_json, json.dumps(document))
    if schema is not None:
        for table in schema.tables:
            for row in PLAYER_ROWS:
                only_protocol_errors(functools.partial(schema.decode_row, table), row)


def test_a_column_of_a_sum_without_variants_refuses_every_value() -> None:
    # found by test_mutated_schemas: the C parser refused to compile the plan of such a column
    document = json.loads(example("http-schema-v9-response.json"))
    player = document["typespace"]["types"][0]["Product"]["elements"]
    location = next(e for e in player if e["name"] == {"some": "location"})
    location["algebraic_type"] = {"Sum": {"variants": []}}
    schema = ModuleSchema.from_json(json.dumps(document))
    for row in PLAYER_ROWS:
        with pytest.raises(ProtocolError):
            schema.decode_row("Player", row)


CLIENT_FRAMES = st.one_of(
    st.sampled_from([json.loads(example(n)) for n in CLIENT_EXAMPLES]).flatmap(mutated_json).map(json.dumps),
    st.sampled_from([example(n) for n in CLIENT_EXAMPLES]).flatmap(mutated_text),
)


@FUZZ
@given(CLIENT_FRAMES)
def test_mutated_client_frames(frame: str) -> None:
    only_protocol_errors(decode_client_message, frame)
