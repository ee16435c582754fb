"""Convert the schema's generated rows to a user-supplied row type, after checking it fits.

Private helper of ``table_diffs`` and ``LiveTable``: users may bring their own dataclass or
NamedTuple per table, and a mismatch should fail with the column names, not with a TypeError later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol.sats import field_name
from rx_spacetimedb.protocol.schema import ModuleSchema

__all__ = ["RowConverters", "field_names", "row_converter"]


def field_names(row_type: type) -> tuple[str, ...]:
    """The constructor fields of a dataclass or NamedTuple, in order."""
    if dataclasses.is_dataclass(row_type):
        return tuple(f.name for f in dataclasses.fields(row_type) if f.init)
    fields = getattr(row_type, "_fields", None)
    if issubclass(row_type, tuple) and isinstance(fields, tuple):
        return tuple(str(f) for f in fields)
    raise SchemaError(f"row_type {row_type.__name__} must be a dataclass or a NamedTuple")


def _values(row: Any, columns: tuple[str, ...] | None) -> list[Any]:
    if isinstance(row, tuple):
        return list(row)
    if dataclasses.is_dataclass(row) or columns is None:
        return [getattr(row, f.name) for f in dataclasses.fields(row)]
    return [getattr(row, c) for c in columns]  # a schema row class of another kind


def row_converter(schema: ModuleSchema | None, table: str, row_type: type | None) -> Callable[[Any], Any]:
    """A function from a decoded row of ``table`` to ``row_type`` (identity when None).

    Raises:
        SchemaError: the table is unknown, or ``row_type`` has other fields than the table's columns.
    """
    if schema is not None:
        schema.table(table)
    if row_type is None or (schema is not None and schema.row_class(table) is row_type):
        return lambda row: row
    names = field_names(row_type)
    columns = tuple(field_name(n) for n in schema.row_product(table).names) if schema is not None else None
    if columns is not None and names != columns:
        raise SchemaError(f"row_type {row_type.__name__} of table {table!r} has fields {list(names)}, "
                          f"the table has columns {list(columns)} (same names, same order)")

    def convert(row: Any) -> Any:
        return row if isinstance(row, row_type) else row_type(*_values(row, columns))

    return convert


class RowConverters:
    """The row converter of one table for the schema at hand, checked once per schema.

    A stream's schema is known only when its messages say (a connection fetches it on connect).
    """

    def __init__(self, table: str, row_type: type[Any] | None) -> None:
        self._table, self._row_type = table, row_type
        self._checked: tuple[ModuleSchema | None, Callable[[Any], Any] | None] | None = None

    def get(self, schema: ModuleSchema | None) -> Callable[[Any], Any] | None:
        """None when rows stay as decoded; raises SchemaError for an unknown table or a bad row type."""
        checked = self._checked
        if checked is not None and checked[0] is schema:
            return checked[1]
        convert = row_converter(schema, self._table, self._row_type)
        self._checked = (schema, None if self._row_type is None else convert)
        return self._checked[1]
