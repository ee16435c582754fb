"""Module schemas for the code generator's tests: a rich fixed one, random ones, and their row values."""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

from hypothesis import strategies as st

from rx_spacetimedb.protocol.codegen import generate_module
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.types import (
    BYTES,
    CONNECTION_ID,
    F64,
    I256,
    IDENTITY,
    INT_RANGES,
    PRIMITIVES,
    SCHEDULE_AT,
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U32,
    U256,
    UUID,
    AlgebraicType,
    ArrayType,
    Element,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
    Variant,
    option_of,
    type_to_json,
)
from rx_spacetimedb.protocol.values import SumValue

_modules = count()


def table_json(name: str, ref: int, pk: list[int], unique: list[int] = (), btree: list[int] = (),  # type: ignore[assignment]
               public: bool = True, scheduled: int | None = None) -> dict[str, Any]:
    """A table of the schema endpoint's JSON."""
    return {
        "name": name, "product_type_ref": ref, "primary_key": pk,
        "indexes": [{"name": {"some": f"{name}_{c}_idx"}, "accessor_name": {"some": str(c)},
                     "algorithm": {"BTree": [c]}} for c in dict.fromkeys([*pk, *unique, *btree])],
        "constraints": [{"name": {"some": f"{name}_{c}_key"}, "data": {"Unique": {"columns": [c]}}}
                        for c in dict.fromkeys([*pk, *unique])],
        "sequences": [],
        "schedule": {"none": []} if scheduled is None else {
            "some": {"name": f"{name}_sched", "reducer_name": "tick", "scheduled_at_column": scheduled}},
        "table_type": {"User": []},
        "table_access": {"Public": []} if public else {"Private": []},
    }


def schema_json(typespace: list[AlgebraicType], names: dict[int, str], tables: list[dict[str, Any]],
                reducers: dict[str, ProductType], procedures: dict[str, tuple[ProductType, AlgebraicType]]
                ) -> dict[str, Any]:
    """The schema endpoint's JSON (RawModuleDefV9) of these parts."""
    return {
        "typespace": {"types": [type_to_json(t) for t in typespace]},
        "tables": tables,
        "reducers": [{"name": n, "params": type_to_json(p)["Product"], "lifecycle": {"none": []}}
                     for n, p in reducers.items()],
        "types": [{"name": {"scope": [], "name": n}, "ty": i, "custom_ordering": True}
                  for i, n in names.items()],
        "misc_exports": [{"Procedure": {"name": n, "params": type_to_json(p)["Product"],
                                        "return_type": type_to_json(r)}}
                         for n, (p, r) in procedures.items()],
        "row_level_security": [],
    }


def product(*elements: tuple[str, AlgebraicType]) -> ProductType:
    return ProductType(tuple(Element(n, t) for n, t in elements))


def rich_schema() -> dict[str, Any]:
    """Sums with payloads, nested options, arrays of products, wide integers, a scheduled table, and
    names that need escaping (keywords, a leading digit, a column named like its type)."""
    vec2 = RefType(0)
    shape = RefType(1)
    typespace: list[AlgebraicType] = [
        product(("x", F64), ("y", F64)),
        SumType((Variant("Circle", F64), Variant("Rect", vec2), Variant("Empty", ProductType(())))),
        product(("class", U32), ("str", STRING), ("shape", shape), ("pos", option_of(option_of(vec2))),
                ("path", ArrayType(vec2)), ("big", U256), ("1st", I256), ("data", BYTES)),
        product(("scheduled_id", PrimitiveType("U64")), ("scheduled_at", SCHEDULE_AT)),
    ]
    names = {0: "Vec2", 1: "Shape", 2: "Entity", 3: "Tick"}
    tables = [table_json("Entity", 2, [0], btree=[1]), table_json("Tick", 3, [0], scheduled=1)]
    reducers = {"Move": product(("entity_id", U32), ("to", vec2)), "self": product(("self", STRING))}
    procedures = {"Area": (product(("shape", shape)), F64)}
    return schema_json(typespace, names, tables, reducers, procedures)


@contextmanager
def imported(source: str) -> Iterator[types.ModuleType]:
    """A generated module's source, imported under a fresh name (and forgotten afterwards)."""
    name = f"_generated_{next(_modules)}"
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[name]


def generated(data: dict[str, Any]) -> str:
    return generate_module(ModuleSchema.from_json(data))


# -- random schemas -----------------------------------------------------------------------------

# Names that need care: keywords, builtins, a leading digit, a space, dunders, the generated module's
# own names, names that escape or snake-case to the same identifier.
NAMES = ["id", "name", "class", "def", "None", "self", "1st", "int", "str", "value", "Identity",
         "ROW_TYPES", "Tables", "rows", "count", "live", "_conn", "match", "type", "Any", "a b", "__x",
         "tuple", "conn", "DoIt", "do_it", "Player", "player", "PlayerTable", "bytes", "Request",
         "dataclass", "builtins"]
VARIANTS = ["Circle", "Square", "class", "1x", "Empty", "value", "None", "Rect"]
_SPECIALS = [IDENTITY, CONNECTION_ID, TIMESTAMP, TIME_DURATION, UUID, SCHEDULE_AT, BYTES]


def _distinct_escaped(names: list[str]) -> bool:
    from rx_spacetimedb.protocol.sats import field_name

    return len({field_name(n) for n in names}) == len(names)


