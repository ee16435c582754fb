"""The module schema (``GET /v1/database/{db}/schema?version=9``) and schema-directed decoding.

A ``ModuleSchema`` knows every table's row type, every reducer's parameters and every procedure's
return type, so it turns row strings of either wire shape, reducer ``args`` and procedure returns
into the same Python values. Row classes are frozen dataclasses generated from the schema unless the
caller supplies its own.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from rx_spacetimedb.errors import ProtocolError, SchemaError
from rx_spacetimedb.protocol.fastpath import FALLBACK, PARSER
from rx_spacetimedb.protocol.generated import bind
from rx_spacetimedb.protocol.jsontext import dumps, loads_exact, parse_exact
from rx_spacetimedb.protocol.sats import Decoder, Form, InexactInteger, TypeCodec, field_name
from rx_spacetimedb.protocol.types import (
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
    parse_product,
    parse_type,
    product_to_json,
    type_to_json,
)

__all__ = [
    "ModuleSchema",
    "ProcedureDef",
    "ReducerDef",
    "TableDef",
    "decode_json",
    "parse_json_exact",
]


@dataclass(frozen=True, slots=True)
class TableDef:
    """A table: wire name, row type (a typespace ref), primary key columns, access."""

    name: str
    product_type_ref: int
    primary_key: tuple[int, ...] = ()
    public: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ReducerDef:
    """A reducer: name, parameters and lifecycle (``None``, ``Init``, ``OnConnect``, ``OnDisconnect``)."""

    name: str
    params: ProductType
    lifecycle: str | None = None


@dataclass(frozen=True, slots=True)
class ProcedureDef:
    """A procedure: name, parameters, return type."""

    name: str
    params: ProductType
    return_type: AlgebraicType


def parse_json_exact(text: str | bytes) -> Any:
    """Parse a row or argument text with every integer exact."""
    return loads_exact(text)


def decode_json(text: str | bytes) -> Any:
    """Plain JSON of a row string without a schema (exact integers), for schema-less use."""
    try:
        return loads_exact(text)
    except ValueError as err:
        raise ProtocolError(f"row is not JSON: {err}", raw=text) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The standard library's C scanner: exact at every integer width, and without the Python-level
# wrapper of JSONDecoder.decode around it.
_SCAN_EXACT: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder(parse_constant=_no_constant).scan_once)  # type: ignore[attr-defined]


def _loads_wide(text: str | bytes) -> Any:
    """Parse a row of a table with 128-bit columns: such rows mostly hold integers beyond 64 bits,
    which orjson cannot read, so the exact scanner parses them straight away (loads_exact's probe
    for long digit runs and its orjson attempt only add time: 10,000 u128 rows 31 -> 18 ms; a row
    of small values costs some 7% more than through orjson). Bytes, surrounding whitespace and
    invalid JSON go through ``loads_exact``, which also makes the error."""
    if type(text) is str:
        try:
            value, end = _SCAN_EXACT(text, 0)
        except (StopIteration, ValueError, RecursionError):
            return loads_exact(text)
        if end == len(text):
            return value
    return loads_exact(text)


def _decode_text(decoder: Decoder, text: str | bytes, what: str, wide: bool = False) -> Any:
    """Parse and decode one JSON text; ``wide``: the type has 128-bit integers, parse it exactly
    first rather than let orjson turn them into floats and decode twice."""
    try:
        value = _loads_wide(text) if wide else orjson.loads(text)
    except ValueError as err:  # orjson.JSONDecodeError is a ValueError
        raise ProtocolError(f"{what} is not JSON: {err}", raw=text) from None
    try:
        return decoder(value)
    except InexactInteger:
        # orjson turned a >64-bit integer into a float: parse this text again, exactly.
        try:
            exact = parse_exact(text)
        except ValueError as err:
            raise ProtocolError(f"{what} is not JSON: {err}", raw=text) from None
        try:
            return decoder(exact)
        except ProtocolError as err:
            raise ProtocolError(err.reason, path=f"{what}.{err.path}" if err.path else what,
                                raw=text) from None
    except ProtocolError as err:
        raise ProtocolError(err.reason, path=f"{what}.{err.path}" if err.path else what, raw=text) from None


def _opt(value: Any) -> Any:
    """Unwrap an envelope Option (``{"some": x}`` / ``{"none": []}``)."""
    if isinstance(value, dict):
        return value.get("some")
    return value


def _variant(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    return None


class ModuleSchema:
    """Tables, reducers, procedures and the typespace of one module, with their codecs.

    Args:
        typespace: the module's types; ``RefType(i)`` refers to ``typespace[i]``.
        tables, reducers, procedures: definitions, in the module's order.
        type_names: names of named types by typespace index (used to name generated row classes).
        row_classes: table name → a user class to build rows with instead of a generated dataclass
            (its positional constructor must take the columns in order).
    """

    def __init__(
        self,
        typespace: Sequence[AlgebraicType],
        tables: Sequence[TableDef] = (),
        reducers: Sequence[ReducerDef] = (),
        procedures: Sequence[ProcedureDef] = (),
        type_names: Mapping[int, str] | None = None,
        row_classes: Mapping[str, type] | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        self.typespace = tuple(typespace)
        _reject_deep_types(self.typespace, reducers, procedures)
        self.tables = {t.name: t for t in tables}
        self.reducers = {r.name: r for r in reducers}
        self.reducer_ids = {r.name: i for i, r in enumerate(reducers)}
        self.procedures = {p.name: p for p in procedures}
        self.type_names = dict(type_names or {})
        names = dict(self.type_names)
        for table in tables:
            names.setdefault(table.product_type_ref, table.name)
        generated = bind(self, row_classes)  # a generated module's classes, checked against us
        classes: dict[int, type] = dict(generated.classes) if generated else {}
        for table_name, cls in (row_classes or {}).items():
            table = self.table(table_name)
            _check_row_class(table_name, cls, self.typespace[table.product_type_ref])
            classes[table.product_type_ref] = cls
        self.codec = TypeCodec(self.typespace, names=names, classes=classes,
                               variants=generated.variants if generated else None,
                               slotted=generated.slotted if generated else ())
        self._raw = dict(raw) if raw is not None else None
        self._row_decoders: dict[str, Decoder] = {}
        self._wide_rows: dict[str, bool] = {}
        self._row_plans: dict[str, Any] = {}  # table -> compiled plan of the C parser, or None
        self._python_rows: dict[str, Callable[[str | bytes], Any]] = {}  # its fallback, per table
        self._key_decoders: dict[str, tuple[Any, Callable[[str | bytes], Any]] | None] = {}

    def __repr__(self) -> str:
        return (f"<ModuleSchema tables={list(self.tables)} reducers={list(self.reducers)} "
                f"procedures={list(self.procedures)}>")

    # -- parsing -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any],
                  row_classes: Mapping[str, type] | None = None) -> ModuleSchema:
        """Parse the schema endpoint's JSON (``RawModuleDefV9``)."""
        try:
            raw: Any = loads_exact(data) if isinstance(data, str | bytes) else data
        except ValueError as err:
            raise ProtocolError(f"schema is not JSON: {err}") from None
        if not isinstance(raw, Mapping):
            raise ProtocolError("schema must be a JSON object")
        try:
            typespace = [parse_type(t, f"typespace.types[{i}]")
                         for i, t in enumerate(raw["typespace"]["types"])]
            tables = [
                TableDef(
                    name=t["name"],
                    product_type_ref=t["product_type_ref"],
                    primary_key=tuple(t.get("primary_key", ())),
                    public=_variant(t.get("table_access", {"Public": []})) != "Private",
                    raw=t,
                )
                for t in raw.get("tables", ())
            ]
            reducers = [
                ReducerDef(r["name"], parse_product(r["params"], f"reducers.{r['name']}.params"),
                           _variant(_opt(r.get("lifecycle"))))
                for r in raw.get("reducers", ())
            ]
            procedures = [
                ProcedureDef(p["name"], parse_product(p["params"], f"procedures.{p['name']}.params"),
                             parse_type(p["return_type"], f"procedures.{p['name']}.return_type"))
                for export in raw.get("misc_exports", ())
                if isinstance(export, Mapping) and isinstance(p := export.get("Procedure"), Mapping)
            ]
            type_names = {
                t["ty"]: t["name"]["name"] for t in raw.get("types", ())
                if isinstance(t, Mapping) and isinstance(t.get("name"), Mapping)
            }
            for table in tables:
                if type(table.product_type_ref) is not int or not isinstance(table.name, str):
                    raise TypeError(f"table {table.name!r}: name or product_type_ref of the wrong type")
                if not all(type(column) is int for column in table.primary_key):
                    raise TypeError(f"table {table.name!r}: primary_key of the wrong type")
            names = [*(r.name for r in reducers), *(p.name for p in procedures), *type_names.values()]
            if not all(isinstance(n, str) for n in names) or not all(type(i) is int for i in type_names):
                raise TypeError("a reducer, procedure or type name of the wrong type")
        except (KeyError, TypeError, AttributeError) as err:
            raise ProtocolError(f"malformed module schema: {err!r}") from None
        _reject_recursive_types(typespace)
        return cls(typespace, tables, reducers, procedures, type_names, row_classes, raw=raw)

    def to_json(self) -> dict[str, Any]:
        """The schema endpoint's JSON for this module (the shape the real server writes)."""
        if self._raw is not None:
            return dict(self._raw)
        return {
            "typespace": {"types": [type_to_json(t) for t in self.typespace]},
            "tables": [dict(t.raw) if t.raw else _table_json(self, t) for t in self.tables.values()],
            "reducers": [
                {"name": r.name, "params": product_to_json(r.params),
                 "lifecycle": {"some": {r.lifecycle: []}} if r.lifecycle else {"none": []}}
                for r in self.reducers.values()
            ],
            "types": [
                {"name": {"scope": [], "name": name}, "ty": index, "custom_ordering": True}
                for index, name in sorted(self.type_names.items())
            ],
            "misc_exports": [
                {"Procedure": {"name": p.name, "params": product_to_json(p.params),
                               "return_type": type_to_json(p.return_type)}}
                for p in self.procedures.values()
            ],
            "row_level_security": [],
        }

    # -- lookups -------------------------------------------------------------------------

    def table(self, name: str) -> TableDef:
        """The table of that wire name; SchemaError names the known tables otherwise."""
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(f"unknown table {name!r}; the module has {sorted(self.tables)}") from None

    def reducer(self, name: str) -> ReducerDef:
        """The reducer of that name; SchemaError names the known reducers otherwise."""
        try:
            return self.reducers[name]
        except KeyError:
            raise SchemaError(f"unknown reducer {name!r}; the module has {sorted(self.reducers)}") from None

    def procedure(self, name: str) -> ProcedureDef:
        """The procedure of that name; SchemaError names the known procedures otherwise."""
        try:
            return self.procedures[name]
        except KeyError:
            raise SchemaError(
                f"unknown procedure {name!r}; the module has {sorted(self.procedures)}") from None

    def row_product(self, table: str) -> ProductType:
        """The row type of a table, resolved."""
        product = self.codec.resolve(RefType(self.table(table).product_type_ref))
        if not isinstance(product, ProductType):
            raise SchemaError(f"row type of {table!r} is not a product")
        return product

    def row_class(self, table: str) -> type:
        """The Python class rows of this table decode to."""
        return self.codec.class_for(RefType(self.table(table).product_type_ref))

    def primary_key(self, table: str) -> tuple[int, ...]:
        """Column indexes of the primary key (empty: the table has none)."""
        return self.table(table).primary_key

    # -- values --------------------------------------------------------------------------

    def row_decoder(self, table: str) -> Decoder:
        """A decoder from a parsed row JSON value (either shape) to the row object."""
        decoder = self._row_decoders.get(table)
        if decoder is None:
            decoder = self.codec.decoder(RefType(self.table(table).product_type_ref))
            self._row_decoders[table] = decoder
        return decoder

    def _has_wide_rows(self, table: str) -> bool:
        wide = self._wide_rows.get(table)
        if wide is None:
            wide = _holds_128_bit(self.codec, RefType(self.table(table).product_type_ref), set())
            self._wide_rows[table] = wide
        return wide

    def _row_plan(self, table: str) -> Any:
        """The C parser's compiled plan for this table's rows (None without it: see fastpath)."""
        try:
            return self._row_plans[table]
        except KeyError:
            pass
        plan = None
        if PARSER is not None:
            plan = PARSER.compile(self.codec.plan(RefType(self.table(table).product_type_ref)))
            self._python_rows[table] = functools.partial(self._decode_row_python, table)
        self._row_plans[table] = plan
        return plan

    def decode_row(self, table: str, text: str | bytes) -> Any:
        """Decode one row string (object-keyed or positional) to the table's row object."""
        plan = self._row_plans[table] if table in self._row_plans else self._row_plan(table)
        if plan is not None:
            row = PARSER.decode(plan, text)
            if row is not FALLBACK:
                return row
        return self._decode_row_python(table, text)

    def _decode_row_python(self, table: str, text: str | bytes) -> Any:
        decoder = self._row_decoders.get(table)  # row_decoder() and _has_wide_rows() fill both
        wide = self._wide_rows.get(table)
        if decoder is None or wide is None:
            decoder, wide = self.row_decoder(table), self._has_wide_rows(table)
        return _decode_text(decoder, text, table, wide)

    def key_decoder(self, table: str) -> Callable[[str | bytes], Any] | None:
        """A function from a row string to its primary-key value alone (a tuple for a composite key).

        Decoding only the key is what a cache needs for a deleted row; None if the table has none.
        """
        parts = self._key_parts(table)
        if parts is None:
            return None
        plan, slow = parts
        if plan is None:
            return slow
        parser = PARSER

        def fast(text: str | bytes) -> Any:
            key = parser.decode(plan, text)
            return slow(text) if key is FALLBACK else key

        return fast

    def decode_keys(self, table: str, texts: Sequence[str]) -> list[Any]:
        """The primary keys of many row strings of one table (``key_decoder``'s, in one call)."""
        parts = self._key_parts(table)
        if parts is None:
            raise SchemaError(f"table {table!r} has no primary key")
        plan, slow = parts
        if plan is not None:
            return PARSER.decode_all(plan, texts, slow)  # type: ignore[no-any-return]
        return [slow(t) for t in texts]

    def _key_parts(self, table: str) -> tuple[Any, Callable[[str | bytes], Any]] | None:
        """(the C parser's key plan or None, the Python key decoder) of a table; None: no key."""
        if table in self._key_decoders:
            return self._key_decoders[table]
        columns = self.primary_key(table)
        if not columns:
            self._key_decoders[table] = None
            return None
        node = self.codec.key_plan(self.row_product(table), columns)
        key_of = self.codec.node_decoder(node)
        wide = self._has_wide_rows(table)

        def slow(text: str | bytes) -> Any:
            return _decode_text(key_of, text, table, wide)

        plan = PARSER.compile(node) if PARSER is not None else None
        self._key_decoders[table] = (plan, slow)
        return plan, slow

    def decode_rows(self, table: str, texts: Sequence[str]) -> list[Any]:
        """Decode many row strings of one table."""
        if not texts:  # most QueryUpdates of a transaction have no deletes, or no inserts
            return []
        plan = self._row_plans[table] if table in self._row_plans else self._row_plan(table)
        if plan is not None:
            return PARSER.decode_all(plan, texts, self._python_rows[table])  # type: ignore[no-any-return]
        return [self._decode_row_python(table, t) for t in texts]

    def decode_rows_by_key(self, table: str, texts: Sequence[str],
                           key_of: Callable[[Any], Any]) -> dict[Any, Any] | None:
        """Decode many row strings of one table into a dict by ``key_of(row)``; None when a key repeats.

        ``key_of`` must give the row's primary key (``cache.primary_key_getter``): the C parser reads
        the key columns of the rows it builds straight from their slots.
        """
        if not texts:
            return {}
        plan = self._row_plans[table] if table in self._row_plans else self._row_plan(table)
        if plan is not None:
            return PARSER.decode_keyed(  # type: ignore[no-any-return]
                plan, texts, self._python_rows[table], key_of, self.primary_key(table))
        rows = self.decode_rows(table, texts)
        by_key = dict(zip(map(key_of, rows), rows, strict=True))
        return by_key if len(by_key) == len(rows) else None

    def encode_row(self, table: str, row: Any, form: Form = "C") -> str:
        """The row string of a row: ``B`` = stored (object keyed), ``C`` = untyped (positional)."""
        return dumps(self.codec.encoder(RefType(self.table(table).product_type_ref), form)(row))

    def decode_reducer_args(self, reducer: str, text: str) -> Any:
        """Decode ``reducer_call.args`` to a params object (fields named as the parameters)."""
        decoder = self.codec.decoder(self.reducer(reducer).params, f"{reducer}Args")
        return _decode_text(decoder, text, f"{reducer}.args")

    def encode_args(self, params: ProductType, args: Sequence[Any] | Mapping[str, Any]) -> str:
        """Arguments (positional sequence or by-name mapping) as the JSON text ``args`` holds."""
        try:
            return dumps(self.codec.encoder(params, "C")(args))
        except (TypeError, ValueError) as err:
            raise SchemaError(f"arguments do not fit {list(params.names)}: {err}") from None

    def encode_reducer_args(self, reducer: str, args: Sequence[Any] | Mapping[str, Any]) -> str:
        """Encode a reducer's arguments (untyped form C: name-independent)."""
        return self.encode_args(self.reducer(reducer).params, args)

    def decode_procedure_return(self, procedure: str, text: str) -> Any:
        """Decode a ``ProcedureResult`` ``Returned`` value."""
        return _decode_text(self.codec.decoder(self.procedure(procedure).return_type), text,
                            f"{procedure}.return")


