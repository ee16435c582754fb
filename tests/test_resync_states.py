"""The cache's resync states (rx_spacetimedb._resync) and the subscription table it shares."""

from __future__ import annotations

import pytest

from rx_spacetimedb._resync import _TRANSITIONS, AWAITING, ENDED, LIVE, REBUILDING, Event, Resync, ResyncState
from rx_spacetimedb._subscriptions import QuerySet, SubscriptionTable
from rx_spacetimedb.cache import ClientCache
from rx_spacetimedb.protocol import SubscriptionError
from tests.operators._canned import SCHEMA, player, sub_applied, unsub_applied


def test_every_state_lists_its_transitions_and_only_commit_or_clear_lead_back_to_live() -> None:
    assert set(_TRANSITIONS) == set(ResyncState)
    for state, moves in _TRANSITIONS.items():
        for event, target in moves.items():
            if target is LIVE and state is not LIVE:
                assert event in (Event.COMMIT, Event.CLEAR), (state, event)
    # LIVE cannot commit: there is nothing rebuilt to show.
    assert Event.COMMIT not in _TRANSITIONS[LIVE]


@pytest.mark.parametrize(("events", "state"), [
    ([Event.BEGIN], REBUILDING),
    ([Event.BEGIN, Event.ARM], AWAITING),
    ([Event.BEGIN, Event.ARM, Event.BEGIN], REBUILDING),
    ([Event.BEGIN, Event.ARM, Event.COMMIT], LIVE),
    ([Event.SERVER_ENDED], ENDED),
    ([Event.SERVER_ENDED, Event.SUBSCRIBED], AWAITING),
    ([Event.BEGIN, Event.SUBSCRIBED], REBUILDING),  # not armed: a snapshot does not end a rebuild
    ([Event.ARM, Event.SUBSCRIBED], LIVE),  # nothing to rebuild: events that do not apply are ignored
    ([Event.SERVER_ENDED, Event.CLEAR], LIVE),
])
def test_transitions(events: list[Event], state: ResyncState) -> None:
    resync = Resync()
    for event in events:
        resync.fire(event)
    assert resync.state is state
    assert resync.rebuilding is (state is not LIVE)


def test_the_cache_walks_the_states_of_a_reconnect() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.apply(sub_applied(1, player(1), player(2)))
    assert cache._resync.state is LIVE
    cache.begin_resync(resend=True)  # a session re-sends the same table: query 1 is awaited again
    assert cache._resync.state is REBUILDING and cache.subscriptions.pending()
    assert cache.end_resync_when_applied() is None
    assert cache._resync.state is AWAITING
    diff = cache.apply(sub_applied(1, player(2)))
    assert diff.cause == "resync" and cache._resync.state is LIVE
    assert cache.query_holders() == {"SELECT * FROM Player": 1}


def test_the_cache_walks_the_states_when_the_server_ends_the_subscriptions() -> None:
    cache = ClientCache(SCHEMA)
    cache.note_subscribe_single(1, "SELECT * FROM Player")
    cache.apply(sub_applied(1, player(1)))
    cache.apply(SubscriptionError(0, None, None, None, "query failed"))
    assert cache._resync.state is ENDED and not cache.subscriptions.sets
    diff = cache.apply(sub_applied(1, player(1)))  # an answer nobody noted: arms the rebuild, ends it
    assert diff.cause == "resync" and not diff  # the same row: no change to show
    assert cache._resync.state is LIVE and cache.stale is None


def test_the_table_counts_holders_once_per_applied_query_id_and_releases_them() -> None:
    table = SubscriptionTable()
    table.add(QuerySet(1, ("SELECT * FROM Player",), multi=False))
    table.add(QuerySet(2, ("SELECT * FROM Player",), multi=False))
    assert table.pending()
    assert not table.settle(sub_applied(1, player(1))).already_held
    assert table.settle(sub_applied(2, player(1))).already_held
    assert table.holders == {"SELECT * FROM Player": 2} and not table.pending()
    assert table.settle(unsub_applied(1, player(1))).released == []
    assert table.settle(unsub_applied(2, player(1))).released == ["SELECT * FROM Player"]
    assert table.sets == {} and table.holders == {}
    before = table.added
    table.add(QuerySet(3, ("SELECT * FROM LogLine",)))
    assert table.added == before + 1
    table.resend()
    assert table.pending()
