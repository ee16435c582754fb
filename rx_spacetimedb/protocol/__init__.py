"""The sans-I/O protocol layer: frames ⇄ dataclasses, SATS values, the module schema.

Pure functions and immutable values only: no sockets, threads, asyncio or Rx.
"""

from rx_spacetimedb.protocol.codec import (
    decode_client_message,
    decode_server_message,
    encode_client_message,
    encode_server_message,
)
from rx_spacetimedb.protocol.messages import *  # noqa: F403
from rx_spacetimedb.protocol.messages import __all__ as _messages_all
from rx_spacetimedb.protocol.schema import (
    ModuleSchema,
    ProcedureDef,
    ReducerDef,
    TableDef,
    decode_json,
)
from rx_spacetimedb.protocol.values import (
    ConnectionId,
    EnergyQuanta,
    Identity,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    Uuid,
)

__all__ = [
    *_messages_all,
    "ConnectionId",
    "EnergyQuanta",
    "Identity",
    "ModuleSchema",
    "ProcedureDef",
    "ReducerDef",
    "ScheduleAt",
    "SumValue",
    "TableDef",
    "TimeDuration",
    "Timestamp",
    "Uuid",
    "decode_client_message",
    "decode_json",
    "decode_server_message",
    "encode_client_message",
    "encode_server_message",
]
