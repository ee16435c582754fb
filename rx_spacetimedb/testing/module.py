"""Module definition for the emulator: tables, reducers, procedures, and the in-memory database.

A ``Module`` is the Python stand-in for a compiled SpacetimeDB module: it declares typed tables and
the reducers/procedures that change them, and it produces the same ``ModuleSchema`` (and schema JSON)
the real server would publish, so clients see no difference.

Example::

    module = Module("quickstart")
    player = module.table("Player", [
        Column("id", U64, primary_key=True, auto_inc=True),
        Column("name", STRING, unique=True),
    ])

    @module.reducer("CreatePlayer", [("name", STRING)])
    def create_player(ctx: ReducerContext, name: str) -> None:
        ctx.db["Player"].insert({"name": name})

A reducer that raises rolls back every change it made; ``str(exception)`` is the error text the
caller receives. Raise ``OutOfEnergyError`` to simulate an out-of-energy reducer.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol.jsontext import dumps, loads_exact
from rx_spacetimedb.protocol.sats import Decoder, Encoder, field_name
from rx_spacetimedb.protocol.schema import ModuleSchema, ProcedureDef, ReducerDef, TableDef
from rx_spacetimedb.protocol.types import (
    SCHEDULE_AT,
    AlgebraicType,
    ArrayType,
    Element,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
    Variant,
)
from rx_spacetimedb.protocol.values import ConnectionId, Identity, Timestamp

__all__ = [
    "Column",
    "Database",
    "DbView",
    "Module",
    "OutOfEnergyError",
    "ProcedureContext",
    "ReducerContext",
    "ReducerError",
    "TableHandle",
    "TableSchema",
    "Transaction",
]

_AUTO_INC_TYPES = frozenset({"U8", "U16", "U32", "U64", "U128", "I8", "I16", "I32", "I64", "I128"})
_UNIT = ProductType(())
FIRST_TABLE_ID = 4097
"""The table id of a module's first user table (the example module's ``Player`` is 4097)."""


class ReducerError(Exception):
    """Raise from a reducer to fail it with this message (any exception does the same).

    Kept as a named class so module code reads as intent, not as an accident.
    """


class OutOfEnergyError(Exception):
    """Raise from a reducer or procedure to simulate running out of energy.

    The caller then receives ``OutOfEnergy`` instead of ``Failed``, as from a real server.
    """


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: name, SATS type and constraints.

    ``auto_inc`` columns take the next sequence value when a row is inserted with 0 (or without them);
    ``indexed`` adds a btree index (unique and primary-key columns always have one).
    """

    name: str
    type: AlgebraicType
    primary_key: bool = False
    auto_inc: bool = False
    unique: bool = False
    indexed: bool = False


