"""The spec's example frames: every one decodes, re-encodes byte for byte, and its rows decode."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rx_spacetimedb.protocol import (
    CallProcedure,
    CallReducer,
    ClientMessage,
    Committed,
    ConnectionId,
    DatabaseUpdate,
    EnergyQuanta,
    Failed,
    Identity,
    IdentityToken,
    InitialSubscription,
    ModuleSchema,
    OneOffQuery,
    OneOffQueryResponse,
    OneOffTable,
    OutOfEnergy,
    ProcedureResult,
    QueryUpdate,
    ReducerCallInfo,
    Returned,
    Subscribe,
    SubscribeApplied,
    SubscribeMulti,
    SubscribeMultiApplied,
    SubscribeSingle,
    SubscriptionError,
    TableUpdate,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    TransactionUpdateLight,
    Unsubscribe,
    UnsubscribeApplied,
    UnsubscribeMulti,
    UnsubscribeMultiApplied,
    decode_client_message,
    decode_server_message,
    encode_client_message,
    encode_server_message,
)
from rx_spacetimedb.protocol.sats import TypeCodec
from rx_spacetimedb.protocol.types import RefType, parse_product
from tests.protocol._examples import CLIENT_EXAMPLES, EXAMPLES, SERVER_EXAMPLES, SPEC_EXAMPLES, example

ALICE_ID = Identity(0xC20071130A560E3F5832E71F59BC7EEA12EB08E3C12A8F2464A1BB7BA704976A)
BOB_ID = Identity(0xC200C6A52583DA9E4ABAFAFF736F162FF8D362069FFB478CDF33D09C06C2E106)
ME_ID = Identity(0xC200EA03BBFBDFA380BD16D6B641122AD6BDA68DDB1331198128CC9586C77B4A)
MY_CONNECTION = ConnectionId(41279989226247141793968051798400034689)


def test_example_copies_match_the_spec() -> None:
    assert len(SERVER_EXAMPLES) == 13 and len(CLIENT_EXAMPLES) == 8
    if not SPEC_EXAMPLES.is_dir():
        pytest.skip("shared spec not checked out next to the repository")
    for spec_file in SPEC_EXAMPLES.glob("*.json"):
        assert (EXAMPLES / spec_file.name).read_bytes() == spec_file.read_bytes(), spec_file.name


# -- server frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVER_EXAMPLES)
def test_server_example_round_trips_byte_identically(name: str) -> None:
    raw = example(name)
    message = decode_server_message(raw)
    assert type(message).__name__ == next(iter(json.loads(raw)))
    assert encode_server_message(message) == raw
    assert decode_server_message(raw.encode()) == message  # bytes frames decode the same


def _alice_row(schema: ModuleSchema) -> object:
    player, location = schema.row_class("Player"), schema.codec.class_for(RefType(1))  # Location
    return player(1, ALICE_ID, "alice", 1200, Timestamp(1787217300123456), location(12.5, -3.25))


def _bob_row(schema: ModuleSchema, score: int = 950) -> object:
    return schema.row_class("Player")(2, BOB_ID, "bob", score, Timestamp(1787310164500000), None)


def test_identity_token_fields() -> None:
    message = decode_server_message(example("server-IdentityToken.json"))
    assert isinstance(message, IdentityToken)
    assert message.identity == ME_ID
    assert message.connection_id.value == 41279989226247141793968051798400034689
    assert type(message.connection_id.value) is int
    assert message.token.startswith("eyJ0eXAi") and message.token.endswith("NVS0XImxA")


def test_identity_token_repr_hides_the_token() -> None:
    message = decode_server_message(example("server-IdentityToken.json"))
    assert isinstance(message, IdentityToken)
    assert message.token not in repr(message)
    assert message.token[:20] not in repr(message) and "eyJ" not in repr(message)
    assert "c200ea03" in repr(message)  # the rest stays readable


def test_transaction_update_committed_fields(schema: ModuleSchema) -> None:
    message = decode_server_message(example("server-TransactionUpdate-committed.json"))
    assert message == TransactionUpdate(
        status=Committed(DatabaseUpdate((TableUpdate(4097, "Player", 1, (QueryUpdate(
            deletes=(),
            inserts=('[3,["0xc200ea03bbfbdfa380bd16d6b641122ad6bda68ddb1331198128cc9586c77b4a"],'
                     '"carol",0,[1787409005250000],[1,[]]]',)),)),))),
        timestamp=Timestamp(1787409005250000),
        caller_identity=ME_ID,
        caller_connection_id=MY_CONNECTION,
        reducer_call=ReducerCallInfo("CreatePlayer", 0, '["carol"]', 6),
        energy_quanta_used=EnergyQuanta(1843200),
        total_host_execution_duration=TimeDuration(1312),
    )
    assert message.caller_connection_id.value == 41279989226247141793968051798400034689
    assert isinstance(message.status, Committed)
    (row_text,) = message.status.update.tables[0].updates[0].inserts
    row = schema.decode_row("Player", row_text)
    assert row == schema.row_class("Player")(3, ME_ID, "carol", 0, Timestamp(1787409005250000), None)
    args = schema.decode_reducer_args("CreatePlayer", message.reducer_call.args)
    assert args.name == "carol"


def test_transaction_update_failed_and_out_of_energy() -> None:
    failed = decode_server_message(example("server-TransactionUpdate-failed.json"))
    assert isinstance(failed, TransactionUpdate)
    assert failed.status == Failed('name "carol" is already taken')
    assert failed.reducer_call.request_id == 7
    assert failed.caller_connection_id == MY_CONNECTION
    assert failed.energy_quanta_used == EnergyQuanta(612800)
    oom = decode_server_message(example("server-TransactionUpdate-outofenergy.json"))
    assert isinstance(oom, TransactionUpdate)
    assert oom.status == OutOfEnergy()
    assert oom.energy_quanta_used.quanta == 1_000_000_000
    assert oom.timestamp == Timestamp(1787409060000513)
    assert oom.total_host_execution_duration == TimeDuration(250011)


def test_initial_subscription_rows_are_alice_and_bob(schema: ModuleSchema) -> None:
    message = decode_server_message(example("server-InitialSubscription.json"))
    assert isinstance(message, InitialSubscription)
    assert message.request_id == 1
    assert message.total_host_execution_duration == TimeDuration(412)
    (table,) = message.database_update.tables
    assert (table.table_id, table.table_name, table.num_rows) == (4097, "Player", 2)
    alice, bob = schema.decode_rows("Player", table.updates[0].inserts)
    assert alice == _alice_row(schema)
    assert bob == _bob_row(schema)
    # spec §6.1: created_at is 2026-08-20T09:15:00.123456Z; location Some(Location{12.5, -3.25}) / None
    assert alice.created_at.to_datetime() == datetime(2026, 8, 20, 9, 15, 0, 123456, tzinfo=UTC)
    assert (alice.location.x, alice.location.y) == (12.5, -3.25)
    assert bob.location is None
    assert repr(alice.identity) == f"Identity(0x{ALICE_ID.value:064x})"


def test_stored_and_untyped_row_shapes_decode_to_equal_values(schema: ModuleSchema) -> None:
    message = decode_server_message(example("server-InitialSubscription.json"))
    assert isinstance(message, InitialSubscription)
    stored = message.database_update.tables[0].updates[0].inserts
    # the same rows in form C, as in a transaction delta (spec §3.1)
    untyped = [
        '[1,["0xc20071130a560e3f5832e71f59bc7eea12eb08e3c12a8f2464a1bb7ba704976a"],"alice",1200,'
        '[1787217300123456],[0,[12.5,-3.25]]]',
        '[2,["0xc200c6a52583da9e4abafaff736f162ff8d362069ffb478cdf33d09c06c2e106"],"bob",950,'
        '[1787310164500000],[1,[]]]',
    ]
    assert schema.decode_rows("Player", stored) == schema.decode_rows("Player", untyped)
    # and encoding gives those exact strings back, in either form
    rows = schema.decode_rows("Player", stored)
    assert [schema.encode_row("Player", r, "C") for r in rows] == untyped
    assert [schema.encode_row("Player", r, "B") for r in rows] == list(stored)


def test_transaction_update_light_is_an_update_of_bob(schema: ModuleSchema) -> None:
    message = decode_server_message(example("server-TransactionUpdateLight.json"))
    assert isinstance(message, TransactionUpdateLight)
    assert message.request_id == 41
    (update,) = message.update.tables[0].updates
    (old,) = schema.decode_rows("Player", update.deletes)
    (new,) = schema.decode_rows("Player", update.inserts)
    assert old == _bob_row(schema)
    assert new == _bob_row(schema, score=1010)


@pytest.mark.parametrize("name", ["server-SubscribeApplied.json", "server-UnsubscribeApplied.json"])
def test_subscribe_and_unsubscribe_applied(name: str, schema: ModuleSchema) -> None:
    message = decode_server_message(example(name))
    assert isinstance(message, SubscribeApplied | UnsubscribeApplied)
    assert message.query_id == 1
    assert message.rows.table_name == "Player" and message.rows.table_rows.num_rows == 1
    (update,) = message.rows.table_rows.updates
    rows = update.inserts if isinstance(message, SubscribeApplied) else update.deletes
    assert (update.deletes if isinstance(message, SubscribeApplied) else update.inserts) == ()
    assert schema.decode_rows("Player", rows) == [_alice_row(schema)]


@pytest.mark.parametrize(("name", "request_id"), [("server-SubscribeMultiApplied.json", 4),
                                                   ("server-UnsubscribeMultiApplied.json", 5)])
def test_multi_applied_rows(name: str, request_id: int, schema: ModuleSchema) -> None:
    message = decode_server_message(example(name))
    assert isinstance(message, SubscribeMultiApplied | UnsubscribeMultiApplied)
    assert (message.request_id, message.query_id) == (request_id, 2)
    rows = [
        row
        for table in message.update.tables
        for update in table.updates
        for row in schema.decode_rows("Player", update.inserts + update.deletes)
    ]
    assert rows == [_alice_row(schema), _bob_row(schema)]


def test_subscription_error_options() -> None:
    message = decode_server_message(example("server-SubscriptionError.json"))
    assert message == SubscriptionError(
        total_host_execution_duration_micros=143, request_id=9, query_id=3, table_id=None,
        error="no such table: `Playr`. If the table exists, it may be marked private., "
              "executing: `SELECT * FROM Playr`",
    )


def test_one_off_query_response(schema: ModuleSchema) -> None:
    message = decode_server_message(example("server-OneOffQueryResponse.json"))
    assert isinstance(message, OneOffQueryResponse)
    assert message.message_id == bytes.fromhex("a3f1c2d4e5b60718293a4b5c6d7e8f90")
    assert message.error is None
    assert message.total_host_execution_duration == TimeDuration(207)
    (table,) = message.tables
    assert isinstance(table, OneOffTable) and table.table_name == "Player"
    assert schema.decode_rows("Player", table.rows) == [_alice_row(schema)]


def test_procedure_result_return_value(schema: ModuleSchema) -> None:
    message = decode_server_message(example("server-ProcedureResult.json"))
    assert isinstance(message, ProcedureResult)
    assert message.request_id == 10
    assert message.timestamp == Timestamp(1787409130000100)
    assert isinstance(message.status, Returned)
    # Option<Player> → Some(alice): the option unwraps to the row itself
    assert schema.decode_procedure_return("FindPlayer", message.status.value) == _alice_row(schema)
    assert schema.decode_procedure_return("FindPlayer", "[1,[]]") is None


def test_reducer_args_positional_and_named(schema: ModuleSchema) -> None:
    positional = schema.decode_reducer_args("SetScore", "[2,1010]")
    named = schema.decode_reducer_args("SetScore", '{"score":1010,"id":2}')
    assert positional == named
    assert (positional.id, positional.score) == (2, 1010)
    assert type(positional).__name__ == "SetScoreArgs"
    assert schema.encode_reducer_args("SetScore", [2, 1010]) == "[2,1010]"
    assert schema.encode_reducer_args("SetScore", {"score": 1010, "id": 2}) == "[2,1010]"
    assert schema.encode_reducer_args("CreatePlayer", ["carol"]) == '["carol"]'


def test_procedure_args_named_form(schema: ModuleSchema) -> None:
    request = decode_client_message(example("client-CallProcedure.json"))
    assert isinstance(request, CallProcedure)
    params = schema.procedure("FindPlayer").params
    assert schema.codec.decoder(params, "FindPlayerArgs")(json.loads(request.args)).name == "alice"


def test_http_schema_example(schema: ModuleSchema) -> None:
    assert list(schema.tables) == ["Player"]
    assert schema.primary_key("Player") == (0,)
    assert schema.row_product("Player").names == ("id", "identity", "name", "score", "created_at", "location")
    assert schema.row_class("Player").__name__ == "Player"
    assert list(schema.reducers) == ["CreatePlayer", "SetScore"]
    assert schema.reducer_ids == {"CreatePlayer": 0, "SetScore": 1}
    assert list(schema.procedures) == ["FindPlayer"]
    assert schema.to_json() == json.loads(example("http-schema-v9-response.json"))


def test_http_sql_example_schema_and_rows() -> None:
    (result,) = json.loads(example("http-sql-response.json"))
    product = parse_product(result["schema"])
    assert product.names == ("id", "identity", "name", "score", "created_at", "location")
    decode = TypeCodec().decoder(product, "SqlRow")
    alice, bob = (decode(row) for row in result["rows"])
    assert (alice.id, alice.identity, alice.name, alice.score) == (1, ALICE_ID, "alice", 1200)
    assert alice.created_at == Timestamp(1787217300123456)
    assert (alice.location.x, alice.location.y) == (12.5, -3.25)
    assert (bob.id, bob.identity, bob.name, bob.score, bob.location) == (2, BOB_ID, "bob", 950, None)
    assert bob.created_at == Timestamp(1787310164500000)


# -- client frames ---------------------------------------------------------------------------

CLIENT_MESSAGES: dict[str, ClientMessage] = {
    "client-CallReducer.json": CallReducer("CreatePlayer", '["carol"]', 6, 0),
    "client-CallProcedure.json": CallProcedure("FindPlayer", '{"name":"alice"}', 10, 0),
    "client-Subscribe.json": Subscribe(("SELECT * FROM Player",), 1),
    "client-SubscribeSingle.json": SubscribeSingle("SELECT * FROM Player WHERE score >= 1000", 2, 1),
    "client-SubscribeMulti.json": SubscribeMulti(
        ("SELECT * FROM Player WHERE score >= 1000", "SELECT * FROM Player WHERE id = 2"), 4, 2),
    "client-Unsubscribe.json": Unsubscribe(3, 1),
    "client-UnsubscribeMulti.json": UnsubscribeMulti(5, 2),
    "client-OneOffQuery.json": OneOffQuery(
        bytes.fromhex("a3f1c2d4e5b60718293a4b5c6d7e8f90"), "SELECT * FROM Player WHERE id = 1"),
}


def test_every_client_example_is_covered() -> None:
    assert sorted(CLIENT_MESSAGES) == CLIENT_EXAMPLES


@pytest.mark.parametrize("name", CLIENT_EXAMPLES)
def test_client_example_encodes_byte_for_byte(name: str) -> None:
    message = CLIENT_MESSAGES[name]
    assert encode_client_message(message) == example(name)
    assert decode_client_message(example(name)) == message


def test_client_encoding_of_reducer_args_from_schema(schema: ModuleSchema) -> None:
    args = schema.encode_reducer_args("CreatePlayer", {"name": "carol"})
    frame = encode_client_message(CallReducer("CreatePlayer", args, 6, 0))
    assert frame == example("client-CallReducer.json")
