"""Tests of the client cache (spec §7.3, §7.5): counting, updates, legacy replace-all, resyncs."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rx_spacetimedb import cache as cache_module
from rx_spacetimedb.cache import ClientCache, TableDiff, TransactionDiff, primary_key_getter
from rx_spacetimedb.errors import ProtocolError, SchemaError
from rx_spacetimedb.protocol import (
    ModuleSchema,
    QueryUpdate,
    SubscriptionError,
    TableUpdate,
    decode_server_message,
)
from tests.operators._canned import (
    EXAMPLES,
    MY_CONNECTION,
    OTHER_CONNECTION,
    SCHEMA,
    balance,
    committed,
    delta,
    failed,
    identity_token,
    initial,
    light,
    log_line,
    multi_applied,
    out_of_energy,
    player,
    removal_update,
    snapshot_update,
    sub_applied,
    tx_table,
    unsub_applied,
    unsub_multi_applied,
)
from tests.protocol._strategies import PROPERTY


def example(name: str) -> Any:
    return decode_server_message((EXAMPLES / f"server-{name}.json").read_text())


def only(diff: TransactionDiff, table: str = "Player") -> TableDiff[Any]:
    found = diff.table(table)
    assert found is not None, diff
    return found


def subscribed(*rows: object, query: str = "SELECT * FROM Player") -> ClientCache:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, query)
    cache.apply(sub_applied(1, *rows))
    return cache


# -- the spec's example frames ----------------------------------------------------------------


def test_example_frames_fold_to_inserts_updates_and_deletes() -> None:
    schema = ModuleSchema.from_json((EXAMPLES / "http-schema-v9-response.json").read_text())
    cache = ClientCache(schema)
    first = cache.apply(example("InitialSubscription"))
    assert first.cause == "subscribe"
    assert [p.name for p in only(first).inserts] == ["alice", "bob"]

    # bob's score changes through another client: delete + insert of primary key 2 = an update.
    changed = only(cache.apply(example("TransactionUpdateLight")))
    assert changed.inserts == changed.deletes == ()
    ((old, new),) = changed.updates
    assert (old.score, new.score, new.name) == (950, 1010, "bob")
    assert cache.get("Player", 2).score == 1010

    carol = cache.apply(example("TransactionUpdate-committed"))
    assert [p.name for p in only(carol).inserts] == ["carol"]
    assert carol.reducer_call is not None and carol.reducer_call.reducer_name == "CreatePlayer"
    assert cache.count("Player") == 3


# -- transactions ------------------------------------------------------------------------------


def test_diffs_without_their_message_are_the_same_diffs() -> None:
    """``name_message=False`` (for a connection that stamps diffs on the message) changes only ``message``."""
    steps = [sub_applied(1, player(1), player(2)), light(tx_table("Player", delta((player(2),)))),
             committed(tx_table("Player", delta((player(1),), (player(1, score=5),)))), failed("no")]
    named, bare = ClientCache(SCHEMA), ClientCache(SCHEMA)
    for message in steps:
        with_it, without = named.apply(message), bare.apply(message, name_message=False)
        assert without.message is None and all(t.message is None for t in without)
        assert with_it.message is message and all(t.message is message for t in with_it)
        assert without == with_it and without.cause == with_it.cause
    assert bare.rows("Player") == named.rows("Player")


def test_delete_and_insert_of_one_primary_key_is_an_update() -> None:
    cache = subscribed(player(1, "a", 10), player(2, "b", 20))
    diff = cache.apply(committed(tx_table("Player", delta((player(1, "a", 10),), (player(1, "a", 11),)))))
    table = only(diff)
    assert table.updates == ((player(1, "a", 10), player(1, "a", 11)),)
    assert table.inserts == table.deletes == ()
    assert cache.get("Player", 1) == player(1, "a", 11)
    assert cache.rows("Player") == (player(1, "a", 11), player(2, "b", 20))


def test_transaction_with_several_query_updates_of_one_row_is_one_update() -> None:
    # Row 1 is held by two overlapping queries, so each reports the change (spec §7.3).
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.note_subscribe_single(2, "SELECT * FROM Player WHERE score > 5")
    cache.apply(sub_applied(1, player(1, "a", 10)))
    cache.apply(sub_applied(2, player(1, "a", 10)))
    assert cache.ref_count("Player", 1) == 2
    change = delta((player(1, "a", 10),), (player(1, "a", 12),))
    table = only(cache.apply(committed(tx_table("Player", change, change))))
    assert table.updates == ((player(1, "a", 10), player(1, "a", 12)),)
    assert cache.ref_count("Player", 1) == 2

    # The row leaves the narrower query only: still cached, an update, count 1.
    leaves = delta((player(1, "a", 12),), (player(1, "a", 3),))
    table = only(cache.apply(committed(tx_table("Player", leaves, delta((player(1, "a", 12),))))))
    assert table.updates == ((player(1, "a", 12), player(1, "a", 3)),)
    assert cache.ref_count("Player", 1) == 1


def test_failed_and_out_of_energy_reducers_change_nothing() -> None:
    cache = subscribed(player(1))
    for message in (failed("name taken"), out_of_energy()):
        diff = cache.apply(message)
        assert not diff and diff.tables == () and diff.cause == "transaction"
        assert diff.message is message
    assert cache.rows("Player") == (player(1),)


def test_transaction_is_atomic_when_a_row_does_not_decode() -> None:
    cache = subscribed(player(1, "a", 1))
    good = tx_table("Player", delta((player(1, "a", 1),), (player(1, "a", 2),)))
    bad = TableUpdate(0, "Player", 1, (QueryUpdate((), ('[2,"not a player"]',)),))
    with pytest.raises(ProtocolError):
        cache.apply(light(good, bad))
    # The first table of the message was not applied either.
    assert cache.get("Player", 1) == player(1, "a", 1)
    assert cache.count("Player") == 1


def test_unknown_delete_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    cache = subscribed(player(1))
    with caplog.at_level(logging.WARNING, logger="rx_spacetimedb.cache"):
        diff = cache.apply(light(tx_table("Player", delta((player(9),)))))
    assert not diff
    assert "cache holds 0" in caplog.text
    assert cache.rows("Player") == (player(1),)


def test_rows_of_a_table_the_schema_does_not_know_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    cache = subscribed(player(1))
    unknown = TableUpdate(0, "Ghost", 1, (QueryUpdate((), ("[1]",)),))
    with caplog.at_level(logging.WARNING, logger="rx_spacetimedb.cache"):
        diff = cache.apply(light(unknown, tx_table("Player", delta((), (player(2),)))))
    assert only(diff).inserts == (player(2),)
    assert "Ghost" in caplog.text
    with pytest.raises(SchemaError, match="Ghost"):
        cache.rows("Ghost")


# -- subscriptions and counting ----------------------------------------------------------------


def test_overlapping_queries_keep_a_row_until_the_last_one_lets_go() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM Player WHERE score >= 10")
    cache.note_subscribe_single(2, "SELECT * FROM Player WHERE id = 1")
    first = cache.apply(sub_applied(1, player(1, "a", 10), player(2, "b", 20)))
    second = cache.apply(sub_applied(2, player(1, "a", 10)))
    assert len(only(first).inserts) == 2
    assert not second  # row 1 was already there: no second insert
    assert cache.ref_count("Player", 1) == 2

    cache.note_unsubscribe(1)
    gone = cache.apply(unsub_applied(1, player(1, "a", 10), player(2, "b", 20)))
    assert only(gone).deletes == (player(2, "b", 20),)
    assert cache.rows("Player") == (player(1, "a", 10),)  # still held by query 2

    cache.note_unsubscribe(2)
    assert only(cache.apply(unsub_applied(2, player(1, "a", 10)))).deletes == (player(1, "a", 10),)
    assert cache.count("Player") == 0


def test_same_query_text_subscribed_twice_counts_its_snapshot_once() -> None:
    query = "SELECT * FROM Player"
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, query)
    cache.note_subscribe_single(2, query)
    cache.apply(sub_applied(1, player(1)))
    repeat = cache.apply(sub_applied(2, player(1)))
    assert not repeat
    assert cache.ref_count("Player", 1) == 1
    assert cache.query_holders() == {query: 2}
    # Its delete comes once; counting the repeated snapshot would leave the row behind forever.
    gone = cache.apply(light(tx_table("Player", delta((player(1),)))))
    assert only(gone).deletes == (player(1),)
    assert cache.count("Player") == 0


def test_unsubscribe_answered_with_an_error_still_removes_the_query_id() -> None:
    query = "SELECT * FROM Player"
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, query)
    cache.note_subscribe_single(2, query)
    cache.apply(sub_applied(1, player(1)))
    cache.apply(sub_applied(2, player(1)))
    cache.note_unsubscribe(2)
    cache.apply(SubscriptionError(5, 2, 2, None, "Internal error"))
    assert cache.query_holders() == {query: 1}
    assert cache.rows("Player") == (player(1),)
    assert cache.stale is None
    # A third subscription of the same text is again a repeat, not a fresh snapshot.
    cache.note_subscribe_single(3, query)
    assert not cache.apply(sub_applied(3, player(1)))
    assert cache.ref_count("Player", 1) == 1


def test_subscribe_multi_counts_every_fragment_and_unsubscribe_multi_removes_them() -> None:
    cache = ClientCache(SCHEMA)
    queries = ["SELECT * FROM Player WHERE score >= 10", "SELECT * FROM Player WHERE id = 1"]
    cache.note_subscribe_multi(2, queries)
    diff = cache.apply(multi_applied(2, snapshot_update(player(1, "a", 10), player(2, "b", 20)),
                                     snapshot_update(player(1, "a", 10))))
    assert only(diff).inserts == (player(1, "a", 10), player(2, "b", 20))
    assert cache.ref_count("Player", 1) == 2
    cache.note_unsubscribe(2)
    gone = cache.apply(unsub_multi_applied(2, removal_update(player(1, "a", 10), player(2, "b", 20)),
                                           removal_update(player(1, "a", 10))))
    assert set(only(gone).deletes) == {player(1, "a", 10), player(2, "b", 20)}
    assert cache.count("Player") == 0
    assert cache.query_holders() == {}


def test_legacy_subscribe_replaces_its_set_as_a_diff() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe(1, ["SELECT * FROM Player"])
    first = cache.apply(initial(snapshot_update(player(1, "a", 1), player(2, "b", 2), player(3, "c", 3))))
    assert len(only(first).inserts) == 3
    replaced = only(cache.apply(initial(
        snapshot_update(player(2, "b", 2), player(3, "c", 30), player(4, "d", 4)), request_id=2)))
    # Only real changes: 1 left the set, 3 changed, 4 joined; 2 is untouched and not reported.
    assert replaced.deletes == (player(1, "a", 1),)
    assert replaced.updates == ((player(3, "c", 3), player(3, "c", 30)),)
    assert replaced.inserts == (player(4, "d", 4),)
    assert cache.rows("Player") == (player(2, "b", 2), player(3, "c", 30), player(4, "d", 4))
    assert cache.ref_count("Player", 2) == 1


def test_legacy_replace_all_after_transactions_sees_no_change_when_nothing_changed() -> None:
    cache = ClientCache(SCHEMA)
    cache.apply(initial(snapshot_update(player(1), player(2))))
    cache.apply(light(tx_table("Player", delta((player(2),), ()), delta((), (player(3),)))))
    again = cache.apply(initial(snapshot_update(player(1), player(3)), request_id=2))
    assert not again
    assert cache.ref_count("Player", 3) == 1
    assert cache.ref_count("Player", 2) == 0


def test_legacy_set_beside_a_single_query_keeps_the_single_querys_rows() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM Player WHERE id = 1")
    cache.apply(sub_applied(1, player(1)))
    cache.apply(initial(snapshot_update(player(1), player(2))))
    assert cache.ref_count("Player", 1) == 2
    diff = cache.apply(initial(snapshot_update(player(3)), request_id=2))
    assert only(diff).deletes == (player(2),)
    assert only(diff).inserts == (player(3),)
    assert cache.ref_count("Player", 1) == 1  # the single query still holds it


# -- tables without a primary key, and wide integer keys ----------------------------------------


def test_table_without_primary_key_counts_equal_rows_and_never_updates() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM LogLine")
    cache.apply(sub_applied(1, log_line("hi"), log_line("hi"), log_line("yo"), table="LogLine"))
    assert cache.rows("LogLine") == (log_line("hi"), log_line("yo"))
    assert cache.ref_count("LogLine", log_line("hi")) == 2
    assert cache.get("LogLine", log_line("yo")) == log_line("yo")

    diff = only(cache.apply(light(tx_table("LogLine", delta((log_line("hi"), log_line("yo")),
                                                            (log_line("yo", 2),))))), "LogLine")
    # A changed value is a different row here: one delete and one insert, no update.
    assert diff.updates == ()
    assert diff.deletes == (log_line("yo"),)
    assert diff.inserts == (log_line("yo", 2),)
    assert cache.ref_count("LogLine", log_line("hi")) == 1


def test_u128_primary_key_and_identity_column() -> None:
    big = 2**100 + 7
    cache = ClientCache(SCHEMA)
    cache.apply(sub_applied(1, balance(big, 2**127), balance(1, 5), table="Balance"))
    assert cache.get("Balance", big) == balance(big, 2**127)
    diff = only(cache.apply(light(tx_table("Balance", delta((balance(big, 2**127),),
                                                           (balance(big, 2**128 - 1),))))), "Balance")
    assert diff.updates == ((balance(big, 2**127), balance(big, 2**128 - 1)),)
    assert cache.get("Balance", big).amount == 2**128 - 1
    assert cache.get("Balance", big + 1) is None


def test_primary_key_getter_reads_by_position_for_user_types() -> None:
    from typing import NamedTuple

    class Pair(NamedTuple):
        account: int
        owner: object
        amount: int

    key_of = primary_key_getter(SCHEMA, "Balance")
    assert key_of is not None
    assert key_of(Pair(9, None, 1)) == 9
    assert key_of(balance(8, 1)) == 8
    assert primary_key_getter(SCHEMA, "LogLine") is None


# -- reconnects ----------------------------------------------------------------------------------


def test_resync_emits_only_the_net_difference_and_never_flashes() -> None:
    cache = subscribed(player(1, "a", 1), player(2, "b", 2), player(3, "c", 3))
    cache.begin_resync()
    assert cache.resyncing
    cache.note_subscribe_single(7, "SELECT * FROM Player")
    assert cache.end_resync_when_applied() is None  # waits for the answer

    # While away: 2 changed, 3 was deleted, 4 was added; 1 is untouched.
    diff = cache.apply(sub_applied(7, player(1, "a", 1), player(2, "b", 20), player(4, "d", 4)))
    assert diff.cause == "resync"
    table = only(diff)
    assert table.deletes == (player(3, "c", 3),)
    assert table.updates == ((player(2, "b", 2), player(2, "b", 20)),)
    assert table.inserts == (player(4, "d", 4),)
    assert not cache.resyncing
    assert cache.rows("Player") == (player(1, "a", 1), player(2, "b", 20), player(4, "d", 4))


def test_during_resync_lookups_show_the_old_rows_and_changes_wait_for_the_end() -> None:
    cache = subscribed(player(1, "a", 1), player(2, "b", 2))
    cache.begin_resync()
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.note_subscribe_multi(2, ["SELECT * FROM LogLine"])
    assert cache.end_resync_when_applied() is None
    assert not cache.apply(sub_applied(1, player(1, "a", 1)))
    # A transaction between the two answers is folded into the new state silently.
    assert not cache.apply(light(tx_table("Player", delta((), (player(5, "e", 5),)))))
    assert cache.rows("Player") == (player(1, "a", 1), player(2, "b", 2))  # no flash
    assert "RESYNCING" in repr(cache)

    diff = cache.apply(multi_applied(2, snapshot_update(log_line("x"))))
    assert diff.cause == "resync"
    assert only(diff).deletes == (player(2, "b", 2),)
    assert only(diff).inserts == (player(5, "e", 5),)
    assert only(diff, "LogLine").inserts == (log_line("x"),)


def test_resync_without_changes_is_empty_and_counts_restart() -> None:
    query = "SELECT * FROM Player"
    cache = subscribed(player(1))
    cache.begin_resync()
    cache.note_subscribe_single(1, query)  # query ids start fresh on a new connection
    cache.apply(sub_applied(1, player(1)))
    diff = cache.end_resync_when_applied()
    assert diff is not None and not diff and diff.cause == "resync"
    assert cache.ref_count("Player", 1) == 1
    assert cache.query_holders() == {query: 1}


def test_failed_resubscription_does_not_block_the_end_of_a_resync() -> None:
    cache = subscribed(player(1))
    cache.begin_resync()
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.note_subscribe_single(2, "SELECT * FROM Playr")
    assert cache.end_resync_when_applied() is None
    assert not cache.apply(sub_applied(1, player(1)))
    diff = cache.apply(SubscriptionError(0, 2, 2, None, "no such table"))
    assert diff.cause == "resync" and not diff
    assert not cache.resyncing


def test_subscription_error_without_request_id_marks_stale_and_resyncs() -> None:
    cache = subscribed(player(1), player(2))
    cache.apply(SubscriptionError(0, None, None, None, "query failed"))
    assert cache.stale == "query failed"
    assert cache.resyncing
    assert cache.rows("Player") == (player(1), player(2))  # stale, but no flash
    # The application subscribes again (two queries at once): one net diff once both are answered.
    cache.note_subscribe_single(3, "SELECT * FROM Player WHERE id = 2")
    cache.note_subscribe_single(4, "SELECT * FROM LogLine")
    assert not cache.apply(sub_applied(3, player(2)))
    diff = cache.apply(sub_applied(4, log_line("x"), table="LogLine"))
    assert diff.cause == "resync"
    assert only(diff).deletes == (player(1),)
    assert only(diff, "LogLine").inserts == (log_line("x"),)
    assert cache.stale is None and not cache.resyncing


def test_after_subscriptions_ended_an_unnoted_subscription_answer_ends_the_stale_period() -> None:
    cache = subscribed(player(1), player(2))
    cache.apply(SubscriptionError(0, None, None, None, "query failed"))
    diff = cache.apply(sub_applied(9, player(2), player(3)))
    assert diff.cause == "resync"
    assert only(diff).deletes == (player(1),) and only(diff).inserts == (player(3),)
    assert cache.ref_count("Player", 2) == 1


def test_begin_resync_twice_keeps_the_rows_the_user_saw() -> None:
    cache = subscribed(player(1), player(2))
    cache.begin_resync()
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.apply(sub_applied(1, player(1)))
    cache.begin_resync()  # the new connection dropped too
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.apply(sub_applied(1, player(2), player(3)))
    diff = cache.end_resync()
    assert only(diff).deletes == (player(1),)
    assert only(diff).inserts == (player(3),)


def test_explicit_end_resync_and_clear() -> None:
    cache = subscribed(player(1))
    assert not cache.end_resync()  # not resyncing: nothing
    cleared = cache.clear()
    assert cleared.cause == "clear" and only(cleared).deletes == (player(1),)
    assert len(cache) == 0


def test_repr_lists_tables_and_row_counts() -> None:
    cache = subscribed(player(1), player(2))
    cache.apply(sub_applied(2, log_line("x"), table="LogLine"))
    assert repr(cache) == "<ClientCache [Player: 2, LogLine: 1]>"
    assert cache.tables() == {"Player": 2, "LogLine": 1}
    assert len(cache) == 3


def test_table_diff_map_rows_and_reducer_call() -> None:
    message = committed(tx_table("Player", delta((), (player(1),))))
    diff = only(ClientCache(SCHEMA).apply(message))
    assert diff.reducer_call is message.reducer_call
    mapped = diff.map_rows(lambda p: p.id)
    assert mapped.inserts == (1,) and mapped.message is message
    assert replace(mapped, inserts=()).__bool__() is False


def test_identity_token_of_a_new_connection_resyncs_against_the_same_query_ids() -> None:
    cache = ClientCache(SCHEMA)
    assert not cache.apply(identity_token(MY_CONNECTION))
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.note_subscribe_multi(2, ["SELECT * FROM LogLine"])
    cache.apply(sub_applied(1, player(1), player(2)))
    cache.apply(multi_applied(2, snapshot_update(log_line("x"))))
    cache.apply(identity_token(MY_CONNECTION))  # same connection: nothing happens
    assert not cache.resyncing

    assert not cache.apply(identity_token(OTHER_CONNECTION))
    assert cache.resyncing and cache.rows("Player") == (player(1), player(2))
    assert not cache.apply(sub_applied(1, player(2), player(3)))  # still waiting for query 2
    diff = cache.apply(multi_applied(2, snapshot_update(log_line("x"))))
    assert diff.cause == "resync" and not cache.resyncing
    assert only(diff).deletes == (player(1),) and only(diff).inserts == (player(3),)
    assert diff.table("LogLine") is None  # unchanged while away: not reported


def test_identity_token_resync_waits_for_the_legacy_set_too() -> None:
    cache = ClientCache(SCHEMA)
    cache.apply(identity_token(MY_CONNECTION))
    cache.apply(initial(snapshot_update(player(1), player(2))))
    cache.apply(identity_token(OTHER_CONNECTION))
    diff = cache.apply(initial(snapshot_update(player(2)), request_id=9))
    assert diff.cause == "resync" and only(diff).deletes == (player(1),)
    # The legacy contribution restarted with the new snapshot: a third set diffs against it.
    again = cache.apply(initial(snapshot_update(player(5)), request_id=10))
    assert only(again).deletes == (player(2),) and only(again).inserts == (player(5),)


def test_auto_resync_can_be_turned_off() -> None:
    cache = ClientCache(SCHEMA, auto_resync=False)
    cache.apply(identity_token(MY_CONNECTION))
    cache.apply(sub_applied(1, player(1)))
    cache.apply(identity_token(OTHER_CONNECTION))
    assert not cache.resyncing


def test_unsubscribing_during_a_resync_stops_waiting_for_that_query() -> None:
    cache = ClientCache(SCHEMA)
    cache.apply(sub_applied(1, player(1)))
    cache.apply(sub_applied(2, log_line("x"), table="LogLine"))
    assert cache.reconnected() is None
    cache.note_unsubscribe(2)  # dropped while away: never re-sent
    diff = cache.apply(sub_applied(1, player(1)))
    assert diff.cause == "resync" and only(diff, "LogLine").deletes == (log_line("x"),)


def test_unsubscribe_error_releasing_a_whole_set_marks_the_cache_stale() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_multi(4, ["SELECT * FROM Player", "SELECT * FROM LogLine"])
    cache.apply(multi_applied(4, snapshot_update(player(1)), snapshot_update(log_line("x"))))
    cache.note_unsubscribe(4)
    cache.apply(SubscriptionError(0, 6, 4, None, "Internal error"))  # Unsubscribe on a set (§5.6)
    assert cache.stale is not None and "UnsubscribeMulti" in cache.stale
    assert cache.query_holders() == {}
    assert "STALE" in repr(cache)


def test_a_snapshot_that_does_not_decode_changes_no_counts() -> None:
    query = "SELECT * FROM Player"
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, query)
    bad = sub_applied(1, player(1))
    broken = replace(bad, rows=replace(bad.rows, table_rows=TableUpdate(
        0, "Player", 1, (QueryUpdate((), ('{"id": "one"}',)),))))
    with pytest.raises(ProtocolError):
        cache.apply(broken)
    assert cache.query_holders() == {}  # the query_id was not taken as live
    cache.apply(sub_applied(1, player(1)))
    assert cache.query_holders() == {query: 1} and cache.ref_count("Player", 1) == 1


def test_the_first_identity_token_does_not_resync_requests_noted_before_it() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM Player")  # queued before connecting
    cache.apply(identity_token(MY_CONNECTION))
    assert not cache.resyncing
    assert only(cache.apply(sub_applied(1, player(1)))).inserts == (player(1),)


def test_a_first_identity_token_after_rows_from_an_unseen_connection_resyncs() -> None:
    cache = ClientCache(SCHEMA)
    cache.apply(sub_applied(1, player(1)))  # the stream was joined mid-session
    cache.apply(identity_token(MY_CONNECTION))
    assert cache.resyncing


# -- the batch fold against the per-key fold ---------------------------------------------------

_ids = st.lists(st.integers(0, 5), max_size=6)


def _rows(data: st.DataObject, label: str) -> tuple[Any, ...]:
    return tuple(player(i, score=data.draw(st.integers(0, 2), label=f"{label} score"))
                 for i in data.draw(_ids, label=label))


@PROPERTY
@given(st.data())
def test_the_batch_fold_gives_what_the_per_key_fold_gives(data: st.DataObject) -> None:
    # _commit_batch is a fast path of _commit_per_key for keys held once: the same messages, folded
    # with it and without it, must give equal diffs (in the same order), rows and counts. Keys repeat,
    # are deleted while absent, held by two queries, and one table may carry two queries.
    query_a, query_b = "SELECT * FROM Player", "SELECT * FROM Player WHERE score >= 0"
    messages: list[Any] = []
    for step in range(data.draw(st.integers(1, 8), label="steps")):
        kind = data.draw(st.sampled_from(["tx", "tx", "tx2", "update", "sub", "unsub"]), label=f"kind {step}")
        if kind == "update":  # the same keys deleted and inserted, in another order
            ids = data.draw(st.lists(st.integers(0, 5), unique=True, min_size=1), label="updated")
            order = data.draw(st.permutations(ids), label="order")
            messages.append(committed(tx_table("Player", delta(tuple(player(i) for i in ids),
                                                               tuple(player(i, score=9) for i in order)))))
        elif kind == "tx":
            messages.append(committed(tx_table("Player", delta(_rows(data, "del"), _rows(data, "ins")))))
        elif kind == "tx2":
            messages.append(committed(tx_table("Player", delta(_rows(data, "del"), _rows(data, "ins")),
                                               delta(_rows(data, "del2"), _rows(data, "ins2")))))
        elif kind == "sub":
            messages.append(("sub", step, sub_applied(step, *_rows(data, "snapshot"))))
        else:
            messages.append(unsub_applied(step, *_rows(data, "removed")))

    def fold(batches: bool) -> tuple[list[Any], tuple[Any, ...], list[int]]:
        cache = ClientCache(SCHEMA)
        diffs = []
        with pytest.MonkeyPatch.context() as patch:
            if not batches:
                patch.setattr(cache_module, "_commit_batch", lambda *args: None)
            for message in messages:
                if isinstance(message, tuple):
                    _, query_id, message = message
                    cache.note_subscribe_single(query_id, query_a if query_id % 2 else query_b)
                diffs.append(cache.apply(message).tables)
        return diffs, cache.rows("Player"), [cache.ref_count("Player", i) for i in range(6)]

    assert fold(batches=True) == fold(batches=False)