@dataclass
class TableSchema:
    """A declared table: its columns, keys, access and (once the module is built) its row type ref.

    Kept by the module so that the schema JSON, the store and the SQL layer agree on one definition.
    """

    name: str
    columns: tuple[Column, ...]
    public: bool
    table_id: int
    provisional_ref: RefType
    ref: RefType | None = None
    primary_key: int | None = None
    uniques: tuple[int, ...] = ()
    auto_inc: tuple[int, ...] = ()
    indexed: tuple[int, ...] = ()
    schedule: tuple[str, int] | None = None
    """``(reducer name, ScheduleAt column index)`` of a schedule table."""

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in order.

        SQL and the stores look columns up by name.
        """
        return tuple(c.name for c in self.columns)


@dataclass
class _ReducerSpec:
    name: str
    params: ProductType
    func: Callable[..., Any]
    lifecycle: str | None = None


@dataclass
class _ProcedureSpec:
    name: str
    params: ProductType
    returns: AlgebraicType
    func: Callable[..., Any]


def _remap(ty: AlgebraicType, mapping: Mapping[int, int]) -> AlgebraicType:
    """Replace provisional (negative) refs by final typespace indexes."""
    if isinstance(ty, RefType):
        return RefType(mapping[ty.index]) if ty.index < 0 else ty
    if isinstance(ty, ArrayType):
        return ArrayType(_remap(ty.elem, mapping))
    if isinstance(ty, ProductType):
        return ProductType(tuple(Element(e.name, _remap(e.type, mapping)) for e in ty.elements))
    if isinstance(ty, SumType):
        return SumType(tuple(Variant(v.name, _remap(v.type, mapping)) for v in ty.variants))
    return ty


def _params(params: Sequence[tuple[str, AlgebraicType]] | ProductType) -> ProductType:
    if isinstance(params, ProductType):
        return params
    return ProductType(tuple(Element(name, ty) for name, ty in params))


def _name_opt(name: str) -> dict[str, Any]:
    return {"some": name}


class Module:
    """A SpacetimeDB module written in Python: typed tables, reducers, procedures, lifecycle hooks.

    Declare everything, then hand the module to ``SpacetimeDBEmulator``; the module is frozen
    (``build()``) when the first database is created from it. Type refs returned by ``add_type`` and
    ``TableSchema.provisional_ref`` may be used inside other types before the typespace is laid out.
    """

    def __init__(self, name: str = "quickstart") -> None:
        self.name = name
        self._named: list[tuple[str, AlgebraicType, TableSchema | None]] = []
        self._tables: dict[str, TableSchema] = {}
        self._reducers: dict[str, _ReducerSpec] = {}
        self._procedures: dict[str, _ProcedureSpec] = {}
        self._schema: ModuleSchema | None = None
        self._mapping: dict[int, int] = {}

    # -- declarations ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._schema is not None:
            raise RuntimeError("the module is already built; declare everything before serving it")

    def add_type(self, name: str, ty: AlgebraicType) -> RefType:
        """Declare a named user type (struct or enum) and return a ref to use in columns and params.

        Named types appear in the schema's ``types`` list, as a real module's structs and enums do.
        """
        self._check_open()
        self._named.append((name, ty, None))
        return RefType(-len(self._named))

    def table(
        self,
        name: str,
        columns: Sequence[Column],
        *,
        public: bool = True,
        table_id: int | None = None,
        scheduled: tuple[str, str] | None = None,
    ) -> TableSchema:
        """Declare a table; at most one primary key column; ``auto_inc`` only on integer columns.

        ``scheduled=(reducer, column)`` makes it a schedule table: each row runs ``reducer(row)`` at the
        ``ScheduleAt`` of ``column`` (once for ``Time``, then the row is deleted; repeatedly for
        ``Interval``), as a system transaction on the emulator's clock.
        """
        self._check_open()
        if name in self._tables:
            raise ValueError(f"table {name!r} declared twice")
        cols = tuple(columns)
        if len({c.name for c in cols}) != len(cols):
            raise ValueError(f"table {name!r} has duplicate column names")
        pks = [i for i, c in enumerate(cols) if c.primary_key]
        if len(pks) > 1:
            raise ValueError(f"table {name!r}: at most one primary key column")
        for c in cols:
            if c.auto_inc and not (isinstance(c.type, PrimitiveType) and c.type.name in _AUTO_INC_TYPES):
                raise ValueError(f"table {name!r}: auto_inc column {c.name!r} must be an integer")
        if scheduled is not None:
            column = next((c for c in cols if c.name == scheduled[1]), None)
            if column is None or column.type != SCHEDULE_AT or not pks:
                raise ValueError(f"table {name!r}: a schedule needs a primary key and a ScheduleAt column")
        row = ProductType(tuple(Element(c.name, c.type) for c in cols))
        self._named.append((name, row, None))
        ref = RefType(-len(self._named))
        schema = TableSchema(
            name=name,
            columns=cols,
            public=public,
            table_id=table_id if table_id is not None else FIRST_TABLE_ID + len(self._tables),
            provisional_ref=ref,
            primary_key=pks[0] if pks else None,
            uniques=tuple(i for i, c in enumerate(cols) if c.unique or c.primary_key),
            auto_inc=tuple(i for i, c in enumerate(cols) if c.auto_inc),
            indexed=tuple(i for i, c in enumerate(cols) if c.indexed or c.unique or c.primary_key),
            schedule=(scheduled[0], [c.name for c in cols].index(scheduled[1])) if scheduled else None,
        )
        self._named[-1] = (name, row, schema)
        self._tables[name] = schema
        return schema

    def reducer(
        self,
        name: str | None = None,
        params: Sequence[tuple[str, AlgebraicType]] | ProductType = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator declaring a reducer ``fn(ctx: ReducerContext, *args)`` (name: ``fn.__name__``).

        Parameters are declared as SATS types so client args are decoded exactly as the server does.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self._add_reducer(name or func.__name__, _params(params), func, None)
            return func

        return register

    def _add_reducer(
        self, name: str, params: ProductType, func: Callable[..., Any], lifecycle: str | None
    ) -> None:
        self._check_open()
        if name in self._reducers:
            raise ValueError(f"reducer {name!r} declared twice")
        self._reducers[name] = _ReducerSpec(name, params, func, lifecycle)

    def client_connected(self, func: Callable[[ReducerContext], Any]) -> Callable[[ReducerContext], Any]:
        """Decorator: the ``OnConnect`` lifecycle reducer (named after the function); raising rejects.

        Lets tests rehearse a module that refuses connections; the name is the function's, as in Rust
        modules (``#[reducer(client_connected)] fn identity_connected``).
        """
        self._add_reducer(func.__name__, ProductType(()), func, "OnConnect")
        return func

    def client_disconnected(self, func: Callable[[ReducerContext], Any]) -> Callable[[ReducerContext], Any]:
        """Decorator: the ``OnDisconnect`` lifecycle reducer (named after the function), run on disconnect.

        Apps often clean up presence rows here; tests can check that they do.
        """
        self._add_reducer(func.__name__, ProductType(()), func, "OnDisconnect")
        return func

    def init(self, func: Callable[[ReducerContext], Any]) -> Callable[[ReducerContext], Any]:
        """Decorator: the ``Init`` lifecycle reducer, run once when the database is created.

        Seeds initial rows the way a real module's ``init`` does at publish time.
        """
        self._add_reducer(func.__name__, ProductType(()), func, "Init")
        return func

    def procedure(
        self,
        name: str | None = None,
        params: Sequence[tuple[str, AlgebraicType]] | ProductType = (),
        returns: AlgebraicType = _UNIT,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator declaring a procedure ``fn(ctx: ProcedureContext, *args) -> value of returns``.

        Procedures answer only their caller, with a value encoded from ``returns``.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            pname = name or func.__name__
            self._check_open()
            if pname in self._procedures:
                raise ValueError(f"procedure {pname!r} declared twice")
            self._procedures[pname] = _ProcedureSpec(pname, _params(params), returns, func)
            return func

        return register

    # -- building -------------------------------------------------------------------------

    @property
    def tables(self) -> Mapping[str, TableSchema]:
        """Declared tables by name, in declaration order.

        The server and SQL layer need the declarations, not only the schema JSON.
        """
        return self._tables

    def build(self) -> ModuleSchema:
        """Lay out the typespace (table rows first, then named types) and return the schema.

        Freezing the layout gives stable typespace indexes, which the schema JSON exposes.
        """
        if self._schema is not None:
            return self._schema
        order = [i for i, (_, _, t) in enumerate(self._named) if t is not None]
        order += [i for i, (_, _, t) in enumerate(self._named) if t is None]
        mapping = {-(i + 1): final for final, i in enumerate(order)}
        self._mapping = mapping
        typespace = [_remap(self._named[i][1], mapping) for i in order]
        type_names = {final: self._named[i][0] for final, i in enumerate(order)}
        for table in self._tables.values():
            table.ref = RefType(mapping[table.provisional_ref.index])
            table.columns = tuple(dataclasses.replace(c, type=_remap(c.type, mapping)) for c in table.columns)
        for table in self._tables.values():
            if table.schedule is not None:
                target = self._reducers.get(table.schedule[0])
                if (
                    target is None
                    or len(target.params.elements) != 1
                    or (target.params.elements[0].type != table.provisional_ref)
                ):
                    raise ValueError(
                        f"schedule of {table.name!r}: reducer {table.schedule[0]!r} must take "
                        f"one parameter of the table's row type"
                    )
        for spec in self._reducers.values():
            spec.params = _remap(spec.params, mapping)  # type: ignore[assignment]
        for proc in self._procedures.values():
            proc.params = _remap(proc.params, mapping)  # type: ignore[assignment]
            proc.returns = _remap(proc.returns, mapping)
        tables = [self._table_def(t, typespace) for t in self._tables.values()]
        reducers = [ReducerDef(r.name, r.params, r.lifecycle) for r in self._reducers.values()]
        procedures = [ProcedureDef(p.name, p.params, p.returns) for p in self._procedures.values()]
        self._schema = ModuleSchema(typespace, tables, reducers, procedures, type_names)
        return self._schema

    def _table_def(self, table: TableSchema, typespace: Sequence[AlgebraicType]) -> TableDef:
        assert table.ref is not None
        names = table.column_names
        pk = [table.primary_key] if table.primary_key is not None else []
        raw: dict[str, Any] = {
            "name": table.name,
            "product_type_ref": table.ref.index,
            "primary_key": pk,
            "indexes": [
                {
                    "name": _name_opt(f"{table.name}_{names[c]}_idx_btree"),
                    "accessor_name": _name_opt(names[c]),
                    "algorithm": {"BTree": [c]},
                }
                for c in table.indexed
            ],
            "constraints": [
                {"name": _name_opt(f"{table.name}_{names[c]}_key"), "data": {"Unique": {"columns": [c]}}}
                for c in table.uniques
            ],
            "sequences": [
                {
                    "name": _name_opt(f"{table.name}_{names[c]}_seq"),
                    "column": c,
                    "start": {"none": []},
                    "min_value": {"none": []},
                    "max_value": {"none": []},
                    "increment": 1,
                }
                for c in table.auto_inc
            ],
            "schedule": {"none": []}
            if table.schedule is None
            else {
                "some": {
                    "name": {"some": f"{table.name}_sched"},
                    "reducer_name": table.schedule[0],
                    "scheduled_at_column": table.schedule[1],
                }
            },
            "table_type": {"User": []},
            "table_access": {"Public": []} if table.public else {"Private": []},
        }
        return TableDef(table.name, table.ref.index, tuple(pk), table.public, raw=raw)

    def reducer_spec(self, name: str) -> _ReducerSpec | None:
        """The declared reducer of that name, or None.

        The server dispatches calls by name.
        """
        return self._reducers.get(name)

    def procedure_spec(self, name: str) -> _ProcedureSpec | None:
        """The declared procedure of that name, or None.

        The server dispatches calls by name.
        """
        return self._procedures.get(name)

    def lifecycle(self, kind: str) -> _ReducerSpec | None:
        """The lifecycle reducer of a kind (``Init``, ``OnConnect``, ``OnDisconnect``), if declared.

        Lifecycle reducers run on connect, disconnect and creation, not on request.
        """
        return next((r for r in self._reducers.values() if r.lifecycle == kind), None)

    def type_class(self, name: str) -> type:
        """The Python class values of a named product type (or a table's rows) decode to.

        Lets module code and tests build rows and values of named types.
        """
        schema = self.build()
        for index, type_name in schema.type_names.items():
            if type_name == name:
                return schema.codec.class_for(RefType(index))
        raise KeyError(name)


# -- storage ---------------------------------------------------------------------------------


class _Store:
    """The rows of one table, with its primary-key/unique indexes and sequences."""

    def __init__(self, schema: TableSchema, module_schema: ModuleSchema) -> None:
        assert schema.ref is not None
        self.schema = schema
        self.name = schema.name
        self.row_class = module_schema.codec.class_for(schema.ref)
        self.attrs = tuple(field_name(n) for n in schema.column_names)
        self.getters = tuple(operator.attrgetter(a) for a in self.attrs)
        self.encoder_c: Encoder = module_schema.codec.encoder(schema.ref, "C")
        self.encoder_b: Encoder = module_schema.codec.encoder(schema.ref, "B")
        self.decoder: Decoder = module_schema.codec.decoder(schema.ref)
        self.rows: dict[Any, Any] = {}  # key (pk value, or the row) -> row
        self.uniques: dict[int, dict[Any, Any]] = {c: {} for c in schema.uniques}
        self.sequences: dict[int, int] = {c: 1 for c in schema.auto_inc}

    def key(self, row: Any) -> Any:
        pk = self.schema.primary_key
        return row if pk is None else self.getters[pk](row)

    def normalize(self, value: Any, sequences: bool = True) -> Any:
        """A canonical row object from a row object, mapping or sequence (auto-inc columns filled).

        Storing one canonical form makes equality, keys and encodings reliable.
        """
        if isinstance(value, Mapping):
            value = dict(value)
            for c in self.schema.auto_inc:
                value.setdefault(self.schema.columns[c].name, 0)
        try:
            encoded = self.encoder_c(value)
            row = self.decoder(loads_exact(dumps(encoded)))
        except (TypeError, ValueError, ProtocolError) as err:
            raise TypeError(f"not a valid {self.name} row: {err}") from None
        changes = {}
        for c in self.schema.auto_inc if sequences else ():
            given = self.getters[c](row)
            if given == 0:
                changes[self.attrs[c]] = self.sequences[c]
                self.sequences[c] += 1
            elif given >= self.sequences[c]:
                self.sequences[c] = given + 1  # emulator nicety: explicit ids never collide later
        return dataclasses.replace(row, **changes) if changes else row


class Transaction:
    """Changes of one transaction: net deleted/inserted rows per table, and an undo log.

    The net sets are what subscribers see; the undo log restores the stores on rollback.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.undo: list[Callable[[], None]] = []
        self.deleted: dict[str, dict[Any, None]] = {}
        self.inserted: dict[str, dict[Any, None]] = {}

    def _insert(self, store: _Store, row: Any) -> None:
        key = store.key(row)
        store.rows[key] = row
        for c, index in store.uniques.items():
            index[store.getters[c](row)] = key
        deleted = self.deleted.setdefault(store.name, {})
        if row in deleted:
            del deleted[row]
        else:
            self.inserted.setdefault(store.name, {})[row] = None
        self.undo.append(lambda: self._raw_delete(store, row))

    def _delete(self, store: _Store, row: Any) -> None:
        self._raw_delete(store, row)
        inserted = self.inserted.setdefault(store.name, {})
        if row in inserted:
            del inserted[row]
        else:
            self.deleted.setdefault(store.name, {})[row] = None
        self.undo.append(lambda: self._raw_insert(store, row))

    def _replace(self, store: _Store, old: Any, new: Any) -> None:
        """Swap a row for one with the same key, keeping its place in the table."""
        self._swap(store, old, new)
        for gone, came in ((old, None), (None, new)):
            if gone is not None:
                inserted = self.inserted.setdefault(store.name, {})
                if gone in inserted:
                    del inserted[gone]
                else:
                    self.deleted.setdefault(store.name, {})[gone] = None
            if came is not None:
                deleted = self.deleted.setdefault(store.name, {})
                if came in deleted:
                    del deleted[came]
                else:
                    self.inserted.setdefault(store.name, {})[came] = None
        self.undo.append(lambda: self._swap(store, new, old))

    @staticmethod
    def _swap(store: _Store, old: Any, new: Any) -> None:
        for c, index in store.uniques.items():
            index.pop(store.getters[c](old), None)
        key = store.key(new)
        store.rows[key] = new
        for c, index in store.uniques.items():
            index[store.getters[c](new)] = key

    @staticmethod
    def _raw_delete(store: _Store, row: Any) -> None:
        del store.rows[store.key(row)]
        for c, index in store.uniques.items():
            index.pop(store.getters[c](row), None)

    @staticmethod
    def _raw_insert(store: _Store, row: Any) -> None:
        key = store.key(row)
        store.rows[key] = row
        for c, index in store.uniques.items():
            index[store.getters[c](row)] = key

    def rollback(self) -> None:
        """Undo every change, newest first.

        A failed reducer must leave no trace, as on the real server.
        """
        for undo in reversed(self.undo):
            undo()
        self.undo.clear()
        self.deleted.clear()
        self.inserted.clear()

    def changes(self) -> dict[str, tuple[list[Any], list[Any]]]:
        """Net (deleted, inserted) rows per table that changed.

        Subscribers see net deltas: a row inserted and deleted in one transaction is not reported.
        """
        result: dict[str, tuple[list[Any], list[Any]]] = {}
        for name in dict.fromkeys([*self.deleted, *self.inserted]):
            deleted = list(self.deleted.get(name, ()))
            inserted = list(self.inserted.get(name, ()))
            if deleted or inserted:
                result[name] = (deleted, inserted)
        return result


class TableHandle:
    """Access to one table inside a reducer (read/write) or from outside (read-only).

    Rows are frozen dataclasses generated from the row type (``handle.row_class``); writes accept
    those, mappings by column name, or sequences in column order.
    """

    def __init__(self, store: _Store, tx: Transaction | None) -> None:
        self._store = store
        self._tx = tx

    @property
    def name(self) -> str:
        """The table's name.

        Convenient in messages and assertions.
        """
        return self._store.name

    @property
    def row_class(self) -> type:
        """The row dataclass of this table.

        Build rows with it, or ``dataclasses.replace`` existing ones.
        """
        return self._store.row_class

    def _writable(self) -> Transaction:
        if self._tx is None:
            raise RuntimeError(f"table {self.name!r} is read-only here (use a reducer or with_tx)")
        return self._tx

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._store.rows.values()))

    def __len__(self) -> int:
        return len(self._store.rows)

    def count(self) -> int:
        """Number of rows.

        Cheaper and clearer than ``len(list(...))`` in module code.
        """
        return len(self._store.rows)

    def iter(self) -> Iterator[Any]:
        """Every row (a snapshot list, so the table may change while iterating).

        Module code may delete while iterating.
        """
        return iter(self)

    def find(self, column: str, value: Any) -> Any | None:
        """The row whose unique (or primary key) ``column`` equals ``value``, or None.

        Unique lookups are what real modules do with their indexes.
        """
        index = self._column(column)
        if index not in self._store.uniques:
            raise ValueError(f"{self.name}.{column} is not unique; use filter()")
        key = self._store.uniques[index].get(value)
        return None if key is None else self._store.rows.get(key)

    def filter(self, **equal: Any) -> list[Any]:
        """Rows whose columns equal the given values.

        A small stand-in for index scans in module code.
        """
        getters = [(self._store.getters[self._column(k)], v) for k, v in equal.items()]
        return [r for r in self._store.rows.values() if all(g(r) == v for g, v in getters)]

    def _column(self, name: str) -> int:
        try:
            return self._store.schema.column_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name} has no column {name!r}") from None

    def insert(self, row: Any) -> Any:
        """Insert a row (auto-inc columns given as 0 or left out get the next value); return it.

        Raises ReducerError on a unique/primary-key violation (the reducer then fails).
        """
        tx = self._writable()
        store = self._store
        value = store.normalize(row)
        for c, index in store.uniques.items():
            existing = index.get(store.getters[c](value))
            if existing is not None:
                if store.rows.get(existing) == value and store.schema.primary_key is None:
                    return value
                raise _duplicate(store, c, value)
        if store.schema.primary_key is None and value in store.rows:
            return value  # tables are sets: inserting an identical row is a no-op
        tx._insert(store, value)
        return value

    def delete(self, row: Any) -> bool:
        """Delete a row equal to ``row``; True if there was one (False for a stale copy).

        As on the server, the whole row must match, not only its primary key (see ``delete_by``).
        """
        tx = self._writable()
        store = self._store
        value = store.normalize(row, sequences=False) if not isinstance(row, store.row_class) else row
        existing = store.rows.get(store.key(value))
        if existing is None or existing != value:
            return False
        tx._delete(store, existing)
        return True

    def delete_by(self, column: str, value: Any) -> int:
        """Delete every row whose ``column`` equals ``value``; return how many.

        Saves a loop in module code.
        """
        rows = self.filter(**{column: value})
        tx = self._writable()
        for row in rows:
            tx._delete(self._store, row)
        return len(rows)

    def update(self, row: Any) -> Any:
        """Replace the row with the same primary key (must exist); return the new row.

        Subscribers see an update as a delete plus an insert with the same key.
        """
        tx = self._writable()
        store = self._store
        if store.schema.primary_key is None:
            raise ReducerError(f"table {self.name} has no primary key to update by")
        value = store.normalize(row)
        old = store.rows.get(store.key(value))
        if old is None:
            raise ReducerError(f"no {self.name} row with primary key {store.key(value)!r} to update")
        key = store.key(value)
        for c, index in store.uniques.items():
            holder = index.get(store.getters[c](value))
            if holder is not None and holder != key:
                raise _duplicate(store, c, value)
        tx._replace(store, old, value)
        return value


