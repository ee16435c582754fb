"""Write a typed Python module for one SpacetimeDB module schema (``python -m rx_spacetimedb generate``).

The output is one self-contained, readable file: a frozen slotted dataclass per named product (table
rows included), a class per variant of each user enum with a union alias for ``match``, ``ROW_TYPES``
for ``connect(row_types=...)``, and typed ``Reducers``, ``Procedures`` and ``Tables`` (live tables
and index lookups). It records the schema's signature (``protocol.generated``), so a database whose
schema moved on is refused at connect instead of decoding into the wrong classes.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol.generated import (
    SCHEMA_VERSION,
    SPECIAL_NAMES,
    schema_hash,
    signature,
    table_indexes,
    type_names,
)
from rx_spacetimedb.protocol.sats import field_name
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.types import (
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
)

__all__ = ["generate_module"]

_PRIMITIVE = {"Bool": "bool", "F32": "float", "F64": "float", "String": "str"}
# Names the generated module defines or imports itself: a type of the same name gets a "_" suffix.
_MODULE_NAMES = frozenset({
    "annotations", "dataclass", "Any", "Never", "TypeAlias", "BTreeIndex", "UniqueIndex", "Connection",
    "LiveTable", "Request", "GeneratedModule", "TransactionUpdate", "ConnectionId", "Identity",
    "ScheduleAt", "SumValue", "TimeDuration", "Timestamp", "Uuid", "SCHEMA_HASH", "SCHEMA_VERSION",
    "GENERATED", "ROW_TYPES", "Reducers", "Procedures", "Tables",
    "conn", "self",  # the parameters of the generated methods, whose bodies use annotations
    "rows", "count", "live",  # methods of the table classes, whose annotations name row classes
    *dir(builtins),
})
# What the generated code may import, by module, in the order ruff's isort wants.
_IMPORTS = (
    ("rx_spacetimedb.cache", ("BTreeIndex", "UniqueIndex")),
    ("rx_spacetimedb.connection", ("Connection",)),
    ("rx_spacetimedb.operators", ("LiveTable",)),
    ("rx_spacetimedb.protocol.generated", ("GeneratedModule",)),
    ("rx_spacetimedb.protocol.messages", ("TransactionUpdate",)),
    ("rx_spacetimedb.protocol.values", ("ConnectionId", "Identity", "ScheduleAt", "SumValue",
                                        "TimeDuration", "Timestamp", "Uuid")),
    ("rx_spacetimedb.requests", ("Request",)),
)
_BUILTIN_TYPES = frozenset({"bool", "bytes", "float", "int", "str", "tuple"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE_METHODS = frozenset({"rows", "count", "live"})


def snake_case(name: str) -> str:
    """``CreatePlayer`` -> ``create_player`` (then made a valid, non-keyword identifier)."""
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text).lower()
    return field_name(text)


class _Names:
    """Hands out distinct identifiers: a clash gets ``_2``, ``_3``..."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)

    def take(self, wanted: str) -> str:
        name = wanted
        if name in self._taken or keyword.iskeyword(name):
            name += "_"
        count = 2
        while name in self._taken:
            name, count = f"{wanted}_{count}", count + 1
        self._taken.add(name)
        return name


@dataclass
class _Ctx:
    schema: ModuleSchema
    names: dict[int, str]  # typespace index -> the schema's name of the type
    classes: dict[int, str]  # named product -> its class name
    aliases: dict[int, str]  # user enum -> its union alias name
    used: set[str] = field(default_factory=set)  # names the code refers to (what to import)

    def resolve(self, ty: AlgebraicType) -> AlgebraicType:
        return self.schema.codec.resolve(ty)

    def annotation(self, ty: AlgebraicType) -> str:
        """The Python type a value of ``ty`` decodes to, as annotation text."""
        text = self._annotation(ty)
        self.used.update(_IDENTIFIER.findall(text))
        return text

    def _annotation(self, ty: AlgebraicType) -> str:
        if isinstance(ty, RefType):
            if ty.index in self.classes:
                return self.classes[ty.index]
            if ty.index in self.aliases:
                return self.aliases[ty.index]
            return self._annotation(self.resolve(ty))
        if isinstance(ty, PrimitiveType):
            return _PRIMITIVE.get(ty.name, "int")
        if isinstance(ty, ArrayType):
            if self.resolve(ty.elem) == PrimitiveType("U8"):
                return "bytes"
            return f"tuple[{self._annotation(ty.elem)}, ...]"
        if isinstance(ty, ProductType):
            if ty.special is not None:
                return SPECIAL_NAMES[ty.special]
            return "tuple[()]" if not ty.elements else "Any"  # an anonymous product: a run-time class
        if ty.is_option:
            inner = self._annotation(ty.variants[0].type)
            return inner if inner.endswith("| None") else f"{inner} | None"
        if ty.is_schedule_at:
            return "ScheduleAt"
        return "SumValue"  # an anonymous enum (not in the typespace): decoded as SumValue


