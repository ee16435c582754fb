"""Canned server messages for the cache and operator tests, built with the protocol dataclasses
(and ``emitted``, which reads the values out of a marble test's records).

Rows are encoded by the schema in the wire shapes the server uses: stored-row form B for snapshots,
untyped form C for transaction deltas (spec §3.1), so every test also crosses both shapes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from rx_spacetimedb.protocol import (
    Committed,
    ConnectionId,
    DatabaseUpdate,
    EnergyQuanta,
    Failed,
    Identity,
    IdentityToken,
    InitialSubscription,
    ModuleSchema,
    OutOfEnergy,
    QueryUpdate,
    ReducerCallInfo,
    SubscribeApplied,
    SubscribeMultiApplied,
    SubscribeRows,
    TableUpdate,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    TransactionUpdateLight,
    UnsubscribeApplied,
    UnsubscribeMultiApplied,
)
from rx_spacetimedb.protocol.sats import Form
from rx_spacetimedb.protocol.types import RefType
from tests.protocol._examples import EXAMPLES


def _schema_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / "http-schema-v9-response.json").read_text())
    data = copy.deepcopy(data)
    types = data["typespace"]["types"]

    def col(name: str, ty: dict[str, Any]) -> dict[str, Any]:
        return {"name": {"some": name}, "algebraic_type": ty}

    identity = {"Product": {"elements": [col("__identity__", {"U256": []})]}}
    # Balance: u128 primary key and an Identity column.
    types.append({"Product": {"elements": [col("account", {"U128": []}), col("owner", identity),
                                           col("amount", {"U128": []})]}})
    # LogLine: no primary key, so rows are keyed by their whole value.
    types.append({"Product": {"elements": [col("text", {"String": []}), col("level", {"U8": []})]}})
    for name, ref, pk in (("Balance", len(types) - 2, [0]), ("LogLine", len(types) - 1, [])):
        data["tables"].append({"name": name, "product_type_ref": ref, "primary_key": pk,
                               "table_access": {"Public": []}})
        data["types"].append({"name": {"scope": [], "name": name}, "ty": ref, "custom_ordering": True})
    return data


SCHEMA = ModuleSchema.from_json(json.dumps(_schema_json()))
Player = SCHEMA.row_class("Player")
Location = SCHEMA.codec.class_for(RefType(1))
Balance = SCHEMA.row_class("Balance")
LogLine = SCHEMA.row_class("LogLine")

ME = Identity.from_hex("c200ea03bbfbdfa380bd16d6b641122ad6bda68ddb1331198128cc9586c77b4a")
OTHER = Identity.from_hex("c20071130a560e3f5832e71f59bc7eea12eb08e3c12a8f2464a1bb7ba704976a")
MY_CONNECTION = ConnectionId(41279989226247141793968051798400034689)
OTHER_CONNECTION = ConnectionId(7)
T0 = Timestamp(1787409005250000)


def player(id: int, name: str = "p", score: int = 0, location: Any = None) -> Any:
    """A Player row (``identity`` and ``created_at`` fixed)."""
    return Player(id, OTHER, name, score, T0, location)


def balance(account: int, amount: int, owner: Identity = ME) -> Any:
    return Balance(account, owner, amount)


def log_line(text: str, level: int = 1) -> Any:
    return LogLine(text, level)


def table_of(row: Any) -> str:
    return type(row).__name__


def encode(rows: tuple[Any, ...], form: Form) -> tuple[str, ...]:
    return tuple(SCHEMA.encode_row(table_of(r), r, form) for r in rows)


def snapshot_update(*rows: Any, table: str | None = None) -> TableUpdate:
    """One TableUpdate with one QueryUpdate of inserts in stored-row form B (a snapshot fragment)."""
    name = table or table_of(rows[0])
    return TableUpdate(0, name, len(rows), (QueryUpdate((), encode(rows, "B")),))


def removal_update(*rows: Any, table: str | None = None) -> TableUpdate:
    """One TableUpdate with one QueryUpdate of deletes in form B (an unsubscribe fragment)."""
    name = table or table_of(rows[0])
    return TableUpdate(0, name, len(rows), (QueryUpdate(encode(rows, "B"), ()),))


def delta(deletes: tuple[Any, ...] = (), inserts: tuple[Any, ...] = ()) -> QueryUpdate:
    """One QueryUpdate of a transaction, rows in untyped form C."""
    return QueryUpdate(encode(deletes, "C"), encode(inserts, "C"))


def tx_table(table: str, *queries: QueryUpdate) -> TableUpdate:
    return TableUpdate(0, table, sum(len(q.deletes) + len(q.inserts) for q in queries), queries)


def reducer_call(name: str = "SetScore", args: str = "[1,5]", request_id: int = 0) -> ReducerCallInfo:
    return ReducerCallInfo(name, 1, args, request_id)


def committed(*tables: TableUpdate, call: ReducerCallInfo | None = None,
              caller: ConnectionId = OTHER_CONNECTION, identity: Identity = OTHER) -> TransactionUpdate:
    return TransactionUpdate(Committed(DatabaseUpdate(tables)), T0, identity, caller,
                             call or reducer_call(), EnergyQuanta(1843200), TimeDuration(1312))


def failed(message: str, call: ReducerCallInfo | None = None,
           caller: ConnectionId = MY_CONNECTION) -> TransactionUpdate:
    return TransactionUpdate(Failed(message), T0, ME, caller, call or reducer_call(),
                             EnergyQuanta(612800), TimeDuration(488))


def out_of_energy(call: ReducerCallInfo | None = None) -> TransactionUpdate:
    return TransactionUpdate(OutOfEnergy(), T0, ME, MY_CONNECTION, call or reducer_call(),
                             EnergyQuanta(10**9), TimeDuration(250011))


def light(*tables: TableUpdate) -> TransactionUpdateLight:
    return TransactionUpdateLight(41, DatabaseUpdate(tables))


def sub_applied(query_id: int, *rows: Any, table: str = "Player") -> SubscribeApplied:
    update = snapshot_update(*rows, table=table)
    return SubscribeApplied(query_id, 318, query_id, SubscribeRows(0, table, update))


def unsub_applied(query_id: int, *rows: Any, table: str = "Player") -> UnsubscribeApplied:
    update = removal_update(*rows, table=table)
    return UnsubscribeApplied(query_id, 131, query_id, SubscribeRows(0, table, update))


def multi_applied(query_id: int, *tables: TableUpdate) -> SubscribeMultiApplied:
    return SubscribeMultiApplied(query_id, 507, query_id, DatabaseUpdate(tables))


def unsub_multi_applied(query_id: int, *tables: TableUpdate) -> UnsubscribeMultiApplied:
    return UnsubscribeMultiApplied(query_id, 244, query_id, DatabaseUpdate(tables))


def initial(*tables: TableUpdate, request_id: int = 1) -> InitialSubscription:
    return InitialSubscription(DatabaseUpdate(tables), request_id, TimeDuration(412))


def identity_token(connection_id: ConnectionId = MY_CONNECTION) -> IdentityToken:
    return IdentityToken(ME, "token", connection_id)


def emitted(records: list[Any]) -> list[tuple[int, Any]]:
    """(virtual time, value) of every on_next a TestScheduler observer recorded."""
    return [(r.time, r.value.value) for r in records if r.value.kind == "N"]
