"""What a generated module (``python -m rx_spacetimedb generate``) records, and how a schema binds it.

A generated module holds its classes and a *signature* of the schema it came from: one line of text
per named type, table, reducer and procedure. Its ``ROW_TYPES`` classes point back to that record,
so ``ModuleSchema(..., row_classes=ROW_TYPES)`` can check the live schema against it (SchemaError
naming the first difference) and decode every named product and sum into the generated classes,
through the same C fast path as the classes made at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol.sats import VariantClass, field_name, plain_fields, unit_variant
from rx_spacetimedb.protocol.types import (
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
)

if TYPE_CHECKING:
    from rx_spacetimedb.protocol.schema import ModuleSchema, TableDef

__all__ = ["SCHEMA_VERSION", "SPECIAL_NAMES", "Binding", "GeneratedModule", "bind", "first_difference",
           "schema_hash", "signature", "table_indexes", "type_names"]

SCHEMA_VERSION = 9
"""The schema format generated modules are made from (``RawModuleDefV9``)."""

_TAG = "_spacetimedb_generated_"  # the class attribute that points a generated class to its record

# The classes of the special products (``Identity``...), by their reserved field name.
SPECIAL_NAMES = {
    "__identity__": "Identity",
    "__connection_id__": "ConnectionId",
    "__timestamp_micros_since_unix_epoch__": "Timestamp",
    "__time_duration_micros__": "TimeDuration",
    "__uuid__": "Uuid",
}


def type_names(schema: ModuleSchema) -> dict[int, str]:
    """A name for every typespace entry: its declared name, its table's, else ``Type<index>``."""
    names = dict(schema.type_names)
    for table in schema.tables.values():
        names.setdefault(table.product_type_ref, table.name)
    for index in range(len(schema.typespace)):
        names.setdefault(index, f"Type{index}")
    return names


def _text(ty: AlgebraicType, names: Mapping[int, str], typespace: Sequence[AlgebraicType]) -> str:
    """A type as one canonical line (named types by name, so each is described once)."""
    if isinstance(ty, RefType):
        return names.get(ty.index, f"Ref{ty.index}")
    if isinstance(ty, PrimitiveType):
        return ty.name
    if isinstance(ty, ArrayType):
        return f"Array<{_text(ty.elem, names, typespace)}>"
    if isinstance(ty, ProductType):
        if ty.special is not None:
            return SPECIAL_NAMES[ty.special]
        return "{" + ", ".join(f"{n}: {_text(e.type, names, typespace)}"
                               for n, e in zip(ty.names, ty.elements, strict=True)) + "}"
    if ty.is_option:
        return f"Option<{_text(ty.variants[0].type, names, typespace)}>"
    if ty.is_schedule_at:
        return "ScheduleAt"
    parts = []
    for i, v in enumerate(ty.variants):
        payload = _text(v.type, names, typespace)
        parts.append(f"{v.name or i}" if payload == "{}" else f"{v.name or i}: {payload}")
    return "(" + " | ".join(parts) + ")"


def table_indexes(table: TableDef) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """(unique column sets, btree-indexed column sets) of a table, from its schema JSON."""
    unique: list[tuple[int, ...]] = []
    if table.primary_key:
        unique.append(tuple(table.primary_key))
    for constraint in table.raw.get("constraints", ()):
        columns = (constraint.get("data") or {}).get("Unique", {}).get("columns")
        if isinstance(columns, list) and tuple(columns) not in unique:
            unique.append(tuple(columns))
    btree: list[tuple[int, ...]] = []
    for index in table.raw.get("indexes", ()):
        columns = (index.get("algorithm") or {}).get("BTree")
        if isinstance(columns, list) and tuple(columns) not in btree:
            btree.append(tuple(columns))
    return tuple(unique), tuple(btree)


def signature(schema: ModuleSchema) -> dict[str, str]:
    """One line per named type, table, reducer and procedure: what a generated module relies on."""
    names = type_names(schema)
    ts = schema.typespace
    lines: dict[str, str] = {}
    for index, name in sorted(names.items(), key=lambda item: item[1]):
        lines[f"type {name}"] = _text(ts[index], names, ts)
    for table in schema.tables.values():
        unique, btree = table_indexes(table)
        details = [names.get(table.product_type_ref, "?"), "public" if table.public else "private"]
        details += [f"unique{list(c)}" for c in unique] + [f"btree{list(c)}" for c in btree]
        lines[f"table {table.name}"] = " ".join(details)
    for reducer in schema.reducers.values():
        lines[f"reducer {reducer.name}"] = _text(reducer.params, names, ts) + (
            f" {reducer.lifecycle}" if reducer.lifecycle else "")
    for procedure in schema.procedures.values():
        lines[f"procedure {procedure.name}"] = (
            f"{_text(procedure.params, names, ts)} -> {_text(procedure.return_type, names, ts)}")
    return dict(sorted(lines.items()))


