"""The special value types: exact ranges, conversions, readable reprs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rx_spacetimedb import types as public_types
from rx_spacetimedb.protocol import (
    ConnectionId,
    EnergyQuanta,
    Identity,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    Uuid,
)

U256_MAX = (1 << 256) - 1
U128_MAX = (1 << 128) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def test_seed_names_importable_from_rx_spacetimedb_types() -> None:
    for name in ("IdentityToken", "InitialSubscription", "SubscribeApplied", "UnsubscribeApplied",
                 "SubscriptionError", "TransactionUpdate", "OneOffQueryResponse", "TableUpdate",
                 "ReducerCallInfo", "Timestamp"):
        assert hasattr(public_types, name), name
    assert public_types.Timestamp is Timestamp


def test_identity_hex_is_left_padded_to_64_digits() -> None:
    small = Identity(0x2A)
    assert small.hex == "0" * 62 + "2a"
    assert str(small) == small.hex
    assert repr(small) == f"Identity(0x{'0' * 62}2a)"
    assert Identity.from_hex("0x2A") == small == Identity.from_hex("2a")
    assert Identity.from_hex("0x" + small.hex) == small
    assert small.to_bytes() == bytes(31) + b"\x2a"
    assert Identity(U256_MAX).hex == "f" * 64


@pytest.mark.parametrize("bad", [-1, U256_MAX + 1])
def test_identity_range(bad: int) -> None:
    with pytest.raises(ValueError):
        Identity(bad)


def test_identity_rejects_non_int_and_bad_hex() -> None:
    with pytest.raises(TypeError):
        Identity("0x2a")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Identity(True)
    for text in ("", "0x", "xyz", "0x" + "1" * 65):
        with pytest.raises(ValueError):
            Identity.from_hex(text)


def test_connection_id() -> None:
    big = ConnectionId(41279989226247141793968051798400034689)
    assert big.hex == "1f0e3c9ab24d7e6158c4a0f2d9b3e781"
    assert ConnectionId.from_hex(big.hex) == big
    assert repr(big) == "ConnectionId(0x1f0e3c9ab24d7e6158c4a0f2d9b3e781)"
    assert not ConnectionId(0) and big
    assert ConnectionId(U128_MAX).hex == "f" * 32
    with pytest.raises(ValueError):
        ConnectionId(U128_MAX + 1)


def test_timestamp_datetime_conversions_exact_to_the_microsecond() -> None:
    ts = Timestamp(1787217300123456)
    assert ts.to_datetime() == datetime(2026, 8, 20, 9, 15, 0, 123456, tzinfo=UTC)
    assert Timestamp.from_datetime(ts.to_datetime()) == ts
    assert repr(ts) == "Timestamp(2026-08-20T09:15:00.123456Z)"
    # naive datetimes are UTC; other zones convert
    assert Timestamp.from_datetime(datetime(2026, 8, 20, 9, 15, 0, 123456)) == ts
    plus2 = timezone(timedelta(hours=2))
    assert Timestamp.from_datetime(datetime(2026, 8, 20, 11, 15, 0, 123456, tzinfo=plus2)) == ts


def test_negative_timestamps_are_before_1970() -> None:
    assert Timestamp(-1).to_datetime() == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert Timestamp.from_datetime(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == Timestamp(-1)
    assert Timestamp(-1) < Timestamp(0) < Timestamp(1)
    # outside datetime's range the repr still works
    assert repr(Timestamp(I64_MIN)) == f"Timestamp({I64_MIN}us)"
    with pytest.raises(OverflowError):
        Timestamp(I64_MAX).to_datetime()
    with pytest.raises(ValueError):
        Timestamp(I64_MAX + 1)


def test_timestamp_now_is_current() -> None:
    before = datetime.now(UTC)
    now = Timestamp.now().to_datetime()
    assert before - timedelta(seconds=1) <= now <= datetime.now(UTC) + timedelta(seconds=1)


def test_time_duration() -> None:
    assert TimeDuration(1312).to_timedelta() == timedelta(microseconds=1312)
    assert TimeDuration.from_timedelta(timedelta(seconds=-1, microseconds=1)) == TimeDuration(-999999)
    assert repr(TimeDuration(-5)) == "TimeDuration(-5us)"
    with pytest.raises(ValueError):
        TimeDuration(I64_MIN - 1)


def test_uuid() -> None:
    std = uuid.UUID("5e8b7c34-0d2f-4c8e-9a61-7f3c2a9e1b4d")
    value = Uuid.from_uuid(std)
    assert value.value == std.int and value.to_uuid() == std
    assert str(value) == str(std) and repr(value) == f"Uuid({std})"
    assert Uuid(U128_MAX).to_uuid() == uuid.UUID(int=U128_MAX)


def test_schedule_at() -> None:
    interval = ScheduleAt(TimeDuration(60_000_000))
    at = ScheduleAt(Timestamp(0))
    assert interval.is_interval and not at.is_interval
    assert repr(interval) == "ScheduleAt.Interval(TimeDuration(60000000us))"
    assert repr(at) == "ScheduleAt.Time(Timestamp(1970-01-01T00:00:00Z))"
    with pytest.raises(TypeError):
        ScheduleAt(5)  # type: ignore[arg-type]


def test_sum_value_repr_and_equality_ignores_tag() -> None:
    assert repr(SumValue("Red")) == "Red"
    assert repr(SumValue("Rgb", (1, 2, 3), 2)) == "Rgb((1, 2, 3))"
    assert SumValue("Red", (), 0) == SumValue("Red")
    assert SumValue("Red") != SumValue("Blue")


def test_values_are_frozen_and_hashable() -> None:
    values = {Identity(1), ConnectionId(1), Timestamp(1), TimeDuration(1), Uuid(1),
              ScheduleAt(Timestamp(1)), SumValue("A"), EnergyQuanta(1)}
    assert len(values) == 8
    with pytest.raises(AttributeError):
        Identity(1).value = 2  # type: ignore[misc]
