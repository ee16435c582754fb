"""Subscriptions as the emulator keeps them: query sets, ref-counts, snapshots, transaction deltas.

This bookkeeping is deliberately the emulator's own and shares nothing with the client's cache
(``rx_spacetimedb.cache``): the two are written independently from the spec, so a test where both
agree checks one against the other, and a bug in one cannot hide in the other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.jsontext import dumps
from rx_spacetimedb.protocol.values import Identity, TimeDuration
from rx_spacetimedb.testing._base import EmulatedClient, micros_since
from rx_spacetimedb.testing._storage import StorageMixin
from rx_spacetimedb.testing.module import Database, Transaction
from rx_spacetimedb.testing.sql import Query, SqlError, compile_query, is_select_star_from_star

__all__ = ["SubscriptionsMixin"]


class SubscriptionsMixin(StorageMixin):
    """Subscribe/unsubscribe (legacy, single, multi), one-off queries and per-client deltas."""

    def _expand(self, texts: Sequence[str], identity: Identity) -> list[str]:
        """Trim, expand ``SELECT * FROM *`` (expansions first), keep order."""
        expanded: list[str] = []
        rest: list[str] = []
        for raw in texts:
            text = raw.strip()
            if is_select_star_from_star(text) and ";" not in text:
                is_owner = identity == self.owner
                expanded += [
                    f"SELECT * FROM {t.name}" for t in self.module.tables.values() if t.public or is_owner
                ]
            else:
                rest.append(text)
        return expanded + rest

    def _compile(self, client: EmulatedClient, text: str, subscription: bool = True) -> Query:
        return compile_query(
            text,
            self.db,
            sender=client.identity,
            is_owner=client.identity == self.owner,
            subscription=subscription,
        )

    def _snapshot_update(self, queries: Sequence[Query], deletes: bool = False) -> m.DatabaseUpdate:
        """One TableUpdate per query over non-empty tables, rows in form B (spec §6.1)."""
        tables: list[m.TableUpdate] = []
        for query in queries:
            if any(not self.db.stores[t].rows for t in query.joined_tables()):
                continue
            rows = self._rows_b(query, query.rows(self.db))
            update = m.QueryUpdate(deletes=rows) if deletes else m.QueryUpdate(inserts=rows)
            tables.append(m.TableUpdate(query.table.table_id, query.table_name, len(rows), (update,)))
        return m.DatabaseUpdate(tuple(tables))

    def _rows_b(self, query: Query, rows: Sequence[Any]) -> tuple[str, ...]:
        encoder = self.db.stores[query.table_name].encoder_b
        return tuple(dumps(encoder(r)) for r in rows)

    def _subscription_error(
        self, client: EmulatedClient, error: str, request_id: int | None, query_id: int | None, start: float
    ) -> None:
        self._send(client, m.SubscriptionError(micros_since(start), request_id, query_id, None, error))

    def _on_subscribe(self, client: EmulatedClient, msg: m.Subscribe) -> None:
        start = time.perf_counter()
        texts = self._expand(msg.query_strings, client.identity)
        queries: list[Query] = []
        for text in texts:
            try:
                queries.append(self._compile(client, text))
            except SqlError as err:
                self._subscription_error(client, err.subscription_text(text), msg.request_id, None, start)
                return
        client.legacy = {q.sql: q for q in queries}
        update = self._snapshot_update(queries)
        self._send(client, m.InitialSubscription(update, msg.request_id, TimeDuration(micros_since(start))))

    def _on_subscribe_single(self, client: EmulatedClient, msg: m.SubscribeSingle) -> None:
        start = time.perf_counter()
        self._revive(client)
        try:
            query = self._compile(client, msg.query)
        except SqlError as err:
            self._subscription_error(
                client, err.subscription_text(msg.query), msg.request_id, msg.query_id, start
            )
            return
        if msg.query_id in client.query_sets:
            self._subscription_error(
                client, self._exists_text(client, msg.query_id), msg.request_id, msg.query_id, start
            )
            return
        self._hold(client, msg.query_id, [query])
        self._send(
            client,
            m.SubscribeApplied(
                msg.request_id,
                micros_since(start),
                msg.query_id,
                self._query_rows(query, deletes=False),
            ),
        )

    @staticmethod
    def _revive(client: EmulatedClient) -> None:
        """After a transaction-time error the next SubscribeSingle/Multi starts from nothing (§7.3)."""
        if client.dropped:
            client.dropped = False
            client.legacy.clear()
            client.query_sets.clear()
            client.refs.clear()
            client.compiled.clear()

    @staticmethod
    def _client_debug(client: EmulatedClient) -> str:
        """The server's Debug rendering of a client id ``(Identity, ConnectionId)``."""
        return f'(Identity("{client.identity.hex}"), ConnectionId({client.connection_id.hex}))'

    def _exists_text(self, client: EmulatedClient, query_id: int) -> str:
        return (
            f"Subscription with id QueryId {{ id: {query_id} }} already exists for client: "
            f"{self._client_debug(client)}"
        )

    def _not_found_text(self, client: EmulatedClient, query_id: int) -> str:
        return f"Subscription not found: ({self._client_debug(client)}, QueryId {{ id: {query_id} }})"

    def _hold(self, client: EmulatedClient, query_id: int, queries: Sequence[Query]) -> list[Query]:
        """Register a query id; return the queries this connection did not hold before."""
        added: list[Query] = []
        for query in queries:
            if client.refs.get(query.sql, 0) == 0:
                added.append(query)
                client.compiled[query.sql] = query
            client.refs[query.sql] = client.refs.get(query.sql, 0) + 1
        client.query_sets[query_id] = [q.sql for q in queries]
        return added

    def _release(self, client: EmulatedClient, query_id: int) -> list[Query]:
        """Drop a query id; return the queries no other query id holds any more."""
        released: list[Query] = []
        for text in client.query_sets.pop(query_id):
            client.refs[text] -= 1
            if client.refs[text] == 0:
                del client.refs[text]
                released.append(client.compiled.pop(text))
        return released

    def _on_subscribe_multi(self, client: EmulatedClient, msg: m.SubscribeMulti) -> None:
        start = time.perf_counter()
        self._revive(client)
        texts = list(dict.fromkeys(self._expand(msg.query_strings, client.identity)))
        queries: list[Query] = []
        for text in texts:
            try:
                queries.append(self._compile(client, text))
            except SqlError as err:
                self._subscription_error(
                    client, err.subscription_text(text), msg.request_id, msg.query_id, start
                )
                return
        if msg.query_id in client.query_sets:
            self._subscription_error(
                client, self._exists_text(client, msg.query_id), msg.request_id, msg.query_id, start
            )
            return
        added = self._hold(client, msg.query_id, queries)
        self._send(
            client,
            m.SubscribeMultiApplied(
                msg.request_id, micros_since(start), msg.query_id, self._snapshot_update(added)
            ),
        )

    def _query_rows(self, query: Query, *, deletes: bool) -> m.SubscribeRows:
        """A query's current rows (stored form), as ``SubscribeApplied``/``UnsubscribeApplied`` carry them."""
        rows = self._rows_b(query, query.rows(self.db))
        update = m.QueryUpdate(deletes=rows) if deletes else m.QueryUpdate(inserts=rows)
        table = m.TableUpdate(query.table.table_id, query.table_name, len(rows), (update,))
        return m.SubscribeRows(query.table.table_id, query.table_name, table)

    def _can_unsubscribe(self, client: EmulatedClient, msg: m.Unsubscribe | m.UnsubscribeMulti,
                         start: float) -> bool:
        """Answer the unsubscribes the server refuses (§5.6, §7.3) with their SubscriptionError."""
        if client.dropped:
            error = f"Client not found: {self._client_debug(client)}"
        elif msg.query_id not in client.query_sets:
            error = self._not_found_text(client, msg.query_id)
        else:
            return True
        self._subscription_error(client, error, msg.request_id, msg.query_id, start)
        return False

    def _on_unsubscribe(self, client: EmulatedClient, msg: m.Unsubscribe) -> None:
        start = time.perf_counter()
        if not self._can_unsubscribe(client, msg, start):
            return
        released = self._release(client, msg.query_id)
        if len(released) != 1:
            self._subscription_error(client, "Internal error", msg.request_id, msg.query_id, start)
            return
        query = released[0]
        self._send(
            client,
            m.UnsubscribeApplied(
                msg.request_id,
                micros_since(start),
                msg.query_id,
                self._query_rows(query, deletes=True),
            ),
        )

    def _on_unsubscribe_multi(self, client: EmulatedClient, msg: m.UnsubscribeMulti) -> None:
        start = time.perf_counter()
        if not self._can_unsubscribe(client, msg, start):
            return
        released = self._release(client, msg.query_id)
        self._send(
            client,
            m.UnsubscribeMultiApplied(
                msg.request_id,
                micros_since(start),
                msg.query_id,
                self._snapshot_update(released, deletes=True),
            ),
        )

    def _on_one_off(self, client: EmulatedClient, msg: m.OneOffQuery) -> None:
        start = time.perf_counter()
        try:
            query = self._compile(client, msg.query_string, subscription=False)
        except SqlError as err:
            self._send(
                client,
                m.OneOffQueryResponse(msg.message_id, str(err), (), TimeDuration(micros_since(start))),
            )
            return
        rows = self._rows_b(query, query.rows(self.db))
        self._send(
            client,
            m.OneOffQueryResponse(
                msg.message_id,
                None,
                (m.OneOffTable(query.table_name, rows),),
                TimeDuration(micros_since(start)),
            ),
        )

    def _delta_for(
        self, client: EmulatedClient, tx: Transaction, changes: Mapping[str, tuple[list[Any], list[Any]]]
    ) -> m.DatabaseUpdate:
        """Per table (once each), one QueryUpdate per held query whose result changed (spec §7.3)."""
        held: list[Query] = [client.compiled[t] for t in client.refs if t in client.compiled]
        held += list(client.legacy.values())
        per_table: dict[str, list[m.QueryUpdate]] = {}
        for query in held:
            if not query.joined_tables() & changes.keys():
                continue
            store = self.db.stores[query.table_name]
            if query.is_join:
                before = query.rows(_Before(self.db, changes))
                after = query.rows(self.db)
                deleted = _minus(before, after)
                inserted = _minus(after, before)
                encode = store.encoder_b  # join rows come from committed tables: stored form
            else:
                deleted_rows, inserted_rows = changes.get(query.table_name, ([], []))
                deleted = [r for r in deleted_rows if query.matches(r)]
                inserted = [r for r in inserted_rows if query.matches(r)]
                encode = store.encoder_c
            if not deleted and not inserted:
                continue
            per_table.setdefault(query.table_name, []).append(
                m.QueryUpdate(
                    tuple(dumps(encode(r)) for r in deleted), tuple(dumps(encode(r)) for r in inserted)
                )
            )
        tables = []
        for name, updates in per_table.items():
            table = self.module.tables[name]
            count = sum(len(u.deletes) + len(u.inserts) for u in updates)
            tables.append(m.TableUpdate(table.table_id, name, count, tuple(updates)))
        return m.DatabaseUpdate(tuple(tables))


def _minus(left: Sequence[Any], right: Sequence[Any]) -> list[Any]:
    """Multiset difference, keeping order."""
    remaining: dict[Any, int] = {}
    for row in right:
        remaining[row] = remaining.get(row, 0) + 1
    out = []
    for row in left:
        if remaining.get(row, 0) > 0:
            remaining[row] -= 1
        else:
            out.append(row)
    return out


class _Before:
    """The database as it was before a transaction (for join deltas): current rows minus the changes."""

    def __init__(self, db: Database, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> None:
        self._db = db
        self._changes = changes

    def rows(self, table: str) -> list[Any]:
        deleted, inserted = self._changes.get(table, ([], []))
        gone = set(inserted)
        return [r for r in self._db.rows(table) if r not in gone] + list(deleted)
