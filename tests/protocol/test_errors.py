"""Bad input: a ProtocolError that names the message and the field path and keeps the raw frame."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from rx_spacetimedb.errors import ProtocolError, SchemaError, SpacetimeDBError
from rx_spacetimedb.protocol import (
    ModuleSchema,
    UnknownServerMessage,
    decode_client_message,
    decode_json,
    decode_server_message,
    encode_client_message,
    encode_server_message,
)
from rx_spacetimedb.protocol.jsontext import loads_exact
from rx_spacetimedb.protocol.types import parse_type
from tests.protocol._examples import example
from tests.protocol._schemas import wide_schema

COMMITTED = example("server-TransactionUpdate-committed.json")


def decode_error(data: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_server_message(data)
    error = info.value
    assert isinstance(error, SpacetimeDBError)
    if error.path.startswith("IdentityToken"):
        # The frame stays available for logging, with its token blanked (spec §1.4).
        assert error.raw is not None and "eyJ0eXAi" not in str(error.raw)
    else:
        assert error.raw == data  # the whole frame stays available for logging
    return error


def mutated(name: str, change: Callable[[dict[str, Any]], object]) -> str:
    frame = json.loads(example(name))
    change(next(iter(frame.values())))
    return json.dumps(frame, separators=(",", ":"))


@pytest.mark.parametrize("data", ["", "x", "{", '{"IdentityToken":}', b"\xff\xfe", "[1,2", "NaN",
                                  '{"IdentityToken":{"token":NaN}}'])
def test_not_json(data: str | bytes) -> None:
    error = decode_error(data)
    assert str(error).startswith("not JSON")


@pytest.mark.parametrize("data", ["[]", "{}", "null", "1", '"IdentityToken"',
                                  '{"IdentityToken":{},"TransactionUpdate":{}}'])
def test_not_a_one_key_object(data: str) -> None:
    assert "exactly one key" in str(decode_error(data))


def test_unknown_tag_is_a_message_not_an_error() -> None:
    raw = '{"FancyNewMessage":{"x":[1,2,{"y":null}],"big":340282366920938463463374607431768211455}}'
    message = decode_server_message(raw)
    assert isinstance(message, UnknownServerMessage)
    assert message.tag == "FancyNewMessage"
    assert message.payload["x"] == [1, 2, {"y": None}]
    assert message.raw == raw
    assert "FancyNewMessage" in repr(message)
    assert decode_server_message(raw.encode()) == message


def test_unknown_message_encodes_back() -> None:
    message = decode_server_message('{"Later":{"a":1,"b":"two"}}')
    assert encode_server_message(message) == '{"Later":{"a":1,"b":"two"}}'


WRONG_FIELDS: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    ("server-TransactionUpdate-committed.json", lambda b: b["reducer_call"].update(request_id="6"),
     "TransactionUpdate.reducer_call.request_id", "U32"),
    ("server-TransactionUpdate-committed.json",
     lambda b: b["status"]["Committed"]["tables"][0].update(num_rows=-1),
     "TransactionUpdate.status.Committed.tables[0].num_rows", "range"),
    ("server-TransactionUpdate-committed.json",
     lambda b: b["status"]["Committed"]["tables"][0]["updates"][0].update(inserts=["ok", 1]),
     "TransactionUpdate.status.Committed.tables[0].updates[0].inserts[1]", "string"),
    ("server-TransactionUpdate-committed.json",
     lambda b: b.update(timestamp={"__timestamp_micros_since_unix_epoch__": "x"}),
     "TransactionUpdate.timestamp", "I64"),
    ("server-TransactionUpdate-committed.json", lambda b: b.update(status={"Nope": []}),
     "TransactionUpdate.status", "Nope"),
    ("server-TransactionUpdate-committed.json", lambda b: b.update(status={"Failed": 3}),
     "TransactionUpdate.status.Failed", "string"),
    ("server-TransactionUpdate-committed.json", lambda b: b.update(caller_identity={"__identity__": "c200"}),
     "TransactionUpdate.caller_identity", "0x"),
    ("server-IdentityToken.json", lambda b: b.update(token=None), "IdentityToken.token", "string"),
    ("server-IdentityToken.json", lambda b: b.update(connection_id={"__connection_id__": "1"}),
     "IdentityToken.connection_id", "U128"),
    ("server-IdentityToken.json", lambda b: b.update(connection_id={"__connection_id__": -1}),
     "IdentityToken.connection_id", "range"),
    ("server-SubscribeApplied.json", lambda b: b["rows"]["table_rows"]["updates"][0].update(deletes=None),
     "SubscribeApplied.rows.table_rows.updates[0].deletes", "array"),
    ("server-SubscribeApplied.json", lambda b: b.update(query_id=1), "SubscribeApplied.query_id", "1"),
    ("server-SubscriptionError.json", lambda b: b.update(table_id={"none": None}),
     "SubscriptionError.table_id", "unit"),
    ("server-SubscriptionError.json", lambda b: b.update(request_id=9),
     "SubscriptionError.request_id", "sum"),
    ("server-OneOffQueryResponse.json", lambda b: b.update(message_id="xyz"),
     "OneOffQueryResponse.message_id", "hex"),
    ("server-ProcedureResult.json", lambda b: b.update(status={"Returned": [0]}),
     "ProcedureResult.status.Returned", "string"),
    ("server-InitialSubscription.json", lambda b: b.update(total_host_execution_duration=412),
     "InitialSubscription.total_host_execution_duration", "__time_duration_micros__"),
]


@pytest.mark.parametrize(("name", "change", "path", "said"), WRONG_FIELDS)
def test_wrong_field_type_names_message_and_path(
        name: str, change: Callable[[dict[str, Any]], object], path: str, said: str) -> None:
    error = decode_error(mutated(name, change))
    assert error.path == path
    assert str(error).startswith(path + ": ")
    assert said in error.reason


@pytest.mark.parametrize(("name", "change", "path", "said"), [
    ("server-IdentityToken.json", lambda b: b.pop("token"), "IdentityToken", "missing fields ['token']"),
    ("server-TransactionUpdate-committed.json", lambda b: b["reducer_call"].pop("args"),
     "TransactionUpdate.reducer_call", "missing fields ['args']"),
    ("server-IdentityToken.json", lambda b: (b.pop("token"), b.update(tokn="x")),
     "IdentityToken", "missing field 'token'"),
])
def test_missing_and_unknown_fields(
        name: str, change: Callable[[dict[str, Any]], object], path: str, said: str) -> None:
    error = decode_error(mutated(name, change))
    assert error.path == path and said in error.reason


def test_fields_a_newer_server_adds_are_ignored() -> None:
    """Forward compatibility: known fields decode, unknown ones are skipped (client frames stay strict)."""
    frame = mutated("server-TransactionUpdate-committed.json",
                    lambda b: (b.update(extra=1), b["reducer_call"].update(new_field=[1, 2])))
    assert decode_server_message(frame) == decode_server_message(COMMITTED)


@pytest.mark.parametrize(("name", "change", "path"), [
    ("server-SubscribeApplied.json", lambda b: b.update(request_id=2.0), "SubscribeApplied.request_id"),
    ("server-SubscriptionError.json", lambda b: b.update(request_id={"some": 9.0}),
     "SubscriptionError.request_id"),
    ("server-TransactionUpdate-committed.json", lambda b: b["reducer_call"].update(request_id=6.0),
     "TransactionUpdate.reducer_call.request_id"),
    # the 128-bit fields, which the decoder re-reads from the frame text, too
    ("server-IdentityToken.json", lambda b: b.update(connection_id={"__connection_id__": 1.0}),
     "IdentityToken.connection_id"),
    ("server-TransactionUpdate-committed.json", lambda b: b.update(energy_quanta_used={"quanta": 1e3}),
     "TransactionUpdate.energy_quanta_used.quanta"),
    ("server-TransactionUpdate-committed.json",
     lambda b: b.update(caller_connection_id={"__connection_id__": 4.127998922624714e37}),
     "TransactionUpdate.caller_connection_id"),
])
def test_integer_given_as_float_is_an_error(
        name: str, change: Callable[[dict[str, Any]], object], path: str) -> None:
    error = decode_error(mutated(name, change))
    assert error.path == path
    assert "integer literal" in error.reason


def test_float_spellings_of_the_wide_envelope_integers() -> None:
    # 1.0, 1e3, 10.5E2: the digits before the dot must not be taken for the integer
    for spelled in ("1.0", "1e3", "10.5E2", "41279989226247141793968051798400034689.0"):
        frame = COMMITTED.replace("41279989226247141793968051798400034689", spelled)
        assert decode_error(frame).path == "TransactionUpdate.caller_connection_id"


def test_deeply_nested_frames_are_protocol_errors() -> None:
    for depth in (900, 1000, 1100):
        nested = "[" * depth + "]" * depth
        frame = COMMITTED.replace('"args":"[\\"carol\\"]"', f'"args":{nested}')
        decode_error(frame)
        # with a float in a 128-bit field the decoder re-parses with the standard library
        decode_error(frame.replace("41279989226247141793968051798400034689", "1.5"))


def test_protocol_error_str_and_repr() -> None:
    frame = mutated("server-SubscribeApplied.json", lambda b: b.update(request_id="2"))
    error = decode_error(frame)
    assert str(error) == f"{error.path}: {error.reason}"
    shown = repr(error)
    assert shown.startswith("ProtocolError(") and "raw=" in shown
    assert len(shown) < len(frame) + 200 and "..." in shown  # a preview, not the whole frame


# -- rows ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide() -> ModuleSchema:
    return wide_schema()


ALICE_C = '[1,["0xc20071130a560e3f5832e71f59bc7eea12eb08e3c12a8f2464a1bb7ba704976a"],"alice",1200,' \
          '[1787217300123456],[0,[12.5,-3.25]]]'


@pytest.mark.parametrize(("row", "path", "said"), [
    ("[1,", "", "not JSON"),
    ("", "", "not JSON"),
    ('[1,["0x1"],"a",1.0,[1],[1,[]]]', "Player.score", "integer literal"),
    ('[1,["0x1"],"a",1e3,[1],[1,[]]]', "Player.score", "integer literal"),
    ('[1,["0x1"],"a",2147483648,[1],[1,[]]]', "Player.score", "range"),
    ('[1,["0x1"],"a",1,[1],["²",[]]]', "Player.location", "variant"),
    ('[1,["0x1"],"a",1,[1],[2,[]]]', "Player.location", "tag"),
    ('[1,["0x1"],"a",1,[1],[0,[1,"x"]]]', "Player.location.y", "number"),
    ('[1,["0x1"],"a",1,[1],[1,null]]', "Player.location", "unit"),
    ('[1,["0x1_0"],"a",1,[1],[1,[]]]', "Player.identity", "0x"),
    ('[1,[" 0x1"],"a",1,[1],[1,[]]]', "Player.identity", "0x"),
    ('[1,["0x1"],"a",1,[1],[1,[]],7]', "Player", "6 fields"),
    ('{"id":1}', "Player", "missing fields"),
    ('[1,["0x1"],"a",1,[99999999999999999999],[1,[]]]', "Player.created_at", "range"),
    ('[1,["0x1"],"a",1,[1.5],[1,[]]]', "Player.created_at", "integer literal"),
    ('[1,["0x1"],"a\\ud800",1,[1],[1,[]]]', "", "not JSON"),
    ("[" * 2000 + "]" * 2000, "", "not JSON"),
    ("[" + "[" * 950 + "]" * 950 + ",1,1,1,1,1]", "Player.id", "U64"),
])
def test_bad_rows(row: str, path: str, said: str, schema: ModuleSchema) -> None:
    with pytest.raises(ProtocolError) as info:
        schema.decode_row("Player", row)
    assert info.value.path == path or (path == "" and info.value.path in ("", "Player"))
    assert said in str(info.value)
    assert info.value.raw == row


def test_bad_wide_rows_after_the_exact_reparse(wide: ModuleSchema) -> None:
    big = f"[1,{2**128 - 1},{-(2**127) - 1},1,[1]]"  # i128 below its minimum: found only after the re-parse
    with pytest.raises(ProtocolError) as info:
        wide.decode_row("big", big)
    assert info.value.path == "big.b" and "range" in info.value.reason
    with pytest.raises(ProtocolError) as info:
        wide.decode_row("big", f"[1,{2**100},1.5,1,[1]]")
    assert info.value.path == "big.b"
    with pytest.raises(ProtocolError):
        wide.decode_row("big", f"[1,{2**100}," + "[" * 1000 + "]" * 1000 + ",1,[1]]")


def test_decode_json_refuses_what_orjson_refuses() -> None:
    assert decode_json(ALICE_C)[2] == "alice"
    for text in ("[NaN]", "[Infinity,1]", f"[NaN,{2**100}]", f"[-Infinity,{2**100}]", "[" * 5000):
        with pytest.raises(ProtocolError):
            decode_json(text)
    with pytest.raises(ValueError):
        loads_exact(f"[NaN,{2**100}]")


def test_unknown_names_are_schema_errors(schema: ModuleSchema) -> None:
    with pytest.raises(SchemaError, match="Player"):
        schema.decode_row("Playr", ALICE_C)
    with pytest.raises(SchemaError, match="CreatePlayer"):
        schema.decode_reducer_args("Nope", "[]")
    with pytest.raises(SchemaError, match="FindPlayer"):
        schema.decode_procedure_return("Nope", "[]")
    with pytest.raises(SchemaError):
        schema.encode_reducer_args("SetScore", [1])
    with pytest.raises(SchemaError):
        schema.encode_reducer_args("SetScore", {"id": 1, "points": 2})


def test_bad_reducer_args_and_procedure_returns(schema: ModuleSchema) -> None:
    with pytest.raises(ProtocolError) as info:
        schema.decode_reducer_args("SetScore", '[1,"x"]')
    assert info.value.path == "SetScore.args.score"
    with pytest.raises(ProtocolError) as info:
        schema.decode_procedure_return("FindPlayer", "[0,[1]]")
    assert info.value.path.startswith("FindPlayer.return")


# -- the schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    "[]", "{", '{"typespace":{}}', '{"typespace":{"types":[1]}}',
    '{"typespace":{"types":[{"Sum":{"variants":[1]}}]}}',
    '{"typespace":{"types":[{"Product":{"elements":["x"]}}]}}',
    '{"typespace":{"types":[{"Product":{"elements":[{"name":"x","algebraic_type":{"U8":[]}}]}}]}}',
    '{"typespace":{"types":[{"Nope":[]}]}}',
    '{"typespace":{"types":[]},"tables":[{"name":"T","product_type_ref":"0"}]}',
    '{"typespace":{"types":[]},"tables":[{"name":"T"}]}',
    '{"typespace":{"types":[]},"reducers":[{"name":"r","params":[]}]}',
])
def test_malformed_schemas(data: str) -> None:
    with pytest.raises(ProtocolError):
        ModuleSchema.from_json(data)


def _player_schema(change: Callable[[dict[str, Any]], object]) -> str:
    document = json.loads(example("http-schema-v9-response.json"))
    change(document)
    return json.dumps(document)


@pytest.mark.parametrize("change", [
    lambda d: d["reducers"][1].update(name=[]),
    lambda d: d["types"][0]["name"].update(name=["Player"]),
    lambda d: d["tables"][0].update(primary_key=["id"]),
    # recursive types: servers refuse them, and decoding one would recurse without end
    lambda d: d["typespace"]["types"][1]["Product"]["elements"][0].update(algebraic_type={"Ref": 1}),
    lambda d: d["typespace"]["types"][1]["Product"]["elements"][0].update(
        algebraic_type={"Array": {"Ref": 0}}),
])
def test_malformed_schema_details(change: Callable[[dict[str, Any]], object]) -> None:
    with pytest.raises(ProtocolError):
        ModuleSchema.from_json(_player_schema(change))


def test_a_failed_row_type_stays_an_error(schema: ModuleSchema) -> None:
    broken = ModuleSchema.from_json(_player_schema(lambda d: d["tables"][0].update(product_type_ref=7)))
    for _ in range(2):  # the second call used to find an empty recursion guard: IndexError
        with pytest.raises(ProtocolError, match="Ref 7"):
            broken.decode_row("Player", ALICE_C)
        with pytest.raises(ProtocolError, match="Ref 7"):
            broken.encode_row("Player", schema.decode_row("Player", ALICE_C))


def test_awkward_column_names(schema: ModuleSchema) -> None:
    def rename(d: dict[str, Any]) -> None:
        for element, name in zip(d["typespace"]["types"][0]["Product"]["elements"],
                                 ["__0", ":x", "class", "__init__", "a b", "created_at"], strict=True):
            element["name"] = {"some": name}

    odd = ModuleSchema.from_json(_player_schema(rename))
    row = odd.decode_row("Player", ALICE_C)
    assert (row.f__0, row.f__x, row.class_, row.f__init__, row._a_b) == (1, schema.decode_row(
        "Player", ALICE_C).identity, "alice", 1200, schema.decode_row("Player", ALICE_C).created_at)
    assert odd.encode_row("Player", row) == ALICE_C
    assert '"__0":1,":x":' in odd.encode_row("Player", row, "B")
    clash = ModuleSchema.from_json(_player_schema(
        lambda d: d["typespace"]["types"][0]["Product"]["elements"][3].update(name={"some": "_a_b"})
        or d["typespace"]["types"][0]["Product"]["elements"][2].update(name={"some": "a b"})))
    with pytest.raises(ProtocolError, match="Player"):
        clash.decode_row("Player", ALICE_C)


def test_parse_type_errors_name_the_path() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_type({"Product": {"elements": [{"name": {"some": "a"}, "algebraic_type": {"X": []}}]}}, "t")
    assert info.value.path == "t.Product.elements[0]"


# -- client frames (what the emulator receives) ----------------------------------------------


@pytest.mark.parametrize(("data", "said"), [
    ('{"CallReducer":{"reducer":"r","args":"[]","request_id":1,"flags":2}}', "flags"),
    ('{"CallReducer":{"reducer":"r","args":"[]","request_id":1}}', "missing"),
    ('{"CallReducer":{"reducer":"r","args":[],"request_id":1,"flags":0}}', "string"),
    ('{"CallReducer":{"reducer":"r","args":"[]","request_id":1.0,"flags":0}}', "integer literal"),
    ('{"CallReducer":{"reducer":"r","args":"[]","request_id":1,"flags":0,"flags":0}}', "duplicate"),
    ('{"CallProcedure":{"procedure":"p","args":"[]","request_id":1,"flags":1}}', "flags"),
    ('{"Subscribe":{"query_strings":"SELECT * FROM t","request_id":1}}', "array"),
    ('{"Subscribe":{"query_strings":[NaN],"request_id":1}}', "not JSON"),
    ('{"Nope":{}}', "variant"),
    ("[" * 3000, "not JSON"),
])
def test_bad_client_frames(data: str, said: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_message(data)
    assert said in str(info.value) and info.value.raw == data


def test_encoding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_client_message("Subscribe")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_server_message(object())  # type: ignore[arg-type]
