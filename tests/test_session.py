"""The sans-I/O session on canned messages: no socket, no thread, no Rx."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from rx_spacetimedb.cache import ClientCache
from rx_spacetimedb.errors import (
    OutOfEnergy,
    ProcedureFailed,
    ProtocolError,
    QueryFailed,
    ReducerFailed,
    RequestAborted,
    SchemaError,
    SubscriptionFailed,
)
from rx_spacetimedb.protocol import EnergyQuanta, ModuleSchema, TimeDuration
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.values import ConnectionId
from rx_spacetimedb.session import Events, OneOffResult, Session
from tests.operators._canned import (
    ME,
    MY_CONNECTION,
    SCHEMA,
    T0,
    committed,
    failed,
    identity_token,
    initial,
    out_of_energy,
    player,
    reducer_call,
    sub_applied,
    unsub_applied,
)

SECOND_CONNECTION = ConnectionId(99)


@dataclass
class Req:
    """A request handle as the session sees one."""

    kind: str
    id: Any
    name: str = ""
    sent: bool = False


def new_session(*, schema: Any = SCHEMA, token: str | None = None, reconnect: bool = True,
                max_queued: int = 10) -> Session[Req]:
    cache = ClientCache(lambda: SCHEMA, auto_resync=False)
    return Session(cache, schema=schema, token=token, token_source="user" if token else None,
                   reconnect=reconnect, max_queued=max_queued)


def connected(session: Session[Req], connection_id: ConnectionId = MY_CONNECTION) -> Events[Req]:
    session.socket_opened()
    return session.receive(identity_token(connection_id))


def call(session: Session[Req], reducer: str = "SetScore", args: str = "[1,5]") -> tuple[Req, bool]:
    request = Req("reducer", session.new_request_id(), reducer)
    return request, session.submit(m.CallReducer(reducer, args, request.id, m.FULL_UPDATE), request)


def subscribe_single(session: Session[Req], query: str = "SELECT * FROM Player") -> tuple[Req, Any]:
    request = Req("subscribe_single", session.new_query_id(), query)
    return request, session.subscribe((query,), False, request)


def own_tx(status: Any, request_id: int, reducer: str = "SetScore") -> m.TransactionUpdate:
    return m.TransactionUpdate(status, T0, ME, MY_CONNECTION, reducer_call(reducer, request_id=request_id),
                               EnergyQuanta(1), TimeDuration(1))


def test_nothing_is_sent_before_the_identity_token_then_the_queue_goes_out_in_order() -> None:
    session = new_session()
    first, now = call(session)
    assert not now and not first.sent
    sub, frame = subscribe_single(session)
    assert frame is None  # the IdentityToken sends it
    second, _ = call(session, "CreatePlayer", '["a"]')
    session.socket_opened()
    assert not call(session)[1]  # open but not identified yet: still queued
    events = session.receive(identity_token())
    assert events.connected is not None and events.trusted
    kinds = [type(f).__name__ for f in events.send]
    assert kinds == ["SubscribeSingle", "CallReducer", "CallReducer", "CallReducer"]
    assert [f.reducer for f in events.send[1:]] == ["SetScore", "CreatePlayer", "SetScore"]
    assert first.sent and second.sent and sub.sent
    assert call(session)[1]  # connected: sent at once


def test_answers_settle_their_requests_with_decoded_values() -> None:
    session = new_session()
    connected(session)
    reducer, _ = call(session)
    events = session.receive(own_tx(m.Committed(m.DatabaseUpdate()), reducer.id))
    assert events.settle == [(reducer, events.settle[0][1])]
    assert isinstance(events.settle[0][1], m.TransactionUpdate)

    procedure = Req("procedure", session.new_request_id(), "FindPlayer")
    assert session.submit(m.CallProcedure("FindPlayer", "[1]", procedure.id), procedure)
    events = session.receive(m.ProcedureResult(m.InternalError("boom"), T0, TimeDuration(1), procedure.id))
    ((failed_request, error),) = events.fail
    assert failed_request is procedure and isinstance(error, ProcedureFailed)

    query = Req("one_off_query", b"\x01" * 16, "SELECT * FROM Player")
    assert session.submit(m.OneOffQuery(query.id, query.name), query)
    row = SCHEMA.encode_row("Player", player(1, "ann"), "B")
    events = session.receive(m.OneOffQueryResponse(query.id, None, (m.OneOffTable("Player", (row,)),),
                                                   TimeDuration(1)))
    ((settled, result),) = events.settle
    assert settled is query and isinstance(result, OneOffResult)
    assert [p.name for p in result.rows] == ["ann"]

    bad = Req("one_off_query", b"\x02" * 16, "SELECT nope")
    session.submit(m.OneOffQuery(bad.id, bad.name), bad)
    events = session.receive(m.OneOffQueryResponse(bad.id, "no such table", (), TimeDuration(1)))
    assert isinstance(events.fail[0][1], QueryFailed)


def test_reducer_failures_and_request_id_zero_match_the_oldest_call_of_that_reducer() -> None:
    session = new_session()
    connected(session)
    older, _ = call(session, "SetScore")
    other, _ = call(session, "CreatePlayer", '["a"]')
    newer, _ = call(session, "SetScore")
    events = session.receive(failed("no such reducer", reducer_call("SetScore", request_id=0)))
    ((request, error),) = events.fail
    assert request is older and isinstance(error, ReducerFailed)
    events = session.receive(out_of_energy(reducer_call("CreatePlayer", request_id=other.id)))
    assert events.fail[0][0] is other and isinstance(events.fail[0][1], OutOfEnergy)
    # Another connection's transaction settles nothing.
    assert not session.receive(committed(call=reducer_call("SetScore", request_id=newer.id))).settle


def test_stray_answers_and_messages_before_the_identity_are_reported_and_not_folded() -> None:
    session = new_session()
    session.socket_opened()
    early = session.receive(sub_applied(1, player(1)))
    assert not early.trusted and isinstance(early.reports[0], ProtocolError)
    assert "before IdentityToken" in str(early.reports[0])
    connected(session)
    for stray in (sub_applied(7, player(1)), initial(request_id=9),
                  m.ProcedureResult(m.Returned("1"), T0, TimeDuration(1), 5),
                  m.OneOffQueryResponse(b"\x09" * 16, None, (), TimeDuration(1))):
        events = session.receive(stray)
        assert not events.trusted and not events.diffs, stray
        assert "never sent" in str(events.reports[0])
    assert session.cache.count("Player") == 0


def test_a_late_answer_to_an_expired_request_is_no_stranger() -> None:
    session = new_session()
    connected(session)
    procedure = Req("procedure", session.new_request_id(), "FindPlayer")
    session.submit(m.CallProcedure("FindPlayer", "[1]", procedure.id), procedure)
    session.expire(procedure)
    events = session.receive(m.ProcedureResult(m.Returned("null"), T0, TimeDuration(1), procedure.id))
    assert events.trusted and not events.reports and not events.settle


def test_the_queue_is_bounded_and_reconnect_false_aborts_once_the_socket_is_lost() -> None:
    session = new_session(max_queued=2)
    call(session)
    call(session)
    with pytest.raises(RequestAborted, match="2 requests are already queued"):
        call(session)
    once = new_session(reconnect=False)
    connected(once)
    once.socket_closed()
    with pytest.raises(RequestAborted, match="reconnect=False"):
        call(once)


def test_a_lost_socket_aborts_what_was_sent_on_it_and_keeps_the_queue() -> None:
    session = new_session()
    queued, _ = call(session)
    connected(session)
    sent, _ = call(session)
    sub, _ = subscribe_single(session)
    unsub = Req("unsubscribe", sub.id)
    assert session.unsubscribe(sub.id, unsub) is not None
    aborted = session.socket_closed()
    assert set(map(id, aborted)) == {id(queued), id(sent), id(unsub)}  # queued was sent at connect
    later, _ = call(session)
    events = connected(session, SECOND_CONNECTION)
    assert [type(f).__name__ for f in events.send] == ["CallReducer"]  # the unsubscribed one is gone
    assert later.sent


def test_reconnect_resubscribes_everything_and_the_cache_resyncs_to_the_net_change() -> None:
    session = new_session()
    connected(session)
    single, frame = subscribe_single(session)
    assert isinstance(frame, m.SubscribeSingle) and frame.query_id == single.id
    session.receive(sub_applied(single.id, player(1, "ann"), player(2, "bob")))
    legacy = Req("subscribe", session.new_request_id())
    legacy_frame, replaced = session.subscribe_legacy(("SELECT * FROM LogLine",), legacy)
    assert legacy_frame is not None and replaced is None
    old_legacy_id = legacy.id
    assert not session.socket_closed()  # subscriptions outlive their socket

    events = connected(session, SECOND_CONNECTION)
    sent = {type(f).__name__: f for f in events.send}
    assert set(sent) == {"Subscribe", "SubscribeSingle"}
    assert sent["SubscribeSingle"].query_id == single.id
    assert legacy.id == sent["Subscribe"].request_id != old_legacy_id  # re-keyed to the new send
    assert session.cache.resyncing
    events = session.receive(sub_applied(single.id, player(1, "ann")))
    assert not events.diffs[0]  # still waiting for the legacy set: the old rows stay shown
    assert session.cache.count("Player") == 2
    events = session.receive(initial(request_id=legacy.id))
    (diff,) = [d for d in events.diffs if d.cause == "resync"]
    assert [p.name for p in diff.table("Player").deletes] == ["bob"]  # type: ignore[union-attr]
    assert events.settle[0][0] is legacy


def test_subscribe_all_before_the_schema_reads_the_tables_at_the_identity() -> None:
    session = new_session(schema=None)
    request = Req("subscribe_multi", session.new_query_id())
    assert session.subscribe((), True, request) is None
    session.schema = SCHEMA
    events = connected(session)
    (frame,) = events.send
    assert isinstance(frame, m.SubscribeMulti) and len(frame.query_strings) == 3


def test_subscribe_all_fails_at_the_identity_when_no_table_is_public() -> None:
    session = new_session(schema=None)
    request = Req("subscribe_multi", session.new_query_id())
    session.subscribe((), True, request)
    private = ModuleSchema.from_json(json.dumps(SCHEMA.to_json()).replace('"Public"', '"Private"'))
    session.schema = private
    events = connected(session)
    assert not events.send and isinstance(events.fail[0][1], SchemaError)


def test_a_call_queued_before_the_schema_fails_at_the_flush_if_the_schema_lacks_it() -> None:
    session = new_session(schema=None)
    unknown, _ = call(session, "Nope", "[]")
    known, _ = call(session)
    session.schema = SCHEMA
    events = connected(session)
    assert [f.reducer for f in events.send] == ["SetScore"] and known.sent
    ((request, error),) = events.fail
    assert request is unknown and "no such reducer" in str(error)


def test_subscription_errors_fail_their_requests_and_without_request_id_all_of_them() -> None:
    session = new_session()
    connected(session)
    one, _ = subscribe_single(session)
    two, _ = subscribe_single(session, "SELECT * FROM Balance")
    events = session.receive(m.SubscriptionError(1, 5, one.id, None, "bad query"))
    assert events.fail[0][0] is one and isinstance(events.fail[0][1], SubscriptionFailed)
    events = session.receive(m.SubscriptionError(1, None, None, None, "evaluation failed"))
    assert [r for r, _ in events.fail] == [two]
    events = connected(session, SECOND_CONNECTION)
    assert not events.send  # the server dropped them: nothing to re-send


def test_unsubscribe_answer_settles_and_forgets_the_query_id() -> None:
    session = new_session()
    connected(session)
    sub, _ = subscribe_single(session)
    session.receive(sub_applied(sub.id, player(1)))
    request = Req("unsubscribe", sub.id)
    frame = session.unsubscribe(sub.id, request)
    assert isinstance(frame, m.Unsubscribe)
    events = session.receive(unsub_applied(sub.id, player(1)))
    assert events.settle[0][0] is request and session.cache.count("Player") == 0
    with pytest.raises(ValueError, match="no live subscription"):
        session.unsubscribe(sub.id, Req("unsubscribe", sub.id))


def test_the_end_fails_everything_pending_and_every_later_request_at_once() -> None:
    session = new_session()
    queued, _ = call(session)
    sub, _ = subscribe_single(session)
    error = RequestAborted("gone")
    assert set(map(id, session.end(error))) == {id(queued), id(sub)}
    with pytest.raises(RequestAborted, match="gone"):
        call(session)
    with pytest.raises(RequestAborted, match="gone"):
        subscribe_single(session)
    session.end(ValueError("later"), replace=False)
    assert session.fatal is error


def test_token_provenance_minted_tokens_are_kept_and_only_they_are_forgotten() -> None:
    anonymous = new_session()
    events = connected(anonymous)
    assert events.save_token == "token" and anonymous.token_source == "minted"
    assert anonymous.forget_minted_token("the server was reset")
    assert anonymous.token is None
    events = connected(anonymous, SECOND_CONNECTION)
    assert events.reset == "the server was reset"

    given = new_session(token="mine")
    events = connected(given)
    assert events.save_token is None and given.token == "mine"
    assert not given.forget_minted_token("no")


def test_rows_that_do_not_decode_are_reported_and_the_message_still_correlates() -> None:
    session = new_session()
    connected(session)
    sub, _ = subscribe_single(session)
    broken = m.SubscribeApplied(sub.id, 1, sub.id, m.SubscribeRows(0, "Player", m.TableUpdate(
        0, "Player", 1, (m.QueryUpdate((), ("[not a row",)),))))
    events = session.receive(broken)
    assert isinstance(events.reports[0], ProtocolError) and events.settle[0][0] is sub
    assert session.cache.count("Player") == 0


def test_the_session_and_the_cache_share_one_subscription_table() -> None:
    session = new_session()
    connected(session)
    sub, _ = subscribe_single(session)
    table = session.cache.subscriptions
    assert table.sets[sub.id].request is sub and table.pending()
    session.receive(sub_applied(sub.id, player(1)))
    assert session.cache.query_holders() == {"SELECT * FROM Player": 1} and not table.pending()
    unsub = Req("unsubscribe", sub.id)
    session.unsubscribe(sub.id, unsub)
    assert table.sets[sub.id].unsubscribing
    events = session.receive(unsub_applied(sub.id, player(1)))
    assert events.settle[0][0] is unsub and sub.id not in table.sets
    assert session.cache.query_holders() == {}
    again = session.receive(unsub_applied(sub.id, player(1)))
    assert not again.trusted  # answered once: a second answer is a stranger


def test_without_a_schema_answers_still_change_the_table() -> None:
    session = new_session(schema=None)
    connected(session)
    sub, _ = subscribe_single(session)
    events = session.receive(sub_applied(sub.id, player(1)))
    assert not events.diffs and events.settle[0][0] is sub
    assert session.cache.subscriptions.sets[sub.id].applied
    session.receive(m.SubscriptionError(1, None, None, None, "evaluation failed"))
    assert not session.cache.subscriptions.sets