def _holds_128_bit(codec: TypeCodec, ty: AlgebraicType, seen: set[int]) -> bool:
    """Whether values of ``ty`` can hold integers orjson cannot read exactly (u128/i128)."""
    if isinstance(ty, RefType):
        if ty.index in seen:
            return False
        seen.add(ty.index)
        return _holds_128_bit(codec, codec.resolve(ty), seen)
    if isinstance(ty, PrimitiveType):
        return ty.name in ("U128", "I128")
    if isinstance(ty, ArrayType):
        return _holds_128_bit(codec, ty.elem, seen)
    parts = ty.elements if isinstance(ty, ProductType) else ty.variants
    return any(_holds_128_bit(codec, part.type, seen) for part in parts)


def _reject_recursive_types(typespace: Sequence[AlgebraicType]) -> None:
    """Servers refuse modules whose types refer to themselves; a schema that has one is malformed."""
    done: set[int] = set()

    def visit(ty: AlgebraicType, active: tuple[int, ...]) -> None:
        if isinstance(ty, RefType):
            if ty.index in active:
                raise ProtocolError(f"recursive type: typespace.types[{ty.index}] refers to itself")
            if ty.index in done or not 0 <= ty.index < len(typespace):
                return
            visit(typespace[ty.index], (*active, ty.index))
            done.add(ty.index)
        elif isinstance(ty, ArrayType):
            visit(ty.elem, active)
        elif isinstance(ty, ProductType):
            for element in ty.elements:
                visit(element.type, active)
        elif isinstance(ty, SumType):
            for variant in ty.variants:
                visit(variant.type, active)

    for index in range(len(typespace)):
        visit(RefType(index), ())