def _is_class_product(ty: AlgebraicType) -> bool:
    return isinstance(ty, ProductType) and ty.special is None and bool(ty.elements)


def _is_user_enum(ty: AlgebraicType) -> bool:
    return isinstance(ty, SumType) and not ty.is_option and not ty.is_schedule_at


def _str(text: str) -> str:
    """A Python string literal, double-quoted (ruff's style)."""
    body = repr(text)
    if body.startswith("'") and '"' not in text:
        body = '"' + body[1:-1].replace("\\'", "'") + '"'
    return body


def _wrapped(text: str, indent: str, width: int = 72) -> str:
    """A long string literal as implicitly concatenated pieces in parentheses (short lines)."""
    if len(text) <= width:
        return _str(text)
    pieces = [text[i:i + width] for i in range(0, len(text), width)]
    inner = f"\n{indent}    ".join(_str(p) for p in pieces)
    return f"(\n{indent}    {inner}\n{indent})"


def _fields(product: ProductType, where: str) -> list[str]:
    names = [field_name(n) for n in product.names]
    if len(set(names)) != len(names):
        raise SchemaError(f"{where}: columns {list(product.names)} map to the same Python name "
                          f"({names}); such a type has no Python class")
    return names


def generate_module(schema: ModuleSchema, *, source: str = "") -> str:
    """The source text of a typed module for ``schema``.

    Args:
        schema: the module schema (``ModuleSchema.from_json`` of the schema endpoint's JSON).
        source: where the schema came from, for the module's docstring (a file or a database).

    Raises:
        SchemaError: a type cannot be a Python class (two columns that escape to one name).
    """
    lines_of_sig = signature(schema)
    module_names = _Names(_MODULE_NAMES)
    type_name = type_names(schema)
    classes: dict[int, str] = {}
    aliases: dict[int, str] = {}
    for index, ty in enumerate(schema.typespace):
        if _is_class_product(ty):
            classes[index] = module_names.take(field_name(type_name[index]))
        elif _is_user_enum(ty):
            aliases[index] = module_names.take(field_name(type_name[index]))
    ctx = _Ctx(schema, type_name, classes, aliases)

    out: list[str] = [
        f"SCHEMA_HASH = {_str(schema_hash(lines_of_sig))}",
        f"SCHEMA_VERSION = {SCHEMA_VERSION}",
    ]
    exported = ["SCHEMA_HASH", "SCHEMA_VERSION"]

    # -- named products -------------------------------------------------------------------
    shadow_aliases: dict[str, str] = {}  # an annotation naming a type a field hides -> its alias
    rows_of = {t.product_type_ref: f"A row of the table {_str(t.name)[1:-1]}" for t in schema.tables.values()}
    for index, cls in classes.items():
        product = schema.typespace[index]
        assert isinstance(product, ProductType)
        fields = _fields(product, f"type {type_name[index]}")
        out += ["", "", "@dataclass(frozen=True, slots=True)", f"class {cls}:",
                f'    """{rows_of.get(index, "The type " + _str(type_name[index])[1:-1])}."""', ""]
        # A field named like a type (``str: str``) hides that type from the annotations of the
        # fields after it (mypy: "not valid as a type"): those name a module-level alias instead.
        for number, (name, element) in enumerate(zip(fields, product.elements, strict=True)):
            text = ctx.annotation(element.type)
            if not set(fields[:number]).isdisjoint(_IDENTIFIER.findall(text)):
                if text not in shadow_aliases:  # the whole annotation, so tuple[...] stays generic
                    shadow_aliases[text] = module_names.take(f"_{cls}_type{len(shadow_aliases) + 1}")
                text = shadow_aliases[text]
            out.append(f"    {name}: {text}")
        exported.append(cls)

    # -- user enums: a class per variant, and their union ---------------------------------
    sums: dict[str, list[str]] = {}
    for index, alias in aliases.items():
        sum_type = schema.typespace[index]
        assert isinstance(sum_type, SumType)
        members = []
        for tag, variant in enumerate(sum_type.variants):
            vname = variant.name or f"V{tag}"
            cls = module_names.take(alias + field_name(vname[:1].upper() + vname[1:]).lstrip("_"))
            payload = ctx.resolve(variant.type)
            out += ["", "", "@dataclass(frozen=True, slots=True)", f"class {cls}:",
                    f'    """Variant {_str(vname)[1:-1]} of {_str(type_name[index])[1:-1]}."""']
            if not (isinstance(payload, ProductType) and not payload.elements):
                out += ["", f"    value: {ctx.annotation(variant.type)}"]
            members.append(cls)
            exported.append(cls)
        union = " | ".join(members) if members else "Never"
        ctx.used.update(("TypeAlias", union))
        out += ["", "", f"{alias}: TypeAlias = {union}"]
        exported.append(alias)
        sums[type_name[index]] = members

    if shadow_aliases:
        out.append("")
        out += [f"{alias}: TypeAlias = {text}" for text, alias in shadow_aliases.items()]
        ctx.used.add("TypeAlias")

    # -- the record and ROW_TYPES ---------------------------------------------------------
    out += ["", "", "GENERATED = GeneratedModule(", "    schema_hash=SCHEMA_HASH,",
            "    schema_version=SCHEMA_VERSION,", "    signature={"]
    out += [f"        {_str(k)}: {_wrapped(v, '        ')}," for k, v in lines_of_sig.items()]
    out += ["    },"]
    out += _dict_arg("products", [f"{_str(type_name[i])}: {c}" for i, c in classes.items()])
    out += _dict_arg("sums", [f"{_str(n)}: ({', '.join(m)}{',' if len(m) == 1 else ''})"
                              for n, m in sums.items()])
    out += [")", "", "ROW_TYPES: dict[str, type] = GENERATED.row_types({"]
    out += [f"    {_str(t.name)}: {classes[t.product_type_ref]},"
            for t in schema.tables.values() if t.product_type_ref in classes]
    out += ["})"]
    exported += ["GENERATED", "ROW_TYPES"]

    out += _reducers(schema, ctx)
    out += _procedures(schema, ctx)
    out += _tables(schema, ctx, module_names)
    exported += ["Reducers", "Procedures", "Tables"]
    body = "\n".join(["__all__ = [", *(f"    {_str(n)}," for n in sorted(exported)), "]", "", *out])
    ctx.used.update(("dataclass", "GeneratedModule", "Connection"))
    return "\n".join([*_header(source, ctx.used), body]) + "\n"


