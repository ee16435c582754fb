"""The SQL subset of SpacetimeDB subscriptions and one-off queries: parse, type-check, evaluate.

Grammar (as the real server's ``sql-parser`` accepts it)::

    query      = SELECT ( '*' | ident '.' '*' ) FROM table [ [AS] alias ]
                 { [INNER] JOIN table [ [AS] alias ] [ ON field '=' field ] } [ WHERE predicate ] [ ';' ]
    predicate  = predicate AND predicate | predicate OR predicate | expr op expr | '(' predicate ')'
    expr       = literal | column | alias '.' column | :sender
    op         = '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    literal    = integer | float | 'string' | 0x... | X'...' | TRUE | FALSE

Keywords are case-insensitive; table and column names are matched exactly (no case folding), quoted
with ``"..."`` if needed. ``NOT``, ``LIKE``, ``IN``, ``IS NULL``, projections and aggregates are
rejected with the real server's error texts, so a query that works here works there.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rx_spacetimedb.protocol.sats import field_name
from rx_spacetimedb.protocol.types import (
    INT_RANGES,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    SumType,
)
from rx_spacetimedb.protocol.values import ConnectionId, Identity, TimeDuration, Timestamp, Uuid
from rx_spacetimedb.testing.module import Database, TableSchema

__all__ = ["Query", "SqlError", "compile_query", "is_select_star_from_star"]

_STAR_STAR = re.compile(r"select\s+\*\s+from\s+\*", re.IGNORECASE)


class SqlError(Exception):
    """A query the server would reject; ``str()`` is the server's error text.

    Subscriptions wrap it as ``<text>, executing: `<sql>``` (see ``subscription_text``).
    """

    def subscription_text(self, sql: str) -> str:
        """The error as the subscription paths report it (with the query appended)."""
        return f"{self}, executing: `{sql}`"


def is_select_star_from_star(text: str) -> bool:
    """True for ``SELECT * FROM *`` in any case with any blanks (no ``;``), as §5.7 describes."""
    return _STAR_STAR.fullmatch(text.strip()) is not None


# -- tokens ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<hex>[xX]'[0-9a-fA-F]*')
  | (?P<hexnum>0[xX][0-9a-fA-F]+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<param>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|=|<|>)
  | (?P<punct>[*.,;()+-])
""",
    re.VERBOSE,
)

_KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "join",
        "inner",
        "on",
        "as",
        "true",
        "false",
        "like",
        "in",
        "is",
        "null",
        "limit",
        "order",
        "by",
        "group",
        "having",
        "distinct",
        "left",
        "right",
        "outer",
        "cross",
        "full",
        "union",
        "insert",
        "update",
        "delete",
        "set",
        "values",
        "into",
        "count",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    value: str

    def keyword(self, word: str) -> bool:
        return self.kind == "ident" and self.value.lower() == word


