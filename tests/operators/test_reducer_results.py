"""Tests of ``reducer_results``: status, decoded args, caller, filters by name and by own calls."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.operators import ReducerResult, reducer_results
from rx_spacetimedb.protocol import decode_server_message
from tests.operators._canned import (
    EXAMPLES,
    ME,
    MY_CONNECTION,
    OTHER_CONNECTION,
    SCHEMA,
    committed,
    delta,
    emitted,
    failed,
    identity_token,
    light,
    out_of_energy,
    player,
    reducer_call,
    tx_table,
)

on_next = ReactiveTest.on_next



def example(name: str) -> Any:
    return decode_server_message((EXAMPLES / f"server-{name}.json").read_text())


def test_results_of_the_example_frames() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, example("TransactionUpdate-committed")),
        on_next(220, example("TransactionUpdate-failed")),
        on_next(230, example("TransactionUpdate-outofenergy")),
        on_next(240, example("TransactionUpdateLight")),  # no reducer details: nothing
    )
    out = emitted(scheduler.start(lambda: source.pipe(reducer_results(schema=SCHEMA))).messages)
    assert [t for t, _ in out] == [210, 220, 230]
    ok, bad, broke = (r for _, r in out)
    assert isinstance(ok, ReducerResult)
    assert (ok.reducer, ok.status, ok.committed, ok.error, ok.request_id) == ("CreatePlayer", "committed",
                                                                             True, None, 6)
    assert ok.args.name == "carol"
    assert ok.caller_identity == ME and ok.caller_connection_id == MY_CONNECTION
    assert (ok.energy_quanta_used, ok.duration.micros) == (1843200, 1312)
    assert ok.timestamp.micros_since_epoch == 1787409005250000
    assert ok.update is not None and ok.update.tables[0].table_name == "Player"
    assert (bad.status, bad.error, bad.committed, bad.update) == ("failed", 'name "carol" is already taken',
                                                                  False, None)
    assert (broke.status, broke.error, broke.args.name) == ("out_of_energy", None, "dave")


def test_filter_by_reducer_name_and_args_decoded_by_parameter() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, committed(call=reducer_call("CreatePlayer", '["x"]'))),
        on_next(220, committed(tx_table("Player", delta((), (player(1),))),
                               call=reducer_call("SetScore", '{"id": 1, "score": -5}'))),
    )
    out = emitted(scheduler.start(lambda: source.pipe(reducer_results("SetScore", schema=SCHEMA))).messages)
    assert [t for t, _ in out] == [220]
    assert (out[0][1].args.id, out[0][1].args.score) == (1, -5)


def test_a_call_the_server_could_not_start_keeps_raw_args() -> None:
    scheduler = TestScheduler()
    refused = failed("invalid arguments for reducer SetScore: ...", call=reducer_call("SetScore", "[]"))
    unknown = failed("no such reducer", call=reducer_call("Nope", "[]"))
    source = scheduler.create_hot_observable(on_next(210, refused), on_next(220, unknown))
    out = emitted(scheduler.start(lambda: source.pipe(reducer_results(schema=SCHEMA))).messages)
    assert [(r.reducer, r.args, r.raw_args, r.status) for _, r in out] == [
        ("SetScore", None, "[]", "failed"), ("Nope", None, "[]", "failed")]


def test_own_keeps_the_calls_of_the_latest_identity_tokens_connection() -> None:
    scheduler = TestScheduler()
    mine = committed(caller=MY_CONNECTION)
    theirs = committed(caller=OTHER_CONNECTION)
    source = scheduler.create_hot_observable(
        on_next(205, theirs),  # before any IdentityToken: not known to be ours
        on_next(210, identity_token(MY_CONNECTION)),
        on_next(220, mine), on_next(230, theirs),
        on_next(240, identity_token(OTHER_CONNECTION)),  # reconnected with a new connection id
        on_next(250, mine), on_next(260, theirs),
    )
    out = emitted(scheduler.start(lambda: source.pipe(reducer_results(own=True, schema=SCHEMA))).messages)
    assert [(t, r.caller_connection_id) for t, r in out] == [(220, MY_CONNECTION), (260, OTHER_CONNECTION)]


def test_own_with_a_connection_id_source() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, committed(caller=MY_CONNECTION)), on_next(220, committed(caller=OTHER_CONNECTION)),
        on_next(230, light()))
    out = emitted(scheduler.start(
        lambda: source.pipe(reducer_results(own=True, schema=SCHEMA,
                                            connection_id=lambda: OTHER_CONNECTION))).messages)
    assert [t for t, _ in out] == [220]


def test_unknown_reducer_name_fails_early() -> None:
    with pytest.raises(SchemaError, match="unknown reducer 'SetScores'"):
        reducer_results("SetScores", schema=SCHEMA)


def test_out_of_energy_helper_message() -> None:
    result = ReducerResult.from_message(out_of_energy(), SCHEMA)
    assert result.status == "out_of_energy" and not result.committed
    assert (result.args.id, result.args.score) == (1, 5)