def _header(source: str, used: set[str]) -> list[str]:
    """The docstring and the imports of the names the code uses (and no others: ruff's F401)."""
    out = [
        f'"""Typed rows, reducers and tables of a SpacetimeDB module{f" ({source})" if source else ""}.',
        "",
        "Generated by `python -m rx_spacetimedb generate`: do not edit. Regenerate it when the module",
        "changes; connecting with ROW_TYPES to a database whose schema differs raises SchemaError.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass",
    ]
    typing = [n for n in ("Any", "Never", "TypeAlias") if n in used]
    if typing:
        out.append(f"from typing import {', '.join(typing)}")
    out.append("")
    for module, names in _IMPORTS:
        wanted = [n for n in names if n in used]
        if len(wanted) > 3:
            out += [f"from {module} import (", *(f"    {n}," for n in wanted), ")"]
        elif wanted:
            out.append(f"from {module} import {', '.join(wanted)}")
    return [*out, ""]


def _dict_arg(name: str, entries: list[str]) -> list[str]:
    """``name={...},`` as a keyword argument, one entry a line."""
    if not entries:
        return [f"    {name}={{}},"]
    return [f"    {name}={{", *(f"        {e}," for e in entries), "    },"]


def _params(product: ProductType, ctx: _Ctx) -> tuple[list[str], list[str]]:
    """(the ``a: int`` parameters, the ``a`` arguments) of a call, names escaped and distinct."""
    names = _Names({"self"})
    params, args = [], []
    for name, element in zip(product.names, product.elements, strict=True):
        arg = names.take(field_name(name or "arg"))
        params.append(f"{arg}: {ctx.annotation(element.type)}")
        args.append(arg)
    return params, args


def _method_names(ctx: _Ctx) -> _Names:
    """Names for methods: one named like a type (``int``, ``Identity``, a class of the module) would
    hide it from the annotations of the methods after it."""
    imported = {n for _, names in _IMPORTS for n in names}
    return _Names({"_conn", "Any", "Never", *_BUILTIN_TYPES, *imported, *ctx.classes.values(),
                   *ctx.aliases.values()})


_WIDTH = 100  # longer generated lines are wrapped, one item a line


def _method(name: str, params: list[str], returns: str, doc: str, call: str, args: list[str]) -> list[str]:
    """A method that forwards its parameters to ``self._conn.<call>``, wrapped when long."""
    head = f"    def {name}(self{''.join(f', {p}' for p in params)}) -> {returns}:"
    if len(head) > _WIDTH:
        head = "\n".join([f"    def {name}(", "        self,", *(f"        {p}," for p in params),
                          f"    ) -> {returns}:"])
    body = f"        return self._conn.{call}[{', '.join(args)}])"
    if len(body) > _WIDTH:
        body = "\n".join([f"        return self._conn.{call}[", *(f"            {a}," for a in args),
                          "        ])"])
    return ["", head, f'        """{doc}"""', body]