MAX_TYPE_DEPTH = 64
"""How deeply a module's types may nest (arrays, products, sums, options; a Ref adds nothing).

The Python decoders recurse once or twice per level and the C parser takes plans 200 deep: a type
deeper than this is refused when the schema is read, the same with or without the C parser,
rather than decoded by one path and not the other, or failing on the first row.
"""


def _reject_deep_types(typespace: Sequence[AlgebraicType], reducers: Sequence[ReducerDef],
                       procedures: Sequence[ProcedureDef]) -> None:
    """ProtocolError naming the first type nested deeper than ``MAX_TYPE_DEPTH``."""
    depths: dict[int, int] = {}

    def depth(ty: AlgebraicType, level: int, active: tuple[int, ...]) -> int:
        # `level`: the levels above. Past MAX_TYPE_DEPTH the answer is "too deep" whatever follows
        # (so neither this walk nor its memo needs to go further: that answer is raised at once).
        if level > MAX_TYPE_DEPTH:
            return MAX_TYPE_DEPTH + 1
        if isinstance(ty, RefType):
            if ty.index in depths:
                return depths[ty.index]
            if ty.index in active or not 0 <= ty.index < len(typespace):
                return 0   # a cycle or a bad index: the errors of their own (from_json, resolve)
            depths[ty.index] = found = depth(typespace[ty.index], level, (*active, ty.index))
            return found
        if isinstance(ty, ArrayType):
            parts = [ty.elem]
        elif isinstance(ty, ProductType):
            parts = [e.type for e in ty.elements]
        elif isinstance(ty, SumType):
            parts = [v.type for v in ty.variants]
        else:
            return 0
        deepest = 0
        for part in parts:
            deepest = max(deepest, depth(part, level + 1, active))
            if deepest >= MAX_TYPE_DEPTH:
                break
        return 1 + deepest

    named = [(f"typespace.types[{i}]", ty) for i, ty in enumerate(typespace)]
    named += [(f"reducers.{r.name}.params", r.params) for r in reducers]
    named += [(f"procedures.{p.name}.{part}", ty) for p in procedures
              for part, ty in (("params", p.params), ("return_type", p.return_type))]
    for where, ty in named:
        found = depth(ty, 0, ())
        if found > MAX_TYPE_DEPTH:
            raise ProtocolError(f"{where} nests more than {MAX_TYPE_DEPTH} levels deep (arrays, products, "
                                "sums); rx_spacetimedb decodes types up to that depth")


