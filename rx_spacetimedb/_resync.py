"""The client cache's resync, as named states and one transition table.

Theory of operation
-------------------
A cache shows the rows its subscriptions hold. When they must be rebuilt (a new socket, or the
server ending every subscription) the user must never see the rows wiped and refilled: the cache
keeps *showing* the old state while fresh snapshots build a new one in the background, and when
the rebuild is complete it commits once, emitting only the net difference (cause ``"resync"``).

The states:

    LIVE        no resync: lookups show the state the answers fold into.
    REBUILDING  a rebuild has begun (``begin_resync``); subscriptions are being (re)sent and it
                is not yet known what to wait for, so it cannot end by itself.
    AWAITING    every subscription to wait for is known; the rebuild commits as soon as the
                subscription table has no pending answer (now, if it has none).
    ENDED       the server ended every subscription (``SubscriptionError`` without request id):
                the rows shown are stale until the application subscribes again; the next
                subscription sent (or a snapshot answered) moves to AWAITING.

Every transition is in ``_TRANSITIONS``; an event a state does not list leaves it unchanged
(e.g. a snapshot while LIVE). ``COMMIT`` is the only way from a rebuild back to LIVE with a diff
(``clear()`` drops everything instead, with deletes). The cache calls ``fire`` with its lock held.
"""

from __future__ import annotations

import enum

__all__ = ["Event", "Resync", "ResyncState"]


class ResyncState(enum.Enum):
    LIVE = "live"
    REBUILDING = "rebuilding"
    AWAITING = "awaiting"
    ENDED = "ended"


class Event(enum.Enum):
    BEGIN = "begin"  # begin_resync(): a new socket (or the application) starts a rebuild
    ARM = "arm"  # end_resync_when_applied(): the subscriptions to wait for are all known
    SERVER_ENDED = "server_ended"  # SubscriptionError without request_id
    SUBSCRIBED = "subscribed"  # a subscription was sent, or a snapshot answered one
    COMMIT = "commit"  # the rebuilt state becomes visible (its net diff comes out)
    CLEAR = "clear"  # clear(): everything dropped


LIVE, REBUILDING, AWAITING, ENDED = ResyncState

_TRANSITIONS: dict[ResyncState, dict[Event, ResyncState]] = {
    LIVE: {Event.BEGIN: REBUILDING, Event.SERVER_ENDED: ENDED, Event.CLEAR: LIVE},
    REBUILDING: {Event.BEGIN: REBUILDING, Event.ARM: AWAITING, Event.SERVER_ENDED: ENDED,
                 Event.COMMIT: LIVE, Event.CLEAR: LIVE},
    AWAITING: {Event.BEGIN: REBUILDING, Event.ARM: AWAITING, Event.SERVER_ENDED: ENDED,
               Event.COMMIT: LIVE, Event.CLEAR: LIVE},
    ENDED: {Event.BEGIN: REBUILDING, Event.SUBSCRIBED: AWAITING, Event.ARM: AWAITING,
            Event.SERVER_ENDED: ENDED, Event.COMMIT: LIVE, Event.CLEAR: LIVE},
}


class Resync:
    """The current resync state; ``fire`` moves it along ``_TRANSITIONS``."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = LIVE

    @property
    def rebuilding(self) -> bool:
        """Lookups show an older state than the one answers fold into."""
        return self.state is not LIVE

    def fire(self, event: Event) -> ResyncState:
        """Apply ``event``; a state that does not list it stays as it is."""
        self.state = _TRANSITIONS[self.state].get(event, self.state)
        return self.state

    def __repr__(self) -> str:
        return f"<Resync {self.state.name}>"
