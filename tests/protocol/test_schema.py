"""ModuleSchema: parsing, lookups, generated and user row classes, args and returns."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import pytest

from rx_spacetimedb.errors import ProtocolError, SchemaError
from rx_spacetimedb.protocol import (
    Identity,
    ModuleSchema,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    decode_json,
)
from rx_spacetimedb.protocol.types import (
    STRING,
    U64,
    Element,
    ProductType,
    parse_type,
    type_to_json,
)
from tests.protocol._examples import example
from tests.protocol._schemas import WIDE, wide_schema

ALICE_B = json.loads(example("server-OneOffQueryResponse.json"))["OneOffQueryResponse"]["tables"][0]["rows"][
    0]
ALICE_C = ('[1,["0xc20071130a560e3f5832e71f59bc7eea12eb08e3c12a8f2464a1bb7ba704976a"],"alice",1200,'
           '[1787217300123456],[0,[12.5,-3.25]]]')


def test_code_built_schema_writes_the_json_the_server_writes_and_reads_it_back() -> None:
    schema = wide_schema()
    document = schema.to_json()
    assert set(document) == {"typespace", "tables", "reducers", "types", "misc_exports",
                             "row_level_security"}
    assert document["tables"][0]["primary_key"] == [0]
    assert document["types"][0] == {"name": {"scope": [], "name": "Location"}, "ty": 1,
                                    "custom_ordering": True}
    again = ModuleSchema.from_json(json.dumps(document))
    assert again.typespace == schema.typespace
    assert again.row_product("wide") == WIDE
    assert again.row_class("wide").__name__ == "wide"
    assert again.codec.class_for(WIDE.elements[WIDE.names.index("location")].type).__name__ == "Location"


def test_type_json_round_trips() -> None:
    for ty in WIDE.elements:
        assert parse_type(type_to_json(ty.type)) == ty.type


def test_generated_row_classes_have_typed_fields() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(wide_schema().row_class("wide"))}
    assert fields["u128"] is int and fields["f32"] is float and fields["blob"] is bytes
    assert fields["identity"] is Identity and fields["at"] is Timestamp and fields["schedule"] is ScheduleAt
    assert fields["maybe"] == int | None and fields["color"] is SumValue
    assert fields["ints"] == tuple[int, ...]


def test_user_row_classes(schema: ModuleSchema) -> None:
    class Player(NamedTuple):
        id: int
        identity: Identity
        name: str
        score: int
        created_at: Timestamp
        location: Any

    custom = ModuleSchema.from_json(example("http-schema-v9-response.json"), row_classes={"Player": Player})
    row = custom.decode_row("Player", ALICE_B)
    assert isinstance(row, Player) and row.name == "alice" and row.location.x == 12.5
    assert custom.decode_row("Player", ALICE_C) == row
    assert custom.encode_row("Player", row) == ALICE_C
    assert custom.row_class("Player") is Player
    with pytest.raises(SchemaError):
        ModuleSchema.from_json(example("http-schema-v9-response.json"), row_classes={"Playr": Player})


def test_rows_from_bytes_and_lists(schema: ModuleSchema) -> None:
    assert schema.decode_row("Player", ALICE_C.encode()) == schema.decode_row("Player", ALICE_B)
    assert schema.decode_rows("Player", [ALICE_B, ALICE_C]) == [schema.decode_row("Player", ALICE_C)] * 2
    assert schema.decode_rows("Player", []) == []


def test_rows_without_a_schema_stay_plain_json() -> None:
    assert decode_json(ALICE_C)[2:4] == ["alice", 1200]
    assert decode_json(ALICE_C)[1] == ["0xc20071130a560e3f5832e71f59bc7eea12eb08e3c12a8f2464a1bb7ba704976a"]
    assert decode_json(ALICE_B)["location"] == [0, {"x": 12.5, "y": -3.25}]
    assert decode_json(b"[340282366920938463463374607431768211455]") == [2**128 - 1]


def test_reducers_and_procedures(schema: ModuleSchema) -> None:
    assert schema.reducer("SetScore").params.names == ("id", "score")
    assert schema.reducer("CreatePlayer").lifecycle is None
    assert schema.procedure("FindPlayer").params.names == ("name",)
    # an unknown reducer (e.g. "" for a non-reducer transaction) is a SchemaError: keep the raw args
    with pytest.raises(SchemaError):
        schema.decode_reducer_args("", "[]")


def test_lifecycle_and_private_tables() -> None:
    document = json.loads(example("http-schema-v9-response.json"))
    document["reducers"].append(
        {"name": "init", "params": {"elements": []}, "lifecycle": {"some": {"Init": []}}})
    document["tables"][0]["table_access"] = {"Private": []}
    schema = ModuleSchema.from_json(document)
    assert schema.reducer("init").lifecycle == "Init"
    assert schema.reducer_ids["init"] == 2
    assert schema.tables["Player"].public is False
    assert schema.decode_reducer_args("init", "[]") == schema.decode_reducer_args("init", "{}")


def test_encode_args_by_position_and_name() -> None:
    schema = wide_schema()
    params = ProductType((Element("id", U64), Element("name", STRING), Element("at", WIDE.elements[
        WIDE.names.index("at")].type)))
    text = schema.encode_args(params, [2**64 - 1, "é\n", Timestamp(-1)])
    assert text == '[18446744073709551615,"é\\n",[-1]]'
    assert schema.encode_args(params, {"name": "x", "at": Timestamp(0), "id": 1}) == '[1,"x",[0]]'
    bad_args: list[Any] = [[1, "x"], {"id": 1, "name": "x"}, [1.0, "x", Timestamp(0)], [1, "x", 0],
                           [-1, "x", Timestamp(0)]]
    for bad in bad_args:
        with pytest.raises(SchemaError):
            schema.encode_args(params, bad)


def test_schedule_table_schema_shape() -> None:
    document = json.loads(example("http-schema-v9-response.json"))
    document["typespace"]["types"].append({"Product": {"elements": [
        {"name": {"some": "id"}, "algebraic_type": {"U64": []}},
        {"name": {"some": "at"},
         "algebraic_type": type_to_json(WIDE.elements[WIDE.names.index("schedule")].type)},
    ]}})
    document["tables"].append({
        "name": "tick", "product_type_ref": 2, "primary_key": [0], "indexes": [], "constraints": [],
        "sequences": [], "schedule": {"some": {"name": {"some": "tick_sched"}, "reducer_name": "tick",
                                                "scheduled_at_column": 1}},
        "table_type": {"User": []}, "table_access": {"Public": []}})
    schema = ModuleSchema.from_json(document)
    row = schema.decode_row("tick", '{"id":1,"at":[0,{"__time_duration_micros__":60000000}]}')
    assert row.at == ScheduleAt(TimeDuration(60_000_000))
    assert schema.encode_row("tick", row) == "[1,[0,[60000000]]]"


def test_key_decoder_reads_only_the_primary_key(schema: ModuleSchema) -> None:
    key_of = schema.key_decoder("Player")
    assert key_of is not None
    assert key_of(ALICE_B) == key_of(ALICE_C) == schema.decode_row("Player", ALICE_B).id == 1
    assert key_of('[2,"the","other","columns","are not","decoded"]') == 2  # only the key is read
    with pytest.raises(ProtocolError):
        key_of("[7]")  # not a row of this table
    with pytest.raises(ProtocolError):
        key_of('{"name": "no id"}')