def draw_type(data: st.DataObject, refs: int, depth: int = 0) -> AlgebraicType:
    """A column type: a primitive, a special type, a ref to an earlier type, an option or an array."""
    kind = data.draw(st.sampled_from(["prim", "prim", "special", "ref", "option", "array"]
                                     if depth < 2 else ["prim", "special"]))
    if kind == "prim":
        return PrimitiveType(data.draw(st.sampled_from(PRIMITIVES)))
    if kind == "special":
        return data.draw(st.sampled_from(_SPECIALS))
    if kind == "ref":
        return RefType(data.draw(st.integers(0, refs - 1))) if refs else STRING
    inner = draw_type(data, refs, depth + 1)
    return option_of(inner) if kind == "option" else ArrayType(inner)


def random_schema(data: st.DataObject) -> dict[str, Any]:
    """A random module: named products and enums (refs point back only: no recursion), tables,
    reducers and a procedure."""
    count_types = data.draw(st.integers(1, 5))
    type_names = data.draw(st.lists(st.sampled_from(NAMES), min_size=count_types, max_size=count_types,
                                    unique=True))
    typespace: list[AlgebraicType] = []
    for index in range(count_types):
        if index and data.draw(st.booleans()):
            variants = data.draw(st.lists(st.sampled_from(VARIANTS), min_size=1, max_size=4, unique=True))
            typespace.append(SumType(tuple(
                Variant(v, ProductType(()) if data.draw(st.booleans()) else draw_type(data, index))
                for v in variants)))
        else:
            columns = data.draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True)
                                .filter(_distinct_escaped))
            typespace.append(product(*((c, draw_type(data, index)) for c in columns)))
    products = [i for i, t in enumerate(typespace) if isinstance(t, ProductType)]
    table_refs = data.draw(st.lists(st.sampled_from(products), min_size=1, unique=True))
    table_names = data.draw(st.lists(st.sampled_from(NAMES), min_size=len(table_refs),
                                     max_size=len(table_refs), unique=True))
    tables = []
    for name, ref in zip(table_names, table_refs, strict=True):
        width = len(typespace[ref].elements)  # type: ignore[union-attr]
        column = st.integers(0, width - 1)
        pk = data.draw(st.lists(column, max_size=1))
        unique = data.draw(st.lists(column, max_size=2, unique=True))
        btree = data.draw(st.lists(column, max_size=2, unique=True))
        elements = typespace[ref].elements  # type: ignore[union-attr]
        schedule = next((c for c, e in enumerate(elements) if e.type == SCHEDULE_AT), None)
        tables.append(table_json(name, ref, pk, unique, btree, data.draw(st.booleans()), schedule))
    reducers = {}
    for name in data.draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True)):
        params = data.draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True)
                           .filter(_distinct_escaped))
        reducers[name] = product(*((p, draw_type(data, len(typespace))) for p in params))
    procedures = {"Proc": (product(("arg", draw_type(data, len(typespace)))),
                           draw_type(data, len(typespace)))}
    names = dict(enumerate(type_names))
    return schema_json(typespace, names, tables, reducers, procedures)


_SPECIAL_RANGES = {"__identity__": "U256", "__connection_id__": "U128",
                   "__timestamp_micros_since_unix_epoch__": "I64", "__time_duration_micros__": "I64",
                   "__uuid__": "U128"}


def draw_value(data: st.DataObject, ty: AlgebraicType, typespace: list[AlgebraicType]) -> Any:
    """A JSON value (untyped form C) of ``ty``."""
    if isinstance(ty, RefType):
        return draw_value(data, typespace[ty.index], typespace)
    if isinstance(ty, PrimitiveType):
        if ty.name in INT_RANGES:
            return data.draw(st.integers(*INT_RANGES[ty.name]))
        if ty.name == "Bool":
            return data.draw(st.booleans())
        if ty.name == "String":
            return data.draw(st.text(max_size=4))
        # exact in f32 and short in decimal, so a written F32 reads back as the same float
        return data.draw(st.integers(-4000, 4000)) / 4
    if isinstance(ty, ArrayType):
        if ty.elem == PrimitiveType("U8"):
            return data.draw(st.binary(max_size=4)).hex()
        return [draw_value(data, ty.elem, typespace) for _ in range(data.draw(st.integers(0, 2)))]
    if isinstance(ty, ProductType):
        if ty.special is not None:
            return [data.draw(st.integers(*INT_RANGES[_SPECIAL_RANGES[ty.special]]))]
        return [draw_value(data, e.type, typespace) for e in ty.elements]
    tag = data.draw(st.integers(0, len(ty.variants) - 1))
    return [tag, draw_value(data, ty.variants[tag].type, typespace)]


def plain_value(value: Any, variant_tags: dict[type, int]) -> Any:
    """A value with its classes forgotten: products as tuples, enum values as (tag, payload)."""
    if isinstance(value, SumValue):
        return ("sum", value.tag, plain_value(value.value, variant_tags))
    if type(value) in variant_tags:
        return ("sum", variant_tags[type(value)], plain_value(getattr(value, "value", ()), variant_tags))
    if dataclasses.is_dataclass(value) and type(value).__module__ != "rx_spacetimedb.protocol.values":
        return ("product", tuple(plain_value(getattr(value, f.name), variant_tags)
                                 for f in dataclasses.fields(value)))
    if isinstance(value, tuple):
        return tuple(plain_value(v, variant_tags) for v in value)
    return value


__all__ = ["draw_value", "generated", "imported", "plain_value", "random_schema", "rich_schema",
           "schema_json", "table_json"]