def _tokenize(sql: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        if match is None:
            raise SqlError(f"sql parser error: Expected an expression, found: {sql[pos : pos + 10]!s}")
        pos = match.end()
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "ws":
            continue
        if kind == "qident":
            tokens.append(_Tok("qident", text, text[1:-1].replace('""', '"')))
        elif kind == "str":
            tokens.append(_Tok("str", text, text[1:-1].replace("''", "'")))
        elif kind == "hex":
            tokens.append(_Tok("hex", text, text[2:-1]))
        elif kind == "hexnum":
            tokens.append(_Tok("hex", text, text[2:]))
        else:
            tokens.append(_Tok(kind, text, text))
    return tokens


# -- AST -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    alias: str | None
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Lit:
    kind: str  # num, str, hex, bool, sender
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Cmp:
    left: _Field | _Lit
    op: str
    right: _Field | _Lit


@dataclasses.dataclass(frozen=True, slots=True)
class _Log:
    op: str  # and / or
    left: _Expr
    right: _Expr


_Expr = _Cmp | _Log | _Lit


@dataclasses.dataclass
class _Select:
    project: str | None  # None = *, else the alias of t.*
    table: str
    alias: str
    joins: list[tuple[str, str, _Cmp | None]]
    where: _Expr | None


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.toks = _tokenize(sql)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise SqlError("sql parser error: Expected an expression, found: EOF")
        self.i += 1
        return tok

    def at_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.keyword(word)

    def expect_keyword(self, word: str) -> None:
        tok = self.peek()
        if tok is None or not tok.keyword(word):
            found = tok.text if tok is not None else "EOF"
            raise SqlError(f"sql parser error: Expected {word.upper()}, found: {found}")
        self.i += 1

    def ident(self) -> str:
        tok = self.next()
        if tok.kind == "qident" or (tok.kind == "ident" and tok.value.lower() not in _KEYWORDS):
            return tok.value
        raise SqlError(f"sql parser error: Expected identifier, found: {tok.text}")

    def parse(self) -> _Select:
        if not self.toks or all(t.text == ";" for t in self.toks):
            raise SqlError("Empty SQL query")
        first = self.peek()
        assert first is not None
        if first.kind == "ident" and first.value.lower() in ("insert", "update", "delete", "set"):
            raise SqlError("Unsupported: Non-SELECT queries")
        self.expect_keyword("select")
        if self.at_keyword("distinct"):
            raise SqlError(f"Unsupported SELECT: {self.sql.strip()}")
        project = self.projection()
        if not self.at_keyword("from"):
            if self.peek() is None:
                raise SqlError("A FROM clause is required")
            tok = self.next()
            if tok.text == ",":
                raise SqlError(
                    "Column projections are not supported in subscriptions; "
                    "Subscriptions must return a table type"
                )
            raise SqlError(f"sql parser error: Expected end of statement, found: {tok.text}")
        self.expect_keyword("from")
        table, alias = self.relvar()
        joins: list[tuple[str, str, _Cmp | None]] = []
        while True:
            if self.at_keyword("inner"):
                self.i += 1
                self.expect_keyword("join")
            elif self.at_keyword("join"):
                self.i += 1
            elif self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                raise SqlError("Implicit joins are not supported")
            elif any(self.at_keyword(w) for w in ("left", "right", "full", "outer", "cross")):
                raise SqlError("Unsupported JOIN type")
            else:
                break
            jtable, jalias = self.relvar()
            on: _Cmp | None = None
            if self.at_keyword("on"):
                self.i += 1
                left = self.field()
                tok = self.next()
                if tok.text != "=":
                    raise SqlError("Non-column join constraints are not supported")
                on = _Cmp(left, "=", self.field())
            joins.append((jtable, jalias, on))
        where: _Expr | None = None
        if self.at_keyword("where"):
            self.i += 1
            where = self.expr()
        end = self.peek()
        if end is not None and end.text == ";":
            self.i += 1
            if self.peek() is not None:
                raise SqlError("Multiple SQL statements are not supported")
            end = None
        if end is not None:
            tok = end
            if any(tok.keyword(w) for w in ("order", "limit", "group", "having", "union")):
                raise SqlError(f"Unsupported: {self.sql.strip()}")
            raise SqlError(f"sql parser error: Expected end of statement, found: {tok.text}")
        return _Select(project, table, alias, joins, where)

    def projection(self) -> str | None:
        tok = self.next()
        if tok.text == "*":
            return None
        if tok.kind in ("ident", "qident"):
            after = self.peek()
            if after is not None and after.text == ".":
                self.i += 1
                star = self.next()
                if star.text == "*":
                    return tok.value
            if tok.keyword("count"):
                raise SqlError(
                    "Column projections are not supported in subscriptions; "
                    "Subscriptions must return a table type"
                )
            raise SqlError(
                "Column projections are not supported in subscriptions; "
                "Subscriptions must return a table type"
            )
        raise SqlError(f"sql parser error: Expected an expression, found: {tok.text}")

    def relvar(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is not None and tok.text == "(":
            raise SqlError("Unsupported FROM expression: subquery")
        if tok is not None and tok.text == "*":
            raise SqlError("sql parser error: Expected identifier, found: *")
        name = self.ident()
        after = self.peek()
        if after is not None and after.text == ".":
            raise SqlError(
                f"Multi-part names are not supported: {name}.{self.toks[self.i + 1].text}"
                if self.i + 1 < len(self.toks)
                else f"Multi-part names are not supported: {name}"
            )
        alias = name
        if self.at_keyword("as"):
            self.i += 1
            alias = self.ident()
        elif after is not None and (
            after.kind == "qident" or (after.kind == "ident" and after.value.lower() not in _KEYWORDS)
        ):
            alias = self.ident()
        return name, alias

    def field(self) -> _Field:
        first = self.ident()
        tok = self.peek()
        if tok is not None and tok.text == ".":
            self.i += 1
            return _Field(first, self.ident())
        return _Field(None, first)

    def expr(self) -> _Expr:
        left = self.conj()
        while self.at_keyword("or"):
            self.i += 1
            left = _Log("or", left, self.conj())
        return left

    def conj(self) -> _Expr:
        left = self.atom()
        while self.at_keyword("and"):
            self.i += 1
            left = _Log("and", left, self.atom())
        return left

    def atom(self) -> _Expr:
        tok = self.peek()
        if tok is None:
            raise SqlError("sql parser error: Expected an expression, found: EOF")
        if tok.text == "(":
            self.i += 1
            inner = self.expr()
            close = self.next()
            if close.text != ")":
                raise SqlError(f"sql parser error: Expected ), found: {close.text}")
            return inner
        if tok.keyword("not"):
            raise SqlError(f"Unsupported expression: {self._rest_text()}")
        left = self.operand()
        op = self.peek()
        if op is None or op.kind != "op":
            if op is not None and any(op.keyword(w) for w in ("like", "in", "is", "between", "not")):
                raise SqlError(f"Unsupported expression: {self._rest_text(back=1)}")
            if isinstance(left, _Lit):
                return left
            return _Cmp(left, "bool", _Lit("bool", "true"))
        self.i += 1
        right = self.operand()
        return _Cmp(left, op.text, right)

    def _rest_text(self, back: int = 0) -> str:
        return " ".join(t.text for t in self.toks[self.i - back :]).rstrip(" ;")

    def operand(self) -> _Field | _Lit:
        tok = self.peek()
        if tok is None:
            raise SqlError("sql parser error: Expected an expression, found: EOF")
        if tok.kind == "num":
            self.i += 1
            return _Lit("num", tok.value)
        if tok.text in ("+", "-"):
            self.i += 1
            num = self.next()
            if num.kind != "num":
                raise SqlError(f"Unsupported expression: {tok.text}{num.text}")
            return _Lit("num", ("-" if tok.text == "-" else "") + num.value)
        if tok.kind == "str":
            self.i += 1
            return _Lit("str", tok.value)
        if tok.kind == "hex":
            self.i += 1
            return _Lit("hex", tok.value)
        if tok.kind == "param":
            self.i += 1
            if tok.value != ":sender":
                raise SqlError(f"Unsupported literal expression: {tok.value}")
            return _Lit("sender", tok.value)
        if tok.keyword("true") or tok.keyword("false"):
            self.i += 1
            return _Lit("bool", tok.value.lower())
        if tok.keyword("null"):
            raise SqlError("Unsupported literal expression: NULL")
        return self.field()


# -- typing and evaluation -------------------------------------------------------------------

Row = Any
_Pred = Callable[[dict[str, Row]], bool]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _type_name(ty: AlgebraicType, resolve: Callable[[AlgebraicType], AlgebraicType]) -> str:
    ty = resolve(ty)
    if isinstance(ty, PrimitiveType):
        return ty.name
    if isinstance(ty, ArrayType):
        return f"Array<{_type_name(ty.elem, resolve)}>"
    if isinstance(ty, ProductType):
        special = ty.special
        names = {
            "__identity__": "Identity",
            "__connection_id__": "ConnectionId",
            "__timestamp_micros_since_unix_epoch__": "Timestamp",
            "__time_duration_micros__": "TimeDuration",
            "__uuid__": "Uuid",
        }
        if special is not None:
            return names[special]
        return (
            "("
            + ", ".join(
                f"{n}: {_type_name(e.type, resolve)}" for n, e in zip(ty.names, ty.elements, strict=True)
            )
            + ")"
        )
    if isinstance(ty, SumType):
        if ty.is_option:
            return f"Option<{_type_name(ty.variants[0].type, resolve)}>"
        return "(" + " | ".join(f"{v.name}: {_type_name(v.type, resolve)}" for v in ty.variants) + ")"
    return "?"


def _hex_int(text: str, bits: int) -> int:
    if not text or len(text) > bits // 4:
        raise ValueError(text)
    return int(text, 16)


def _literal_value(
    lit: _Lit, ty: AlgebraicType, resolve: Callable[[AlgebraicType], AlgebraicType], sender: Identity | None
) -> Any:
    """Convert a literal to a value of the column's type, or raise SqlError as the server does."""
    target = resolve(ty)
    shown = lit.text

    def invalid() -> SqlError:
        return SqlError(
            f"The literal expression `{shown}` cannot be parsed as type `{_type_name(target, resolve)}`"
        )

    if lit.kind == "sender":
        if isinstance(target, ProductType) and target.special == "__identity__" and sender is not None:
            return sender
        raise SqlError(f"Unexpected type: (expected) {_type_name(target, resolve)} != Identity (inferred)")
    try:
        if isinstance(target, PrimitiveType):
            name = target.name
            if name == "Bool":
                if lit.kind != "bool":
                    raise invalid()
                return lit.text == "true"
            if name == "String":
                if lit.kind != "str":
                    raise invalid()
                return lit.text
            if name in ("F32", "F64"):
                if lit.kind != "num":
                    raise invalid()
                return float(lit.text)
            low, high = INT_RANGES[name]
            if lit.kind == "num":
                if re.fullmatch(r"-?\d+", lit.text):
                    value = int(lit.text)
                else:
                    as_float = float(lit.text)
                    if not as_float.is_integer() or not math.isfinite(as_float):
                        raise invalid()
                    value = int(as_float)
            elif lit.kind == "hex":
                value = int(lit.text, 16)
            else:
                raise invalid()
            if not low <= value <= high:
                raise invalid()
            return value
        if isinstance(target, ProductType):
            special = target.special
            if special == "__identity__" and lit.kind in ("hex", "str"):
                return Identity(_hex_int(lit.text.removeprefix("0x").removeprefix("0X"), 256))
            if special == "__connection_id__" and lit.kind in ("hex", "str", "num"):
                if lit.kind == "num":
                    return ConnectionId(int(lit.text))
                return ConnectionId(_hex_int(lit.text.removeprefix("0x").removeprefix("0X"), 128))
            if special == "__timestamp_micros_since_unix_epoch__" and lit.kind == "str":
                return Timestamp.from_datetime(datetime.fromisoformat(lit.text.replace("Z", "+00:00")))
            if special == "__timestamp_micros_since_unix_epoch__" and lit.kind == "num":
                return Timestamp(int(lit.text))
            if special == "__time_duration_micros__" and lit.kind == "num":
                return TimeDuration(int(lit.text))
            if special == "__uuid__" and lit.kind == "str":
                return Uuid(uuid.UUID(lit.text).int)
        is_bytes = isinstance(target, ArrayType) and resolve(target.elem) == PrimitiveType("U8")
        if is_bytes and lit.kind == "hex":
            return bytes.fromhex(lit.text)
    except (ValueError, OverflowError):
        raise invalid() from None
    raise invalid()


@dataclasses.dataclass
class Query:
    """A compiled query: the table whose rows it returns and a predicate over row bindings.

    ``rows(db)`` evaluates it against the current state; ``matches(row)`` checks one row of the
    returned table (single-table queries) for transaction deltas.
    """

    sql: str
    table: TableSchema
    alias: str
    joins: list[tuple[TableSchema, str, tuple[tuple[str, int], tuple[str, int]] | None]]
    predicate: _Pred | None
    base: TableSchema
    base_alias: str

    @property
    def table_name(self) -> str:
        """The table whose rows this query returns."""
        return self.table.name

    @property
    def is_join(self) -> bool:
        """True if the query joins other tables."""
        return bool(self.joins)

    def matches(self, row: Row) -> bool:
        """True if a row of the returned table (of a single-table query) matches the WHERE clause."""
        return self.predicate is None or self.predicate({self.alias: row})

    def rows(self, db: Database) -> list[Row]:
        """The rows of the returned table this query selects now (join: distinct matching rows)."""
        if not self.joins:
            return [r for r in db.rows(self.table.name) if self.matches(r)]
        bindings: list[dict[str, Row]] = [{self.base_alias: r} for r in db.rows(self.base.name)]
        for schema, alias, on in self.joins:
            others = db.rows(schema.name)
            joined: list[dict[str, Row]] = []
            for binding in bindings:
                for other in others:
                    candidate = {**binding, alias: other}
                    if on is None or _field_value(candidate, on[0]) == _field_value(candidate, on[1]):
                        joined.append(candidate)
            bindings = joined
        if self.predicate is not None:
            bindings = [b for b in bindings if self.predicate(b)]
        result = [b[self.alias] for b in bindings]
        return list(dict.fromkeys(result))

    def joined_tables(self) -> set[str]:
        """Every table this query reads."""
        return {self.table.name, *(schema.name for schema, _, _ in self.joins)}


def _field_value(binding: dict[str, Row], ref: tuple[str, int]) -> Any:
    alias, index = ref
    row = binding[alias]
    return getattr(row, dataclasses.fields(row)[index].name)


def compile_query(sql: str, db: Database, *, sender: Identity | None = None, is_owner: bool = False) -> Query:
    """Parse and type-check one query against the module; raise SqlError with the server's text."""
    select = _Parser(sql).parse()
    schema = db.schema
    resolve = schema.codec.resolve
    tables = db.module.tables

    def lookup(name: str) -> TableSchema:
        table = tables.get(name)
        if table is None or (not table.public and not is_owner):
            raise SqlError(f"no such table: `{name}`. If the table exists, it may be marked private.")
        return table

    scope: dict[str, TableSchema] = {}
    base = lookup(select.table)
    scope[select.alias] = base
    joins: list[tuple[TableSchema, str, tuple[tuple[str, int], tuple[str, int]] | None]] = []
    for jname, jalias, _ in select.joins:
        jtable = lookup(jname)
        if jalias in scope:
            raise SqlError(f"Duplicate name `{jalias}`")
        scope[jalias] = jtable

    def resolve_field(f: _Field) -> tuple[str, int, AlgebraicType]:
        if f.alias is None:
            if len(scope) > 1:
                raise SqlError("Names must be qualified when using joins")
            alias = next(iter(scope))
        else:
            alias = f.alias
        table = scope.get(alias)
        if table is None:
            raise SqlError(f"`{alias}` is not in scope")
        try:
            index = table.column_names.index(f.name)
        except ValueError:
            raise SqlError(f"`{table.name}` does not have a field `{f.name}`") from None
        return alias, index, table.columns[index].type

    for _, jalias, on in select.joins:
        if on is None:
            joins.append((scope[jalias], jalias, None))
            continue
        assert isinstance(on.left, _Field) and isinstance(on.right, _Field)
        la, li, lt = resolve_field(on.left)
        ra, ri, rt = resolve_field(on.right)
        if resolve(lt) != resolve(rt):
            raise SqlError(
                f"Unexpected type: (expected) {_type_name(lt, resolve)} != "
                f"{_type_name(rt, resolve)} (inferred)"
            )
        joins.append((scope[jalias], jalias, ((la, li), (ra, ri))))

    if select.project is None:
        if joins:
            raise SqlError("SELECT * is not supported for joins")
        returned_alias = select.alias
    else:
        if select.project not in scope:
            raise SqlError(f"`{select.project}` is not in scope")
        returned_alias = select.project
    returned = scope[returned_alias]

    def compile_expr(expr: _Expr) -> _Pred:
        if isinstance(expr, _Lit):
            if expr.kind != "bool":
                raise SqlError(f"Unexpected type: (expected) Bool != {_lit_type(expr)} (inferred)")
            constant = expr.text == "true"
            return lambda _b: constant
        if isinstance(expr, _Log):
            left, right = compile_expr(expr.left), compile_expr(expr.right)
            if expr.op == "and":
                return lambda b: left(b) and right(b)
            return lambda b: left(b) or right(b)
        if expr.op == "bool":
            assert isinstance(expr.left, _Field)
            alias, index, ty = resolve_field(expr.left)
            if resolve(ty) != PrimitiveType("Bool"):
                raise SqlError(f"Unexpected type: (expected) Bool != {_type_name(ty, resolve)} (inferred)")
            getter = _getter(alias, scope[alias], index)
            return lambda b: bool(getter(b))
        compare = _OPS[expr.op]
        sides: list[Callable[[dict[str, Row]], Any] | None] = [None, None]
        types: list[AlgebraicType | None] = [None, None]
        for i, side in enumerate((expr.left, expr.right)):
            if isinstance(side, _Field):
                alias, index, ty = resolve_field(side)
                sides[i] = _getter(alias, scope[alias], index)
                types[i] = ty
        if types[0] is None and types[1] is None:
            raise SqlError("Cannot resolve type for literal expression")
        for i, side in enumerate((expr.left, expr.right)):
            if isinstance(side, _Lit):
                other = types[1 - i]
                assert other is not None
                value = _literal_value(side, other, resolve, sender)
                sides[i] = (lambda v: lambda _b: v)(value)
        if types[0] is not None and types[1] is not None and resolve(types[0]) != resolve(types[1]):
            raise SqlError(
                f"Unexpected type: (expected) {_type_name(types[0], resolve)} != "
                f"{_type_name(types[1], resolve)} (inferred)"
            )
        column_type = resolve(types[0] if types[0] is not None else types[1])  # type: ignore[arg-type]
        if expr.op not in ("=", "!=", "<>") and not _ordered(column_type):
            shown = _type_name(column_type, resolve)
            raise SqlError(f"Invalid binary operator `{expr.op}` for type `{shown}`")
        left_get, right_get = sides
        assert left_get is not None and right_get is not None

        def pred(b: dict[str, Row]) -> bool:
            try:
                return bool(compare(left_get(b), right_get(b)))
            except TypeError:
                return False

        return pred

    predicate = compile_expr(select.where) if select.where is not None else None
    return Query(sql, returned, returned_alias, joins, predicate, base, select.alias)


def _ordered(ty: AlgebraicType) -> bool:
    return (
        isinstance(ty, PrimitiveType)
        or (isinstance(ty, ProductType) and ty.special is not None)
        or (isinstance(ty, ArrayType))
    )


def _lit_type(lit: _Lit) -> str:
    return {"num": "I32", "str": "String", "hex": "U256", "bool": "Bool", "sender": "Identity"}[lit.kind]


def _getter(alias: str, table: TableSchema, index: int) -> Callable[[dict[str, Row]], Any]:
    attr = field_name(table.column_names[index])
    get = operator.attrgetter(attr)
    return lambda b: get(b[alias])