def _duplicate(store: _Store, column: int, row: Any) -> ReducerError:
    name = store.schema.columns[column].name
    value = store.getters[column](row)
    return ReducerError(f"duplicate unique column value for {store.name}.{name}: {value!r}")


class DbView:
    """The tables of a database, as ``db["Player"]`` or ``db.Player``.

    Reducers read naturally (``ctx.db.Player``) while names that clash with Python still work.
    """

    def __init__(self, db: Database, tx: Transaction | None) -> None:
        self._db = db
        self._tx = tx

    def __getitem__(self, name: str) -> TableHandle:
        try:
            return TableHandle(self._db.stores[name], self._tx)
        except KeyError:
            raise KeyError(f"no table {name!r}") from None

    def __getattr__(self, name: str) -> TableHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class ReducerContext:
    """What a reducer sees: the caller, the time, and read/write access to the tables.

    ``connection_id`` is None for calls that have no connection (system, scheduled, HTTP SQL).
    """

    sender: Identity
    connection_id: ConnectionId | None
    timestamp: Timestamp
    db: DbView
    identity: Identity
    """The database's own identity."""


@dataclass
class ProcedureContext:
    """What a procedure sees: the caller, the time, read access, and ``with_tx`` to change tables.

    Each ``with_tx`` call commits its own transaction, broadcast to subscribers like a reducer's
    (with an empty reducer name and connection id 0).
    """

    sender: Identity
    connection_id: ConnectionId | None
    timestamp: Timestamp
    db: DbView
    identity: Identity
    _run_tx: Callable[[Callable[[ReducerContext], Any]], Any] = field(repr=False, default=lambda f: None)

    def with_tx(self, body: Callable[[ReducerContext], Any]) -> Any:
        """Run ``body(tx_ctx)`` in a transaction, commit it (or roll back if it raises), return its result.

        Procedures are not transactional themselves, as on the real server.
        """
        return self._run_tx(body)


