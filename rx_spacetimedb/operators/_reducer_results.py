"""The ``reducer_results`` operator: reducer calls as typed results with their decoded arguments.

A ``TransactionUpdate`` mixes the outcome, the caller and the argument text; users want "who called
what with which arguments, and did it work", filtered to one reducer or to their own calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from reactivex import Observable, abc

from rx_spacetimedb.cache import SchemaSource, resolve_schema
from rx_spacetimedb.delivery import delivery_of
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.operators._fold import subscribe_with_origin
from rx_spacetimedb.protocol.messages import (
    Committed,
    DatabaseUpdate,
    Failed,
    IdentityToken,
    TransactionUpdate,
)
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.values import ConnectionId, Identity, TimeDuration, Timestamp

__all__ = ["ReducerResult", "ReducerStatus", "reducer_results"]

log = logging.getLogger(__name__)

ReducerStatus = Literal["committed", "failed", "out_of_energy"]

ConnectionIdSource = ConnectionId | Callable[[], ConnectionId | None]


@dataclass(frozen=True, slots=True)
class ReducerResult:
    """One reducer call as the server reported it (spec §6.5, §7.4).

    ``args`` is the decoded parameters object (fields named like the parameters), or None when
    there is no schema or the text does not decode (e.g. the ``"[]"`` of a call the server could not
    start); ``raw_args`` always keeps the text. ``reducer`` is ``""`` for transactions that no
    reducer made (SQL DML, procedure commits).
    """

    reducer: str
    args: Any
    status: ReducerStatus
    error: str | None
    caller_identity: Identity
    caller_connection_id: ConnectionId
    timestamp: Timestamp
    energy_quanta_used: int
    duration: TimeDuration
    request_id: int
    reducer_id: int
    raw_args: str = field(repr=False)
    message: TransactionUpdate = field(repr=False, compare=False)

    @property
    def committed(self) -> bool:
        """True when the reducer committed."""
        return self.status == "committed"

    @property
    def update(self) -> DatabaseUpdate | None:
        """The committed changes to subscribed rows (raw; ``table_diffs`` decodes them)."""
        status = self.message.status
        return status.update if isinstance(status, Committed) else None

    @classmethod
    def from_message(cls, message: TransactionUpdate, schema: SchemaSource | None = None) -> ReducerResult:
        """Build the result of one ``TransactionUpdate``, decoding the args when the schema can."""
        call = message.reducer_call
        status = message.status
        args: Any = None
        if schema is not None and call.reducer_name:
            try:
                args = resolve_schema(schema).decode_reducer_args(call.reducer_name, call.args)
            except Exception as err:  # unknown reducer or undecodable text: keep the raw args
                log.debug("args of %r not decoded: %s", call.reducer_name, err)
        return cls(
            reducer=call.reducer_name,
            args=args,
            status=("committed" if isinstance(status, Committed)
                    else "failed" if isinstance(status, Failed) else "out_of_energy"),
            error=status.message if isinstance(status, Failed) else None,
            caller_identity=message.caller_identity,
            caller_connection_id=message.caller_connection_id,
            timestamp=message.timestamp,
            energy_quanta_used=message.energy_quanta_used.quanta,
            duration=message.total_host_execution_duration,
            request_id=call.request_id,
            reducer_id=call.reducer_id,
            raw_args=call.args,
            message=message,
        )


def reducer_results(
    name: str | None = None,
    *,
    own: bool = False,
    schema: SchemaSource | None = None,
    connection_id: ConnectionIdSource | None = None,
) -> Callable[[Observable[Any]], Observable[ReducerResult]]:
    """The reducer calls in a message stream as ``ReducerResult`` values.

    On a connection's stream it needs no argument: each message carries the schema that decodes
    the arguments and the connection id that ``own`` compares with. Only full ``TransactionUpdate``
    messages carry reducer details; ``TransactionUpdateLight`` (other clients' calls on v10 modules)
    does not, so it emits nothing here.

    ::

        source:                       --I--T(Set,ok)--T(Create,failed)--L--|
        reducer_results():            -----R(Set)-----R(Create)------------|
        reducer_results("Create"):    ----------------R(Create)------------|

    Args:
        name: keep only this reducer's calls (canonical name as in the schema).
        own: keep only calls made by this connection: ``caller_connection_id`` equal to the
            connection id of the socket the message came on (off a connection: of the stream's
            latest ``IdentityToken``, or ``connection_id``).
        schema: the module schema (or a function returning it), for a stream with no connection.
        connection_id: this connection's id, or a function returning it, for ``own`` on a stream
            with no connection and no ``IdentityToken``.

    Returns:
        An operator function ``Observable[ServerMessage] -> Observable[ReducerResult]``.

    Raises:
        SchemaError: ``name`` is not a reducer of the schema (at call time with a schema object,
            at subscribe time on a connection that knows its schema).
        TypeError (on the stream, at subscribe time): no connection behind the stream and no
            ``schema``.
    """
    if name is not None and isinstance(schema, ModuleSchema):
        schema.reducer(name)

    def _reducer_results(source: Observable[Any]) -> Observable[ReducerResult]:
        def subscribe(observer: abc.ObserverBase[ReducerResult],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            seen: list[ConnectionId] = []

            def mine() -> ConnectionId | None:
                if connection_id is not None:
                    return connection_id() if callable(connection_id) else connection_id
                return seen[-1] if seen else None

            def on_next(message: Any) -> None:
                if isinstance(message, IdentityToken):
                    seen[:] = [message.connection_id]
                    return
                if not isinstance(message, TransactionUpdate):
                    return
                if name is not None and message.reducer_call.reducer_name != name:
                    return
                delivery = delivery_of(message)
                if delivery is not None:
                    if own and message.caller_connection_id != delivery.connection_id:
                        return
                    observer.on_next(ReducerResult.from_message(message, delivery.schema))
                    return
                if own and message.caller_connection_id != mine():
                    return
                observer.on_next(ReducerResult.from_message(message, schema))

            subscription, origin = subscribe_with_origin(
                source, observer, scheduler, on_next, needs_origin=schema is None,
                operator="reducer_results")
            if name is not None and origin is not None and origin.schema is not None:
                try:
                    origin.schema.reducer(name)
                except SchemaError as err:
                    subscription.dispose()
                    observer.on_error(err)
            return subscription

        return Observable(subscribe)

    return _reducer_results