def schema_hash(lines: Mapping[str, str]) -> str:
    """A short hash of a signature (16 hex digits): equal hashes, equal schemas for the generated code."""
    text = "\n".join(f"{key} = {value}" for key, value in sorted(lines.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_difference(generated: Mapping[str, str], live: Mapping[str, str]) -> str:
    """The first line (in sorted order) where a generated module's schema and a live one differ."""
    for key in sorted(set(generated) | set(live)):
        ours, theirs = generated.get(key), live.get(key)
        if ours == theirs:
            continue
        if theirs is None:
            return f"{key} is in the generated module, not in the database"
        if ours is None:
            return f"the database has {key} ({theirs}), the generated module does not"
        return f"{key}: generated for {ours}, the database has {theirs}"
    return "none"


@dataclass(frozen=True, slots=True)
class GeneratedModule:
    """The record a generated module keeps of its schema and classes.

    Args:
        schema_hash: ``schema_hash(signature)`` when it was generated.
        schema_version: the schema format (``SCHEMA_VERSION``).
        signature: ``signature(schema)`` when it was generated (names the first difference later).
        products: type name -> the class of that named product (table rows included).
        sums: type name -> the classes of its variants, in tag order (a unit variant's has no field,
            the others one field, ``value``).
    """

    schema_hash: str
    schema_version: int
    signature: Mapping[str, str]
    products: Mapping[str, type]
    sums: Mapping[str, tuple[type, ...]]

    def row_types(self, rows: Mapping[str, type]) -> dict[str, type]:
        """``ROW_TYPES``: table name -> row class, each class marked as this module's."""
        for cls in (*self.products.values(), *(c for v in self.sums.values() for c in v)):
            setattr(cls, _TAG, self)
        return dict(rows)


@dataclass(frozen=True, slots=True)
class Binding:
    """What a generated module adds to a schema's codec: classes and variants by typespace index."""

    classes: dict[int, type]
    variants: dict[int, list[VariantClass]]
    slotted: frozenset[type]


def bind(schema: ModuleSchema, row_classes: Mapping[str, type] | None) -> Binding | None:
    """The generated classes among ``row_classes`` bound to ``schema``'s typespace (None: none are).

    Raises:
        SchemaError: the schema is not the one the module was generated from (naming the first
            difference), or ``row_classes`` mixes two generated modules.
    """
    records = {id(r): r for cls in (row_classes or {}).values()
               if isinstance(r := getattr(cls, _TAG, None), GeneratedModule)}
    if not records:
        return None
    if len(records) > 1:
        raise SchemaError("row_classes: classes of more than one generated module")
    (record,) = records.values()
    if record.schema_version != SCHEMA_VERSION:
        raise SchemaError(f"the generated module is of schema format {record.schema_version}, this "
                          f"version of rx_spacetimedb reads {SCHEMA_VERSION}: regenerate it")
    live = signature(schema)
    if schema_hash(live) != record.schema_hash:
        raise SchemaError(
            f"the generated module (schema {record.schema_hash}) does not fit this database's schema "
            f"({schema_hash(live)}): {first_difference(record.signature, live)}; regenerate it with "
            "python -m rx_spacetimedb generate")
    by_name = {name: index for index, name in type_names(schema).items()}
    classes: dict[int, type] = {}
    variants: dict[int, list[VariantClass]] = {}
    slotted: set[type] = set()
    for name, cls in record.products.items():
        index = by_name[name]
        product = schema.typespace[index]
        assert isinstance(product, ProductType)
        classes[index] = cls
        # a plain class with exactly these fields: we may store them through the slots, as
        # for the classes made at run time
        if plain_fields(cls) == tuple(field_name(n) for n in product.names):
            slotted.add(cls)
    for name, members in record.sums.items():
        index = by_name[name]
        sum_type = schema.typespace[index]
        assert isinstance(sum_type, SumType)
        variants[index] = [
            unit_variant(cls) if not dataclasses.fields(cls)
            else VariantClass(cls, cls, operator.attrgetter("value"))
            for cls in members
        ]
    return Binding(classes, variants, frozenset(slotted))