def _check_row_class(table: str, cls: type, row_type: AlgebraicType) -> None:
    """A user row class must take the table's columns positionally, in order, by the same names.

    Its constructor's parameters are compared with the columns, so a dataclass, a NamedTuple or a
    plain class with a matching ``__init__`` all fit.
    """
    try:
        fields = tuple(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        raise SchemaError(f"row class {cls.__name__} for table {table!r}: its constructor "
                          "cannot be inspected") from None
    columns = tuple(field_name(n) for n in row_type.names) if isinstance(row_type, ProductType) else ()
    if fields != columns:
        raise SchemaError(f"row class {cls.__name__} of table {table!r} has fields {list(fields)}, "
                          f"the table has columns {list(columns)} (same names, same order)")


def _table_json(schema: ModuleSchema, table: TableDef) -> dict[str, Any]:
    names = schema.row_product(table.name).names
    pk = list(table.primary_key)
    access: dict[str, list[Any]] = {"Public": []} if table.public else {"Private": []}
    return {
        "name": table.name,
        "product_type_ref": table.product_type_ref,
        "primary_key": pk,
        "indexes": [
            {"name": {"some": f"{table.name}_{names[c]}_idx_btree"}, "accessor_name": {"some": names[c]},
             "algorithm": {"BTree": [c]}} for c in pk
        ],
        "constraints": [
            {"name": {"some": f"{table.name}_{names[c]}_key"}, "data": {"Unique": {"columns": [c]}}}
            for c in pk
        ],
        "sequences": [],
        "schedule": {"none": []},
        "table_type": {"User": []},
        "table_access": access,
    }
