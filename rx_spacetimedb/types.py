"""The value and message types users handle, in one import: ``from rx_spacetimedb.types import ...``."""

from rx_spacetimedb.protocol.messages import (
    IdentityToken,
    InitialSubscription,
    OneOffQueryResponse,
    ReducerCallInfo,
    SubscribeApplied,
    SubscriptionError,
    TableUpdate,
    TransactionUpdate,
    UnsubscribeApplied,
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
    "ConnectionId",
    "EnergyQuanta",
    "Identity",
    "IdentityToken",
    "InitialSubscription",
    "OneOffQueryResponse",
    "ReducerCallInfo",
    "ScheduleAt",
    "SubscribeApplied",
    "SubscriptionError",
    "SumValue",
    "TableUpdate",
    "TimeDuration",
    "Timestamp",
    "TransactionUpdate",
    "UnsubscribeApplied",
    "Uuid",
]
