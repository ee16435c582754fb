"""Reducers, procedures and scheduled reducers: transactions, their commit, and who hears of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.jsontext import dumps, loads_exact
from rx_spacetimedb.protocol.sats import field_name
from rx_spacetimedb.protocol.types import ProductType
from rx_spacetimedb.protocol.values import (
    ConnectionId,
    EnergyQuanta,
    Identity,
    ScheduleAt,
    TimeDuration,
    Timestamp,
)
from rx_spacetimedb.testing._base import FATAL_PREFIX, NO_REDUCER_ID, EmulatedClient, micros_since
from rx_spacetimedb.testing._subscriptions import SubscriptionsMixin
from rx_spacetimedb.testing.module import (
    OutOfEnergyError,
    ProcedureContext,
    ReducerContext,
    ReducerError,
    Transaction,
)

__all__ = ["ReducersMixin"]

log = logging.getLogger("rx_spacetimedb.testing")

_T = TypeVar("_T")


class ReducersMixin(SubscriptionsMixin):
    """Runs reducers and procedures in transactions, makes commits durable, then broadcasts them."""

    def _decode_args(self, params: ProductType, text: str) -> tuple[Any, ...]:
        """Positional argument values from an args JSON text; ValueError with the reason otherwise."""
        try:
            value = loads_exact(text)
        except ValueError as err:
            raise ValueError(f"args are not JSON: {err}") from None
        if not params.elements:
            if value in ([], {}):
                return ()
            raise ValueError(f"expected no arguments, got {text}")
        decoder = self.schema.codec.decoder(params)
        try:
            decoded = decoder(value)
        except ProtocolError as err:
            raise ValueError(str(err)) from None
        return tuple(getattr(decoded, field_name(n)) for n in params.names)

    def _on_call_reducer(self, client: EmulatedClient, msg: m.CallReducer) -> None:
        spec = self.module.reducer_spec(msg.reducer)
        reducer_ids = self.schema.reducer_ids
        error: str | None = None
        values: tuple[Any, ...] = ()
        if spec is None:
            error = "no such reducer"
        elif spec.lifecycle is not None:
            error = f"can't directly call special {spec.lifecycle} lifecycle reducer"
        else:
            try:
                values = self._decode_args(spec.params, msg.args)
            except ValueError as err:
                error = f"invalid arguments for reducer {msg.reducer}: {err}"
        if error is not None:
            name = msg.reducer if msg.reducer.isidentifier() else ""
            self._send(
                client,
                m.TransactionUpdate(
                    m.Failed(error),
                    self.clock(),
                    client.identity,
                    client.connection_id,
                    m.ReducerCallInfo(name, reducer_ids.get(msg.reducer, NO_REDUCER_ID), "[]", 0),
                    EnergyQuanta(0),
                    TimeDuration(0),
                ),
            )
            return
        assert spec is not None
        self._run_reducer_tx(
            spec.name,
            values,
            client.identity,
            client.connection_id,
            msg.request_id,
            msg.args,
            caller=client,
            flags=msg.flags,
        )

    def _run_reducer_tx(
        self,
        name: str,
        values: Sequence[Any],
        identity: Identity,
        connection_id: ConnectionId | None,
        request_id: int,
        args_text: str,
        caller: EmulatedClient | None = None,
        flags: int = 0,
        finish: Callable[[ReducerContext], None] | None = None,
    ) -> m.UpdateStatus:
        """Run a reducer in a transaction, commit or roll back, and tell the clients.

        ``finish`` runs inside the same transaction after the reducer (the scheduler deletes one-shot
        schedule rows there).
        """
        spec = self.module.reducer_spec(name)
        assert spec is not None
        timestamp = self.clock()
        start = time.perf_counter()
        tx = self.db.begin()
        ctx = ReducerContext(identity, connection_id, timestamp, self.db.view(tx), self.identity)
        status: m.UpdateStatus
        try:
            spec.func(ctx, *values)
            if finish is not None:
                finish(ctx)
        except OutOfEnergyError:
            tx.rollback()
            status = m.OutOfEnergy()
        except Exception as err:
            tx.rollback()
            status = m.Failed(str(err) or type(err).__name__)
        else:
            status = self._commit(tx)
        micros = micros_since(start)
        info = m.ReducerCallInfo(name, self.schema.reducer_ids[name], args_text, request_id)
        energy = EnergyQuanta(1_000_000_000 if isinstance(status, m.OutOfEnergy) else micros * 1400)
        self._broadcast(
            tx,
            status,
            timestamp,
            identity,
            connection_id or ConnectionId(0),
            info,
            energy,
            TimeDuration(micros),
            caller,
            flags,
        )
        return status

    def _commit(self, tx: Transaction) -> m.UpdateStatus:
        """Make a successful transaction durable; Failed (and rolled back) if the disk refuses it."""
        try:
            self._persist(tx.changes())
        except OSError as err:
            tx.rollback()
            log.error("commit not durable, rolled back: %s", err)
            return m.Failed(f"the commit could not be written to the data directory: {err}")
        return m.Committed(m.DatabaseUpdate())

    def _system_tx(
        self, body: Callable[[ReducerContext], _T], caller: Identity | None = None, reducer_id: int = 0
    ) -> _T:
        """Run ``body`` as a transaction without a reducer (``with_tx``, procedures, SQL DML), broadcast it.

        The server reports these with an empty reducer name and id 0, or u32::MAX for SQL DML, whose
        caller is the SQL caller.
        """
        timestamp = self.clock()
        start = time.perf_counter()
        tx = self.db.begin()
        ctx = ReducerContext(self.identity, None, timestamp, self.db.view(tx), self.identity)
        try:
            result = body(ctx)
        except BaseException:
            tx.rollback()
            raise
        status = self._commit(tx)
        if isinstance(status, m.Failed):
            raise ReducerError(status.message)
        micros = micros_since(start)
        info = m.ReducerCallInfo("", reducer_id, "[]", 0)
        self._broadcast(
            tx,
            m.Committed(m.DatabaseUpdate()),
            timestamp,
            caller or self.identity,
            ConnectionId(0),
            info,
            EnergyQuanta(micros * 1400),
            TimeDuration(micros),
            None,
            0,
        )
        return result

    def _broadcast(
        self,
        tx: Transaction,
        status: m.UpdateStatus,
        timestamp: Timestamp,
        identity: Identity,
        connection_id: ConnectionId,
        info: m.ReducerCallInfo,
        energy: EnergyQuanta,
        duration: TimeDuration,
        caller: EmulatedClient | None,
        flags: int,
    ) -> None:
        """Send a transaction's outcome: full update to the caller, deltas to affected subscribers."""
        committed = isinstance(status, m.Committed)
        changes = tx.changes() if committed else {}
        if changes:
            self._reschedule(changes)
        for client in list(self.clients):
            if not client.connected:
                continue
            is_caller = client is caller
            has_delta = changes and not client.dropped
            update = self._delta_for(client, tx, changes) if has_delta else m.DatabaseUpdate()
            if is_caller and flags == m.FULL_UPDATE:
                final_status = m.Committed(update) if committed else status
                self._send(
                    client,
                    m.TransactionUpdate(
                        final_status, timestamp, identity, connection_id, info, energy, duration
                    ),
                )
                continue
            if not committed or not update.tables:
                continue
            if client.light or self.hide_reducer_details:
                self._send(client, m.TransactionUpdateLight(info.request_id, update))
            else:
                self._send(
                    client,
                    m.TransactionUpdate(
                        m.Committed(update), timestamp, identity, connection_id, info, energy, duration
                    ),
                )

    def _reschedule(self, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> None:
        """Follow a commit's changes to schedule tables: cancel deleted rows' timers, arm inserted ones."""
        if self._server is None or self._loop is None:
            return  # not serving yet: start_async arms every row
        for name, (deleted, inserted) in changes.items():
            if self.module.tables[name].schedule is None:
                continue
            store = self.db.stores[name]
            for row in deleted:
                timer = self._timers.pop((name, store.key(row)), None)
                if timer is not None:
                    timer.cancel()
            self._schedule_rows(name, inserted)

    def _schedule_rows(self, name: str, rows: Sequence[Any], repeat: bool = False) -> None:
        table = self.module.tables[name]
        assert table.schedule is not None and self._loop is not None
        store = self.db.stores[name]
        for row in rows:
            at: ScheduleAt = store.getters[table.schedule[1]](row)
            if isinstance(at.value, TimeDuration):
                delay = at.value.micros / 1_000_000
            else:
                delay = (at.value.micros_since_epoch - self.clock().micros_since_epoch) / 1_000_000
            key = store.key(row)
            old = self._timers.pop((name, key), None)
            if old is not None:
                old.cancel()
            self._timers[(name, key)] = self._loop.call_later(max(0.0, delay), self._fire, name, key)

    def _fire(self, name: str, key: Any) -> None:
        self._timers.pop((name, key), None)
        if not self._running.is_set():
            self._spawn(self._fire_when_running(name, key))
            return
        table = self.module.tables[name]
        assert table.schedule is not None
        store = self.db.stores[name]
        row = store.rows.get(key)
        if row is None:
            return
        reducer, column = table.schedule
        spec = self.module.reducer_spec(reducer)
        assert spec is not None
        one_shot = not isinstance(store.getters[column](row).value, TimeDuration)

        def finish(ctx: ReducerContext) -> None:
            if one_shot:
                ctx.db[name].delete(row)

        args = self.schema.encode_args(spec.params, [row])
        status = self._run_reducer_tx(reducer, (row,), self.identity, None, 0, args, finish=finish)
        if not isinstance(status, m.Committed) and one_shot:
            self._system_tx(lambda ctx: ctx.db[name].delete(row))  # a failed one-shot run is not retried
        current = store.rows.get(key)
        if current is not None and (name, key) not in self._timers:
            self._schedule_rows(name, [current])

    async def _fire_when_running(self, name: str, key: Any) -> None:
        await self._running.wait()
        self._fire(name, key)

    # procedures

    def _on_call_procedure(self, client: EmulatedClient, msg: m.CallProcedure) -> None:
        zero_time, zero_duration = Timestamp(0), TimeDuration(0)
        spec = self.module.procedure_spec(msg.procedure)
        if spec is None:
            self._send(
                client,
                m.ProcedureResult(
                    m.InternalError("No such procedure"), zero_time, zero_duration, msg.request_id
                ),
            )
            return
        try:
            values = self._decode_args(spec.params, msg.args)
        except ValueError as err:
            self._send(
                client,
                m.ProcedureResult(
                    m.InternalError(f"invalid arguments for procedure {msg.procedure}: {err}"),
                    zero_time,
                    zero_duration,
                    msg.request_id,
                ),
            )
            return
        timestamp = self.clock()
        start = time.perf_counter()
        ctx = ProcedureContext(
            client.identity,
            client.connection_id,
            timestamp,
            self.db.view(),
            self.identity,
            lambda body: self._system_tx(body),
        )
        status: m.ProcedureStatus
        try:
            result = spec.func(ctx, *values)
            text = dumps(self.schema.codec.encoder(spec.returns, "C")(result))
        except OutOfEnergyError:
            status = m.ProcedureOutOfEnergy()
        except Exception as err:
            status = m.InternalError(f"{FATAL_PREFIX}{str(err) or type(err).__name__}")
        else:
            self._send(
                client,
                m.ProcedureResult(
                    m.Returned(text), timestamp, TimeDuration(micros_since(start)), msg.request_id
                ),
            )
            return
        self._send(client, m.ProcedureResult(status, zero_time, zero_duration, msg.request_id))