class Database:
    """The in-memory state of one database: a store per table of the module.

    Not thread-safe on its own: the emulator only touches it from its event loop.
    """

    def __init__(self, module: Module) -> None:
        self.module = module
        self.schema = module.build()
        self.stores = {name: _Store(t, self.schema) for name, t in module.tables.items()}

    def view(self, tx: Transaction | None = None) -> DbView:
        """Tables for reading (no ``tx``) or for writing inside ``tx``.

        The same handles serve reducers (writable) and inspection (read-only).
        """
        return DbView(self, tx)

    def begin(self) -> Transaction:
        """Start a transaction (the emulator runs one at a time).

        Transactions record the net changes subscribers are told about.
        """
        return Transaction(self)

    def apply(self, changes: Mapping[str, tuple[Sequence[Any], Sequence[Any]]]) -> None:
        """Apply a committed transaction's net (deleted, inserted) rows again, without a reducer.

        Used to replay a commit log. A row deleted and inserted under one primary key (an update)
        keeps its place in the table, as it did when the transaction ran.
        """
        for name, (deleted, inserted) in changes.items():
            store = self.stores[name]
            replaced = {store.key(row) for row in inserted}
            for row in deleted:
                if store.key(row) not in replaced:
                    Transaction._raw_delete(store, row)
            for row in inserted:
                old = store.rows.get(store.key(row))
                if old is None:
                    Transaction._raw_insert(store, row)
                else:
                    Transaction._swap(store, old, row)

    def rows(self, table: str) -> list[Any]:
        """Every row of a table, in insertion order.

        Snapshots and queries scan tables in a stable order.
        """
        return list(self.stores[table].rows.values())
