"""The one table of a connection's subscriptions, shared by its session and its client cache.

The session adds what it sends (``add``, ``set_legacy``, ``QuerySet.unsubscribing``) and keeps the
request handles in it; the answers' effects (a snapshot applied, a query id released, the server
ending every subscription) are folded here by ``settle``, which the cache calls as it folds each
answer's rows (and the session itself when there is no schema, so no cache fold). So what the
session re-sends after a reconnect and what the cache waits for and counts are one set of entries,
never two kept in step. (The emulator keeps its own table, on purpose: an independent check.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rx_spacetimedb.protocol import messages as m

__all__ = ["LegacySet", "QuerySet", "Settled", "SubscriptionTable"]


@dataclass(slots=True, eq=False)
class QuerySet:
    """One SubscribeSingle/SubscribeMulti query id: its texts, requests and where it stands.

    ``queries`` is empty for a ``subscribe_all()`` made before the schema came, and for an
    answer the cache was never told about.
    """

    query_id: int
    queries: tuple[str, ...]
    multi: bool = True
    request: Any = None  # the session's handle of the subscribe request
    unsubscribe: Any = None  # the session's handle of the Unsubscribe sent for it
    unsubscribing: bool = False  # an Unsubscribe was sent: its answer (even an error) removes it
    applied: bool = False  # its snapshot is folded on the current socket (``holders`` count it)


@dataclass(slots=True, eq=False)
class LegacySet:
    """The legacy ``Subscribe`` set; ``request_id`` None: any ``InitialSubscription`` answers it."""

    queries: tuple[str, ...]
    request_id: int | None
    request: Any = None
    applied: bool = False


@dataclass(slots=True)
class Settled:
    """What an answer did to the table: for the cache's counting rules."""

    already_held: bool = False  # a SubscribeApplied of a text another query id holds already
    released: list[str] = field(default_factory=list)  # texts no applied query id holds any more
    ended: bool = False  # the server ended every subscription (SubscriptionError, no request_id)


class SubscriptionTable:
    """Query ids and the legacy set, with how many applied query ids hold each query text."""

    def __init__(self) -> None:
        self.sets: dict[int, QuerySet] = {}
        self.legacy: LegacySet | None = None
        self.holders: dict[str, int] = {}  # query text -> applied query ids holding it
        self.added = 0  # grows with every add/set_legacy: "a new subscription since then?"

    def add(self, query_set: QuerySet) -> None:
        self.sets[query_set.query_id] = query_set
        self.added += 1

    def set_legacy(self, legacy: LegacySet) -> None:
        self.legacy = legacy
        self.added += 1

    def live(self) -> dict[int, tuple[str, ...]]:
        """The applied query ids and their texts."""
        return {q.query_id: q.queries for q in self.sets.values() if q.applied}

    def pending(self) -> bool:
        """Whether an answer is still due (a snapshot of a set, or the legacy set's)."""
        if self.legacy is not None and not self.legacy.applied:
            return True
        return any(not q.applied and not q.unsubscribing for q in self.sets.values())

    def resend(self) -> None:
        """A new socket: every set is asked again, nothing is held yet."""
        for query_set in self.sets.values():
            query_set.applied = False
        if self.legacy is not None:
            self.legacy.applied = False
        self.holders.clear()

    def clear(self) -> None:
        self.sets.clear()
        self.legacy = None
        self.holders.clear()

    def remove(self, query_id: int) -> list[str]:
        """Forget a query id; the texts no applied query id holds any more."""
        query_set = self.sets.pop(query_id, None)
        released: list[str] = []
        if query_set is None or not query_set.applied:
            return released
        for text in query_set.queries:
            left = self.holders.get(text, 0) - 1
            if left > 0:
                self.holders[text] = left
            else:
                self.holders.pop(text, None)
                released.append(text)
        return released

    def settle(self, message: m.ServerMessage) -> Settled:
        """Fold what an answer says about the subscriptions (nothing for other messages)."""
        settled = Settled()
        if isinstance(message, m.SubscribeApplied | m.SubscribeMultiApplied):
            query_set = self.sets.get(message.query_id)
            if query_set is None:  # an answer nobody noted: still live from now on
                query_set = QuerySet(message.query_id, (), isinstance(message, m.SubscribeMultiApplied))
                self.sets[message.query_id] = query_set
            if query_set.applied:
                return settled
            texts = query_set.queries
            settled.already_held = (isinstance(message, m.SubscribeApplied) and bool(texts)
                                    and self.holders.get(texts[0], 0) > 0)
            query_set.applied = True
            for text in texts:
                self.holders[text] = self.holders.get(text, 0) + 1
        elif isinstance(message, m.UnsubscribeApplied | m.UnsubscribeMultiApplied):
            settled.released = self.remove(message.query_id)
        elif isinstance(message, m.InitialSubscription):
            legacy = self.legacy
            if legacy is not None and legacy.request_id in (None, message.request_id):
                legacy.applied = True
        elif isinstance(message, m.SubscriptionError):
            if message.request_id is None:
                settled.ended = True
                self.clear()
            elif message.query_id is not None:
                # Nothing was subscribed, or an Unsubscribe answered with an error has still
                # removed the query id (spec §5.6).
                settled.released = self.remove(message.query_id)
            elif self.legacy is not None and self.legacy.request_id == message.request_id:
                self.legacy = None
        return settled
