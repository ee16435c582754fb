"""Rows as plain data: column/value pairs, JSON-ready values and short text cells.

The command line and the notebook helpers both show rows of any table (generated dataclasses, user
NamedTuples, decoded JSON); one place decides how an ``Identity`` or a ``Timestamp`` reads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

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

__all__ = ["cell", "column_names", "plain", "row_items", "text_table"]

_SHORT_HEX = 16


def row_items(row: Any) -> list[tuple[str, Any]]:
    """The (column, value) pairs of a row, in column order, whatever class the row is."""
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return [(f.name, getattr(row, f.name)) for f in dataclasses.fields(row)]
    asdict = getattr(row, "_asdict", None)
    if callable(asdict):  # a NamedTuple
        return list(asdict().items())
    if isinstance(row, Mapping):
        return [(str(k), v) for k, v in row.items()]
    if isinstance(row, Sequence) and not isinstance(row, str | bytes):
        return [(str(i), v) for i, v in enumerate(row)]
    return [("value", row)]


def column_names(rows: Sequence[Any], row_class: type | None = None) -> list[str]:
    """Column names of the first row, or of ``row_class`` (a dataclass) when there are no rows."""
    if rows:
        return [name for name, _ in row_items(rows[0])]
    if row_class is not None and dataclasses.is_dataclass(row_class):
        return [f.name for f in dataclasses.fields(row_class)]
    fields = getattr(row_class, "_fields", None)
    return list(fields) if isinstance(fields, tuple) else []


def timestamp_text(value: Timestamp) -> str:
    """ISO 8601 in UTC with a ``Z`` (microseconds since the epoch when out of datetime's range)."""
    try:
        return value.to_datetime().isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{value.micros_since_epoch}us"


def plain(value: Any) -> Any:
    """A JSON-ready copy: hex for identities, ISO text for timestamps, dicts for products."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # as the server writes NaN/inf: null
    if isinstance(value, Identity | ConnectionId):
        return value.hex
    if isinstance(value, Timestamp):
        return timestamp_text(value)
    if isinstance(value, TimeDuration):
        return value.micros
    if isinstance(value, Uuid):
        return str(value)
    if isinstance(value, EnergyQuanta):
        return value.quanta
    if isinstance(value, ScheduleAt):
        return {"Interval" if value.is_interval else "Time": plain(value.value)}
    if isinstance(value, SumValue):
        return value.name if value.value == () else {value.name: plain(value.value)}
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) or isinstance(value, Mapping) or hasattr(value, "_asdict"):
        return {name: plain(v) for name, v in row_items(value)}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return str(value)


def cell(value: Any, *, short: bool = True) -> str:
    """Text for a table cell: strings bare, identities shortened (``short``), products inline."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Identity | ConnectionId):
        return value.hex[:_SHORT_HEX] + "…" if short else value.hex
    if isinstance(value, Timestamp):
        return timestamp_text(value)
    if isinstance(value, float | int | bool):
        return repr(value)
    if dataclasses.is_dataclass(value) or hasattr(value, "_asdict"):
        inner = ", ".join(f"{name}={cell(v, short=short)}" for name, v in row_items(value))
        return f"({inner})"
    if isinstance(value, SumValue | ScheduleAt | TimeDuration | Uuid):
        return repr(value)
    return str(plain(value))


def text_table(rows: Sequence[Any], columns: Sequence[str] | None = None, *, short: bool = True) -> str:
    """Rows as an aligned text table (numbers right-aligned) with a ``(N rows)`` footer."""
    names = list(columns) if columns is not None else column_names(rows)
    cells = [[cell(dict(row_items(row)).get(name), short=short) for name in names] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(dict(row_items(row)).get(name), int | float) for row in rows)
        for name in names
    ]
    widths = [max([len(name)] + [len(r[i]) for r in cells]) for i, name in enumerate(names)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return " " + " | ".join(parts).rstrip()

    out = []
    if names:
        out.append(line(names))
        out.append("-" + "-+-".join("-" * w for w in widths) + "-")
        out.extend(line(r) for r in cells)
    count = len(rows)
    out.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(out)
