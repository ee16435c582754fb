"""The generated product decoders (``TypeCodec._fast_product_decoder``) against the closure decoders.

The generated code is only a fast path: on any value, valid or not, it must give what the closure
decoder alone gives, the same object or the same ProtocolError (type, reason and field path).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import Identity, ModuleSchema, TableDef, Timestamp
from rx_spacetimedb.protocol.jsontext import dumps, loads_exact
from rx_spacetimedb.protocol.sats import Decoder, Form, TypeCodec
from rx_spacetimedb.protocol.schema import _loads_wide
from rx_spacetimedb.protocol.types import (
    CONNECTION_ID,
    F32,
    IDENTITY,
    STRING,
    TIMESTAMP,
    U64,
    U256,
    AlgebraicType,
    Element,
    ProductType,
    RefType,
    option_of,
)
from tests.protocol._strategies import LEAF_TYPES, PROPERTY, canon, types, values


class ClosureCodec(TypeCodec):
    """The codec without generated decoders: the reference the fast path must agree with."""

    def _fast_product_decoder(self, node: tuple[Any, ...], decs: Sequence[Decoder],
                              slow: Decoder) -> Decoder:
        return slow


# what a mutation puts somewhere in a valid value: every near miss of the fast path's checks
REPLACEMENTS = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1.0, 1.5, 2**64, 2**64 - 1, 2**128, -(2**127) - 1, 2**256,
                     1e20, "0x1", "0x_1", "", "x", [], {}, [0], [0, []], [1, []], [2, 1], {"some": 1},
                     {"none": []}, {"__identity__": "0x1"}, {"__identity__": 1, "x": 2}, ["0x1"],
                     [[]], {"v0": []}, {"f0": 1}]),
    st.integers(), st.floats(allow_nan=False), st.text(max_size=3),
)


def mutate(data: st.DataObject, value: Any, top: bool = False) -> Any:
    """``value`` with one node replaced (not ``value`` itself if ``top``), or an object key dropped
    or added."""
    if isinstance(value, list) and value and (top or data.draw(st.booleans())):
        i = data.draw(st.integers(0, len(value) - 1))
        return [mutate(data, v) if j == i else v for j, v in enumerate(value)]
    if isinstance(value, dict) and value and (top or data.draw(st.booleans())):
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["descend", "drop", "add"]))
        if action == "drop":
            return {k: v for k, v in value.items() if k != key}
        if action == "add":
            return {**value, data.draw(st.sampled_from(["extra", key + "_"])): data.draw(REPLACEMENTS)}
        return {k: mutate(data, v) if k == key else v for k, v in value.items()}
    return data.draw(REPLACEMENTS)


def outcome(decode: Decoder, value: Any) -> Any:
    try:
        return "ok", canon(decode(value))
    except ProtocolError as err:
        return type(err).__name__, err.reason, err.path


def row_type(data: st.DataObject) -> ProductType:
    column = st.one_of(st.sampled_from(LEAF_TYPES), types())  # leaves often: the in-line checks
    columns = data.draw(st.lists(column, min_size=1, max_size=4), label="columns")
    return ProductType(tuple(Element(f"c{i}", t) for i, t in enumerate(columns)))


@PROPERTY
@given(st.data())
def test_generated_decoder_agrees_with_the_closure_decoder(data: st.DataObject) -> None:
    ty = row_type(data)
    ignore_unknown = data.draw(st.booleans(), label="ignore_unknown_fields")
    fast_codec = TypeCodec([ty], ignore_unknown_fields=ignore_unknown)
    slow_codec = ClosureCodec([ty], ignore_unknown_fields=ignore_unknown)
    fast, slow = fast_codec.decoder(RefType(0)), slow_codec.decoder(RefType(0))
    assert fast is not slow_codec.decoder(RefType(0))
    row = data.draw(values(ty, fast_codec), label="row")
    form: Form = data.draw(st.sampled_from(["A", "B", "C"]), label="form")
    value = loads_exact(dumps(fast_codec.encoder(ty, form)(row)))
    assert outcome(fast, value) == outcome(slow, value) == ("ok", canon(row))
    broken = mutate(data, value, top=True)
    assert outcome(fast, broken) == outcome(slow, broken)


PLAYER = ProductType((
    Element("id", U64), Element("identity", IDENTITY), Element("name", STRING),
    Element("at", TIMESTAMP), Element("where", option_of(RefType(1))), Element("conn", CONNECTION_ID),
))
POINT = ProductType((Element("x", F32), Element("y", F32)))


def player_schema(**kwargs: Any) -> ModuleSchema:
    return ModuleSchema([PLAYER, POINT], tables=[TableDef("player", 0, (0,))], **kwargs)


def test_rows_built_through_their_slots_are_ordinary_frozen_instances() -> None:
    schema = player_schema()
    row = schema.decode_row("player", '[7,["0xff"],"ann",[5],[0,[1.5,-2.0]],[3]]')
    cls, point = schema.row_class("player"), schema.codec.class_for(RefType(1))
    by_init = cls(7, Identity(255), "ann", Timestamp(5), point(1.5, -2.0), row.conn)
    assert row == by_init and hash(row) == hash(by_init) and repr(row) == repr(by_init)
    assert type(row) is cls and type(row.identity) is Identity and row.identity == Identity(255)
    assert hash(row.identity) == hash(Identity(255)) and row.at == Timestamp(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.id = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.identity.value = 1  # type: ignore[misc]
    assert schema.decode_row("player", json.dumps({
        "id": 7, "identity": {"__identity__": "0xff"}, "name": "ann", "at": {
            "__timestamp_micros_since_unix_epoch__": 5}, "where": {"some": {"x": 1.5, "y": -2.0}},
        "conn": {"__connection_id__": row.conn.value}})) == row


@pytest.mark.parametrize(("text", "path", "reason"), [
    ('[7,["0xff"],"ann",[5],[0,[1.5,-2.0]],[3],1]', "player", "expected player (6 fields"),
    ('[-1,["0xff"],"ann",[5],[1,[]],[3]]', "player.id", "expected U64 in range"),
    ('[1.5,["0xff"],"ann",[5],[1,[]],[3]]', "player.id", "expected an integer literal for U64"),
    ('[7,["0x_f"],"ann",[5],[1,[]],[3]]', "player.identity", "expected U256 as a 0x string"),
    ('[7,{"__identity__":"0xf","x":1},"ann",[5],[1,[]],[3]]', "player.identity", "expected __identity__"),
    ('[7,["0xf"],5,[5],[1,[]],[3]]', "player.name", "expected a string"),
    ('[7,["0xf"],"ann",[9223372036854775808],[1,[]],[3]]', "player.at", "expected I64 in range"),
    ('[7,["0xf"],"ann",[5],[0,[1.5,true]],[3]]', "player.where.y", "expected a number"),
    ('[7,["0xf"],"ann",[5],[1,[]],[-3]]', "player.conn", "expected U128 in range"),
])
def test_errors_keep_their_field_path(text: str, path: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        player_schema().decode_row("player", text)
    assert caught.value.path == path and caught.value.reason.startswith(reason), caught.value


def test_user_row_classes_are_built_by_their_constructor() -> None:
    built = []

    class Player:
        def __init__(self, id: int, identity: Identity, name: str, at: Timestamp, where: Any,
                     conn: Any) -> None:
            built.append(id)
            self.id, self.identity, self.where = id, identity, where

    schema = player_schema(row_classes={"player": Player})
    row = schema.decode_row("player", '[7,["0xff"],"ann",[5],[0,[1.5,-2.0]],[3]]')
    assert type(row) is Player and built == [7] and row.identity == Identity(255)
    assert row.where == schema.codec.class_for(RefType(1))(1.5, -2.0)


def test_256_bit_integers_may_be_numbers_or_hex_strings() -> None:
    codec = TypeCodec([ProductType((Element("a", U256), Element("b", IDENTITY)))])
    decode = codec.decoder(RefType(0))
    assert decode([2**255, [2**255]]) == decode(["0x8" + "0" * 63, {"__identity__": "0x8" + "0" * 63}])
    assert decode([5, [5]]).b == Identity(5)


def test_special_types_outside_products_are_checked_too() -> None:
    decode = TypeCodec().decoder(IDENTITY)
    assert decode(["0x2a"]) == Identity(42)
    with pytest.raises(ProtocolError, match="U256 in range"):
        decode([-1])


def test_a_plain_codec_uses_generated_decoders_and_the_reference_does_not() -> None:
    ty: AlgebraicType = ProductType((Element("a", U64),))
    assert TypeCodec([ty]).decoder(RefType(0)).__qualname__.startswith("decode_")
    assert not ClosureCodec([ty]).decoder(RefType(0)).__qualname__.startswith("decode_")


def test_nested_options_and_specials_keep_their_own_decoders() -> None:
    pair = ProductType((Element("s", STRING), Element("p", option_of(IDENTITY))))
    ty = ProductType((Element("o", option_of(option_of(RefType(1)))), Element("i", option_of(IDENTITY))))
    fast = TypeCodec([ty, pair]).decoder(RefType(0))
    slow = ClosureCodec([ty, pair]).decoder(RefType(0))
    for value in [
        [[0, [0, ["a", None]]], None], [[0, [1, []]], [0, ["0x1"]]], [[0, ["some", ["a", [0, [2]]]]], None],
        [{"some": {"some": {"s": "b", "p": {"some": {"__identity__": "0x3"}}}}}, {"none": []}],
        [[0, {"0": ["a", None]}], ["none", []]], [[0, [2, []]], None], [[0, [0, ["a", [0, [-1]]]]], None],
    ]:
        assert outcome(fast, value) == outcome(slow, value), value


@pytest.mark.parametrize("text", [
    "[1,340282366920938463463374607431768211455]", ' [1, 2] ', b"[1,2]",
    '{"a":-170141183460469231731687303715884105728}', '"x"', "[1.5e300]", "[]",
])
def test_rows_with_128_bit_columns_parse_as_loads_exact_does(text: str | bytes) -> None:
    value = _loads_wide(text)
    assert value == loads_exact(text) and json.dumps(value) == json.dumps(loads_exact(text))


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1] x", "[1,", "", " ", "[1]]",
                                  "[" * 100_000, "{'a':1}"])
def test_rows_with_128_bit_columns_reject_what_loads_exact_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        loads_exact(text)
    with pytest.raises(ValueError):
        _loads_wide(text)
    with pytest.raises(ProtocolError, match="is not JSON"):
        player_schema().decode_row("player", text)


def test_key_decoders_of_one_and_of_several_columns() -> None:
    one = player_schema().key_decoder("player")
    several = ModuleSchema([PLAYER, POINT], tables=[TableDef("player", 0, (2, 0))]).key_decoder("player")
    assert one is not None and several is not None
    positional, keyed = '[7,["0xff"],"ann",[5],[1,[]],[3]]', '{"id":7,"name":"ann","rest":"not read"}'
    assert one(positional) == one(keyed) == 7
    assert several(positional) == several(keyed) == ("ann", 7)
    for key_of in (one, several):
        with pytest.raises(ProtocolError, match="missing key column 'id'"):
            key_of('{"name":"ann"}')
        with pytest.raises(ProtocolError, match="expected a row of 6 columns"):
            key_of("[7]")
        with pytest.raises(ProtocolError, match="U64 in range"):
            key_of('[-7,["0xff"],"ann",[5],[1,[]],[3]]')


def test_decoders_of_types_without_a_ref_are_built_once() -> None:
    # reducer arguments and procedure returns ask the codec for their decoder on every call
    schema = player_schema()
    params = ProductType((Element("id", U64), Element("at", option_of(TIMESTAMP))))
    assert schema.codec.decoder(params, "SetArgs") is schema.codec.decoder(params, "SetArgs")
    nested: AlgebraicType = U64
    for _ in range(40):  # each Option level looks up its payload's decoder again: linear, not 2^40
        nested = option_of(ProductType((Element("a", nested),)))
    decode = TypeCodec([ProductType((Element("v", nested),))]).decoder(RefType(0))
    assert decode([[0, [None]]]).v.a is None
