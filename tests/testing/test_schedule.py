"""Scheduled reducers: schedule tables in the schema, one-shot and repeating runs, cancellation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rx_spacetimedb.protocol.types import SCHEDULE_AT, STRING, U64
from rx_spacetimedb.protocol.values import ScheduleAt, TimeDuration, Timestamp
from rx_spacetimedb.testing import Column, Module, ReducerContext, SpacetimeDBEmulator
from tests.testing.helpers import Client, call, rows, run


def ticking_module() -> Module:
    """A Tick schedule table running OnTick, which logs into Log; reducers to schedule and cancel."""
    module = Module()
    tick = module.table(
        "Tick", [Column("scheduled_id", U64, primary_key=True, auto_inc=True),
                 Column("scheduled_at", SCHEDULE_AT), Column("label", STRING)],
        scheduled=("OnTick", "scheduled_at"),
    )  # fmt: skip
    module.table("Log", [Column("label", STRING), Column("at", U64)])

    @module.reducer("OnTick", [("tick", tick.provisional_ref)])
    def on_tick(ctx: ReducerContext, row: Any) -> None:
        ctx.db.Log.insert({"label": row.label, "at": ctx.db.Log.count()})

    @module.reducer("Later", [("label", STRING), ("micros", U64)])
    def later(ctx: ReducerContext, label: str, micros: int) -> None:
        at = Timestamp(ctx.timestamp.micros_since_epoch + micros)
        ctx.db.Tick.insert({"scheduled_at": ScheduleAt(at), "label": label})

    @module.reducer("Every", [("label", STRING), ("micros", U64)])
    def every(ctx: ReducerContext, label: str, micros: int) -> None:
        ctx.db.Tick.insert({"scheduled_at": ScheduleAt(TimeDuration(micros)), "label": label})

    @module.reducer("Stop", [("label", STRING)])
    def stop(ctx: ReducerContext, label: str) -> None:
        ctx.db.Tick.delete_by("label", label)

    return module


def test_schedule_in_schema_and_validation() -> None:
    schema = ticking_module().build().to_json()
    assert schema["tables"][0]["schedule"] == {
        "some": {"name": {"some": "Tick_sched"}, "reducer_name": "OnTick", "scheduled_at_column": 1}
    }
    bad = Module()
    with pytest.raises(ValueError, match="ScheduleAt column"):
        bad.table("T", [Column("id", U64, primary_key=True)], scheduled=("R", "id"))
    bad.table("T", [Column("id", U64, primary_key=True), Column("at", SCHEDULE_AT)], scheduled=("R", "at"))

    @bad.reducer("R", [("x", STRING)])
    def r(ctx: ReducerContext, x: str) -> None:
        pass

    with pytest.raises(ValueError, match="row type"):
        bad.build()


def test_one_shot_and_repeating_schedules() -> None:
    async def body() -> None:
        async with SpacetimeDBEmulator(ticking_module()) as server:
            client = await Client.connect(server)
            await client.request({"Subscribe": {"query_strings": ["SELECT * FROM Log"], "request_id": 1}})
            await client.request(call("Later", '["once", 20000]', 1))  # our own call: no Log change yet
            fired = (await client.recv())["TransactionUpdate"]
            assert fired["reducer_call"]["reducer_name"] == "OnTick"
            assert fired["caller_connection_id"] == {"__connection_id__": 0}
            assert fired["caller_identity"]["__identity__"] == f"0x{server.identity.hex}"
            assert fired["reducer_call"]["request_id"] == 0
            args = json.loads(fired["reducer_call"]["args"])  # server-generated: form C
            assert args[0][0] == 1 and args[0][2] == "once" and args[0][1][0] == 1  # ScheduleAt Time = tag 1
            assert rows(fired["status"]["Committed"]["tables"][0])[0][0] == "once"
            assert server.table_rows("Tick") == []  # a one-shot row is deleted by its run
            await client.request(call("Every", '["loop", 10000]', 2))
            for _ in range(3):
                update = (await client.recv())["TransactionUpdate"]
                assert rows(update["status"]["Committed"]["tables"][0])[0][0] == "loop"
            await client.send(call("Stop", '["loop"]', 3))
            while (
                "Committed" in (reply := (await client.recv())["TransactionUpdate"])
                and reply["reducer_call"]["reducer_name"] != "Stop"
            ):
                pass
            count = len(server.table_rows("Log"))
            await client.expect_silence()
            assert len(server.table_rows("Log")) == count and server.table_rows("Tick") == []

    run(body)


def test_rows_scheduled_before_start_run_once_serving() -> None:
    async def body() -> None:
        server = SpacetimeDBEmulator(ticking_module())
        server.call_reducer("Later", ["early", 0])
        async with server:
            client = await Client.connect(server)
            await client.request({"Subscribe": {"query_strings": ["SELECT * FROM Log"], "request_id": 1}})
            if not server.table_rows("Log"):
                update = (await client.recv())["TransactionUpdate"]
                assert update["reducer_call"]["reducer_name"] == "OnTick"
            assert [r.label for r in server.table_rows("Log")] == ["early"]

    run(body)