def _reducers(schema: ModuleSchema, ctx: _Ctx) -> list[str]:
    out = ["", "", "class Reducers:",
           '    """The reducers, typed: each method returns the call\'s ``Request``, whose outcome is the',
           '    committed ``TransactionUpdate`` or a typed error (``ReducerFailed``...)."""', "",
           '    __slots__ = ("_conn",)', "",
           "    def __init__(self, conn: Connection) -> None:",
           "        self._conn = conn"]
    methods = _method_names(ctx)
    for reducer in schema.reducers.values():
        if reducer.lifecycle is not None:  # Init/OnConnect/OnDisconnect: the server calls them
            continue
        params, args = _params(reducer.params, ctx)
        ctx.used.update(("Request", "TransactionUpdate"))
        out += _method(methods.take(snake_case(reducer.name)), params, "Request[TransactionUpdate]",
                       f"Call the reducer {_str(reducer.name)[1:-1]}.",
                       f"call_reducer({_str(reducer.name)}, ", args)
    return out


def _procedures(schema: ModuleSchema, ctx: _Ctx) -> list[str]:
    out = ["", "", "class Procedures:",
           '    """The procedures, typed: each returns the ``Request`` of its decoded return value."""',
           "", '    __slots__ = ("_conn",)', "",
           "    def __init__(self, conn: Connection) -> None:",
           "        self._conn = conn"]
    methods = _method_names(ctx)
    for procedure in schema.procedures.values():
        params, args = _params(procedure.params, ctx)
        returns = ctx.annotation(procedure.return_type)
        ctx.used.add("Request")
        out += _method(methods.take(snake_case(procedure.name)), params, f"Request[{returns}]",
                       f"Call the procedure {_str(procedure.name)[1:-1]}.",
                       f"call_procedure({_str(procedure.name)}, ", args)
    return out


def _tables(schema: ModuleSchema, ctx: _Ctx, module_names: _Names) -> list[str]:
    out: list[str] = []
    attrs: list[tuple[str, str]] = []  # (attribute of Tables, its table class)
    table_attrs = _Names({"_conn"})
    for table in schema.tables.values():
        row = ctx.classes.get(table.product_type_ref)
        if row is None:
            continue
        product = schema.row_product(table.name)
        fields = [field_name(n) for n in product.names]
        cls = module_names.take(f"{row}Table")
        index_names = _Names({"_conn", *_TABLE_METHODS})
        indexes: list[str] = []
        unique, btree = table_indexes(table)
        for columns in dict.fromkeys((*unique, *btree)):
            kind = "UniqueIndex" if columns in unique else "BTreeIndex"
            types = [ctx.annotation(product.elements[c].type) for c in columns]
            key = types[0] if len(types) == 1 else f"tuple[{', '.join(types)}]"
            attr = index_names.take("_".join(fields[c] for c in columns))
            head = f"        self.{attr}: {kind}[{key}, {row}] = {kind}("
            where = f"conn.cache, {_str(table.name)}, {columns!r}"
            ctx.used.add(kind)
            indexes.append(f"{head}{where})" if len(head) + len(where) < _WIDTH
                           else f"{head}\n            {where},\n        )")
        out += ["", "", f"class {cls}:",
                f'    """The table {_str(table.name)[1:-1]} in the client cache: rows, a live view, '
                'index lookups."""', "",
                "    def __init__(self, conn: Connection) -> None:",
                "        self._conn = conn", *indexes, "",
                f"    def rows(self) -> tuple[{row}, ...]:",
                '        """The cached rows now."""',
                f"        return self._conn.cache.rows({_str(table.name)})", "",
                "    def count(self) -> int:",
                '        """How many rows are cached."""',
                f"        return self._conn.cache.count({_str(table.name)})", "",
                f"    def live(self) -> LiveTable[{row}]:",
                '        """The live view (snapshots and changes) of this table."""',
                f"        return self._conn.table({_str(table.name)}, {row})"]
        attrs.append((table_attrs.take(snake_case(table.name)), cls))
        ctx.used.add("LiveTable")
    out += ["", "", "class Tables:",
            '    """The tables, typed: ``Tables(conn).player.identity.find(x)`` (the SDKs\' ``db``)."""',
            "", "    def __init__(self, conn: Connection) -> None:", "        self._conn = conn"]
    out += [f"        self.{attr}: {cls} = {cls}(conn)" for attr, cls in attrs]
    return out
