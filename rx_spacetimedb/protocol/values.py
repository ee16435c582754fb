"""SATS special value types: Identity, ConnectionId, Timestamp, TimeDuration, Uuid, ScheduleAt.

They are plain immutable wrappers around exact integers (the wire's u256/u128/i64), with the
conversions users expect (hex, ``datetime``, ``timedelta``, ``uuid.UUID``) and readable reprs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "ConnectionId",
    "EnergyQuanta",
    "Identity",
    "ScheduleAt",
    "SumValue",
    "TimeDuration",
    "Timestamp",
    "Uuid",
]

_U256_MAX = (1 << 256) - 1
_U128_MAX = (1 << 128) - 1
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_range(cls: str, value: object, low: int, high: int) -> None:
    if type(value) is not int:
        raise TypeError(f"{cls} takes an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{cls} out of range: {value}")


def _parse_hex(cls: str, text: str, digits: int) -> int:
    body = text[2:] if text[:2] in ("0x", "0X") else text
    if not body or len(body) > digits:
        raise ValueError(f"{cls} needs 1 to {digits} hex digits, got {text!r}")
    try:
        return int(body, 16)
    except ValueError:
        raise ValueError(f"{cls} is not hex: {text!r}") from None


@dataclass(frozen=True, slots=True, order=True)
class Identity:
    """A 256-bit SpacetimeDB identity; prints as 64 lowercase hex digits."""

    value: int

    def __post_init__(self) -> None:
        _check_range("Identity", self.value, 0, _U256_MAX)

    @classmethod
    def from_hex(cls, text: str) -> Identity:
        """Parse ``0x``-prefixed or bare hex (any case, leading zeros optional)."""
        return cls(_parse_hex("Identity", text, 64))

    @property
    def hex(self) -> str:
        """The 64-digit lowercase hex form used in URLs, headers and HTTP bodies."""
        return f"{self.value:064x}"

    def to_bytes(self) -> bytes:
        """Big-endian 32 bytes."""
        return self.value.to_bytes(32, "big")

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"Identity(0x{self.hex})"


@dataclass(frozen=True, slots=True, order=True)
class ConnectionId:
    """A 128-bit connection id; 0 means "no connection" (scheduled reducers, system work)."""

    value: int

    def __post_init__(self) -> None:
        _check_range("ConnectionId", self.value, 0, _U128_MAX)

    @classmethod
    def from_hex(cls, text: str) -> ConnectionId:
        """Parse the 32-digit big-endian hex form."""
        return cls(_parse_hex("ConnectionId", text, 32))

    @property
    def hex(self) -> str:
        """32 lowercase hex digits."""
        return f"{self.value:032x}"

    def __bool__(self) -> bool:
        return self.value != 0

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"ConnectionId(0x{self.hex})"


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """Microseconds since the Unix epoch (signed: before 1970 is negative)."""

    micros_since_epoch: int

    def __post_init__(self) -> None:
        _check_range("Timestamp", self.micros_since_epoch, _I64_MIN, _I64_MAX)

    @classmethod
    def from_datetime(cls, value: datetime) -> Timestamp:
        """Convert an aware ``datetime`` (a naive one is taken as UTC) exactly, to the microsecond."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return cls((value - _EPOCH) // timedelta(microseconds=1))

    @classmethod
    def now(cls) -> Timestamp:
        """The current time."""
        return cls(time.time_ns() // 1000)

    def to_datetime(self) -> datetime:
        """An aware UTC ``datetime`` (raises OverflowError outside datetime's years 1..9999)."""
        return _EPOCH + timedelta(microseconds=self.micros_since_epoch)

    def __repr__(self) -> str:
        try:
            shown = self.to_datetime().isoformat().replace("+00:00", "Z")
        except OverflowError:
            shown = f"{self.micros_since_epoch}us"
        return f"Timestamp({shown})"


@dataclass(frozen=True, slots=True, order=True)
class TimeDuration:
    """A signed duration in microseconds."""

    micros: int

    def __post_init__(self) -> None:
        _check_range("TimeDuration", self.micros, _I64_MIN, _I64_MAX)

    @classmethod
    def from_timedelta(cls, value: timedelta) -> TimeDuration:
        """Convert exactly, to the microsecond."""
        return cls(value // timedelta(microseconds=1))

    def to_timedelta(self) -> timedelta:
        """The same duration as a ``timedelta``."""
        return timedelta(microseconds=self.micros)

    def __repr__(self) -> str:
        return f"TimeDuration({self.micros}us)"


@dataclass(frozen=True, slots=True, order=True)
class Uuid:
    """A 128-bit UUID as SpacetimeDB stores it (``__uuid__: u128``)."""

    value: int

    def __post_init__(self) -> None:
        _check_range("Uuid", self.value, 0, _U128_MAX)

    @classmethod
    def from_uuid(cls, value: uuid.UUID) -> Uuid:
        """Wrap a standard library UUID."""
        return cls(value.int)

    def to_uuid(self) -> uuid.UUID:
        """The standard library UUID with the same 128 bits."""
        return uuid.UUID(int=self.value)

    def __str__(self) -> str:
        return str(self.to_uuid())

    def __repr__(self) -> str:
        return f"Uuid({self.to_uuid()})"


@dataclass(frozen=True, slots=True)
class ScheduleAt:
    """When a scheduled reducer runs: every ``TimeDuration`` (Interval) or at a ``Timestamp`` (Time)."""

    value: TimeDuration | Timestamp

    def __post_init__(self) -> None:
        if not isinstance(self.value, TimeDuration | Timestamp):
            raise TypeError("ScheduleAt takes a TimeDuration or a Timestamp")

    @property
    def is_interval(self) -> bool:
        """True for the ``Interval`` variant (tag 0), False for ``Time`` (tag 1)."""
        return isinstance(self.value, TimeDuration)

    def __repr__(self) -> str:
        kind = "Interval" if self.is_interval else "Time"
        return f"ScheduleAt.{kind}({self.value!r})"


@dataclass(frozen=True, slots=True)
class SumValue:
    """A value of a user enum (SATS sum): the variant's name and tag, and its payload.

    Unit variants carry ``value=()``. Options are not SumValues: they decode to the value or None.
    """

    name: str
    value: Any = ()
    tag: int = field(default=-1, compare=False)

    def __repr__(self) -> str:
        return self.name if self.value == () else f"{self.name}({self.value!r})"


@dataclass(frozen=True, slots=True)
class EnergyQuanta:
    """Energy a transaction used (informational, u128)."""

    quanta: int
