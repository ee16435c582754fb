"""The SQL subset of SpacetimeDB subscriptions and one-off queries: parse, type-check, evaluate.

Grammar (as the real server's ``sql-parser`` accepts it)::

    query      = SELECT ( '*' | ident '.' '*' ) FROM table [ [AS] alias ]
                 { [INNER] JOIN table [ [AS] alias ] [ ON field '=' field ] } [ WHERE predicate ] [ ';' ]
    predicate  = predicate AND predicate | predicate OR predicate | expr op expr | '(' predicate ')'
                 | field | TRUE | FALSE
    expr       = literal | column | alias '.' column | :sender
    op         = '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    literal    = [+-] number | 'string' | 0x... | X'...' | TRUE | FALSE

Keywords are case-insensitive; table and column names match exactly (no case folding; quote with
``"..."`` if needed). Type checking follows the server (``crates/expr``): a literal is parsed as the
type of the column it is compared with, whatever its spelling (``name = 5`` compares with the string
"5", ``score = '5'`` with the number 5), and errors carry the server's texts. ``NOT``, ``LIKE``,
``IN``, ``IS NULL``, column projections and aggregates are rejected as the server rejects them.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from rx_spacetimedb.protocol.jsontext import format_f32
from rx_spacetimedb.protocol.sats import field_name
from rx_spacetimedb.protocol.types import (
    INT_RANGES,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
)
from rx_spacetimedb.protocol.values import ConnectionId, Identity, Timestamp, Uuid
from rx_spacetimedb.testing.module import Database, DbView, TableSchema

__all__ = ["Dml", "Query", "SqlError", "compile_query", "compile_statement", "is_select_star_from_star"]

_STAR_STAR = re.compile(r"select\s+\*\s+from\s+\*", re.IGNORECASE)
_RETURN_TYPE = "Column projections are not supported in subscriptions; Subscriptions must return a table type"


class SqlError(Exception):
    """A query the server would reject; ``str()`` is the server's error text.

    Subscriptions wrap it as ``<text>, executing: `<sql>``` (see ``subscription_text``).
    """

    def subscription_text(self, sql: str) -> str:
        """The error as the subscription paths report it (with the query appended).

        Subscriptions report errors with the query appended, one-off queries without.
        """
        return f"{self}, executing: `{sql}`"


def is_select_star_from_star(text: str) -> bool:
    """True for ``SELECT * FROM *`` in any case with any blanks (no ``;``), as §5.7 describes.

    That text is expanded only by ``Subscribe`` and ``SubscribeMulti``.
    """
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

_RESERVED = frozenset({
    "select", "from", "where", "and", "or", "not", "join", "inner", "on", "as", "true", "false",
    "like", "in", "is", "null", "limit", "order", "by", "group", "having", "distinct", "left", "right",
    "outer", "cross", "full", "union", "except", "intersect", "between", "offset",
})  # fmt: skip


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
            raise SqlError(f"sql parser error: Expected an expression, found: {sql[pos]}")
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
    kind: str  # num, str, hex, bool
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Sender:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class _Bin:
    op: str
    left: _Expr
    right: _Expr


@dataclasses.dataclass(frozen=True, slots=True)
class _Log:
    op: str  # and / or
    left: _Expr
    right: _Expr


_Expr = _Field | _Lit | _Sender | _Bin | _Log


@dataclasses.dataclass
class _Select:
    project: str  # "*", "alias.*" (as the alias), or "" for column projections
    project_alias: str | None
    table: str
    alias: str
    joins: list[tuple[str, str, _Bin | None]]
    where: _Expr | None
    items: list[tuple[str, _Field | None]] | None = None
    """/sql projections: (output name, column), the column None for ``COUNT(*) AS name``."""
    limit: int | None = None


@dataclasses.dataclass
class _Dml:
    kind: str  # insert, update or delete
    table: str
    columns: list[str]  # insert: the named columns (the server checks only how many there are)
    values: list[list[_Lit]]  # insert: one list per row, in the table's column order
    assignments: list[tuple[str, _Lit]]  # update: column = literal
    where: _Expr | None


class _Parser:
    """Recursive descent over the tokens; raises SqlError with the server's parse errors."""

    def __init__(self, sql: str, full: bool = False) -> None:
        self.sql = sql
        self.toks = _tokenize(sql)
        self.i = 0
        self.full = full
        """The HTTP ``/sql`` grammar: column projections, ``COUNT(*)``, ``LIMIT`` and DML."""

    def peek(self, ahead: int = 0) -> _Tok | None:
        index = self.i + ahead
        return self.toks[index] if index < len(self.toks) else None

    def text_at(self, ahead: int) -> str:
        tok = self.peek(ahead)
        return "" if tok is None else tok.text

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise SqlError("sql parser error: Expected an expression, found: EOF")
        self.i += 1
        return tok

    def at(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.keyword(word)

    def at_text(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind in ("punct", "op") and tok.text == text

    def expect(self, word: str) -> None:
        if not self.at(word):
            tok = self.peek()
            raise SqlError(f"sql parser error: Expected {word.upper()}, found: {tok.text if tok else 'EOF'}")
        self.i += 1

    def ident(self) -> str:
        tok = self.next()
        if tok.kind == "qident" or (tok.kind == "ident" and tok.value.lower() not in _RESERVED):
            return tok.value
        raise SqlError(f"sql parser error: Expected identifier, found: {tok.text}")

    def rest(self, start: int) -> str:
        return " ".join(t.text for t in self.toks[start:] if t.text != ";")

    def parse(self) -> _Select | _Dml:
        separators = [i for i, t in enumerate(self.toks) if t.text == ";"]
        if separators and separators != [len(self.toks) - 1] and len(self.toks) > 1:
            raise SqlError("Multiple SQL statements are not supported")
        if not self.toks or all(t.text == ";" for t in self.toks):
            raise SqlError("Empty SQL query")
        first = self.toks[0]
        if self.full and first.kind == "ident" and first.value.lower() in ("insert", "update", "delete"):
            return self.dml(first.value.lower())
        if first.kind == "ident" and first.value.lower() in (
            "insert",
            "update",
            "delete",
            "set",
            "create",
            "drop",
            "alter",
            "show",
        ):
            raise SqlError("Unsupported: Non-SELECT queries")
        self.expect("select")
        if self.at("distinct") or self.at("all"):
            raise SqlError(f"Unsupported SELECT: {self.sql.strip().rstrip(';')}")
        items: list[tuple[str, _Field | None]] | None = None
        if self.full and not self.at_text("*") and (self.text_at(1), self.text_at(2)) != (".", "*"):
            items = self.items()
            project, project_alias = "", None
        else:
            project, project_alias = self.projection()
        if not self.at("from"):
            if self.peek() is None or self.at_text(";"):
                raise SqlError("A FROM clause is required")
            tok = self.next()
            raise SqlError(f"sql parser error: Expected end of statement, found: {tok.text}")
        self.i += 1
        if self.at_text("*"):
            raise SqlError("sql parser error: Expected identifier, found: *")
        table, alias = self.relvar()
        joins: list[tuple[str, str, _Bin | None]] = []
        while True:
            if self.at("inner") and self.text_at(1).lower() == "join":
                self.i += 2
            elif self.at("join"):
                self.i += 1
            elif self.at_text(","):
                raise SqlError("Implicit joins are not supported")
            elif any(self.at(w) for w in ("left", "right", "full", "outer", "cross")):
                raise SqlError("Non-inner joins are not supported")
            else:
                break
            jtable, jalias = self.relvar()
            on: _Bin | None = None
            if self.at("on"):
                self.i += 1
                left = self.operand()
                if not isinstance(left, _Field) or self.text_at(0) != "=":
                    raise SqlError("Non-column join constraints are not supported")
                self.i += 1
                right = self.operand()
                if not isinstance(right, _Field) or self.at("and") or self.at("or"):
                    raise SqlError("Non-column join constraints are not supported")
                on = _Bin("=", left, right)
            joins.append((jtable, jalias, on))
        where: _Expr | None = None
        if self.at("where"):
            self.i += 1
            where = self.disjunction()
        limit: int | None = None
        if self.full and self.at("limit"):
            self.i += 1
            tok = self.next()
            if tok.kind != "num" or not tok.text.isdigit():
                raise SqlError(f"Unsupported LIMIT expression: {tok.text}")
            limit = int(tok.text)
        if self.at_text(";"):
            self.i += 1
        end = self.peek()
        if end is not None:
            tok = end
            if any(tok.keyword(w) for w in ("order", "limit", "group", "having", "offset")):
                raise SqlError(f"Unsupported: {self.sql.strip().rstrip(';')}")
            if any(tok.keyword(w) for w in ("union", "except", "intersect")):
                raise SqlError(f"Unsupported set operation: {self.sql.strip().rstrip(';')}")
            raise SqlError(f"sql parser error: Expected end of statement, found: {tok.text}")
        select = _Select(project, project_alias, table, alias, joins, where, items, limit)
        if joins:
            _require_qualified(select)
        return select

    def items(self) -> list[tuple[str, _Field | None]]:
        """``column [[AS] name], ...`` or a lone ``COUNT(*) [AS] name`` (the /sql grammar).

        As the server's parser: an aggregate must stand alone and be named, and COUNT(*) is the only one.
        """
        items: list[tuple[str, _Field | None]] = []
        functions: list[str] = []
        while True:
            start = self.i
            if self.at_text("*") or (self.text_at(1), self.text_at(2)) == (".", "*"):
                raise SqlError("Mixed wildcard projections are not supported")
            head = self.peek()
            if head is not None and head.kind == "ident" and self.text_at(1) == "(":
                functions.append(self.function())
                items.append((self._alias() or "", None))
            else:
                column = self.operand()
                if not isinstance(column, _Field):
                    shown = "".join(t.text for t in self.toks[start : self.i])
                    raise SqlError(f"Unsupported projection expression: {shown}")
                items.append((self._alias() or column.name, column))
            if not self.at_text(","):
                break
            self.i += 1
        if functions:
            if len(items) > 1:
                raise SqlError(f"Unsupported projection expression: {functions[0]}")
            if not items[0][0]:
                raise SqlError("Aggregate expressions must have column aliases")
            if functions[0].lower() != "count(*)":
                raise SqlError(f"Unsupported aggregate function: {functions[0]}")
        return items

    def function(self) -> str:
        """Skip a function call ``name(...)``; its text as the server prints it (``SUM(score)``)."""
        name = self.next().text
        self.i += 1  # the "("
        inner: list[str] = []
        depth = 1
        while depth:
            tok = self.next()
            depth += (tok.text == "(") - (tok.text == ")")
            if depth:
                inner.append(tok.text)
        return f"{name}({' '.join(inner).replace(' , ', ', ').replace('( ', '(').replace(' )', ')')})"

    def _alias(self) -> str | None:
        """``AS name`` or a bare ``name`` after a projection item, if there is one."""
        if self.at("as"):
            self.i += 1
            return self.ident()
        return self.ident() if self._at_alias() else None

    def _at_alias(self) -> bool:
        """True at an identifier that can only be an alias (``name n``, without ``AS``)."""
        tok = self.peek()
        return tok is not None and (
            tok.kind == "qident" or (tok.kind == "ident" and tok.value.lower() not in _RESERVED)
        )

    def literal(self) -> _Lit:
        start = self.i
        value = self.operand()
        if not isinstance(value, _Lit):
            raise SqlError(f"Unsupported literal expression: {self.rest(start)}")
        return value

    def dml(self, kind: str) -> _Dml:
        """``INSERT INTO t [(cols)] VALUES (...), ...``, ``UPDATE t SET c = v, ...``, ``DELETE FROM t``."""
        self.i += 1
        columns: list[str] = []
        values: list[list[_Lit]] = []
        assignments: list[tuple[str, _Lit]] = []
        where: _Expr | None = None
        if kind == "insert":
            self.expect("into")
            table = self.ident()
            if self.at_text("("):
                self.i += 1
                columns.append(self.ident())
                while self.at_text(","):
                    self.i += 1
                    columns.append(self.ident())
                self._close_paren()
            self.expect("values")
            while True:
                if not self.at_text("("):
                    raise SqlError(f"Unsupported INSERT expression: {self.rest(self.i)}")
                self.i += 1
                row = [self.literal()]
                while self.at_text(","):
                    self.i += 1
                    row.append(self.literal())
                self._close_paren()
                values.append(row)
                if not self.at_text(","):
                    break
                self.i += 1
        else:
            if kind == "delete":
                self.expect("from")
            table = self.ident()
            if kind == "update":
                self.expect("set")
                while True:
                    column = self.ident()
                    if not self.at_text("="):
                        rest = self.rest(self.i)
                        raise SqlError(f"Unsupported column/variable assignment expression: {rest}")
                    self.i += 1
                    assignments.append((column, self.literal()))
                    if not self.at_text(","):
                        break
                    self.i += 1
            if self.at("where"):
                self.i += 1
                where = self.disjunction()
        if self.at_text(";"):
            self.i += 1
        if (tok := self.peek()) is not None:
            raise SqlError(f"sql parser error: Expected end of statement, found: {tok.text}")
        return _Dml(kind, table, columns, values, assignments, where)

    def _close_paren(self) -> None:
        if not self.at_text(")"):
            tok = self.peek()
            raise SqlError(f"sql parser error: Expected ), found: {tok.text if tok else 'EOF'}")
        self.i += 1

    def projection(self) -> tuple[str, str | None]:
        if self.at_text("*"):
            self.i += 1
            if self.at_text(","):
                raise SqlError("Mixed wildcard projections are not supported")
            return "*", None
        head = self.peek()
        if (
            head is not None
            and head.kind in ("ident", "qident")
            and self.text_at(1) == "."
            and self.text_at(2) == "*"
        ):
            self.i += 3
            if self.at_text(","):
                raise SqlError("Mixed wildcard projections are not supported")
            return "alias", head.value
        # Column lists and aggregates parse, then fail type checking (after FROM and WHERE).
        depth = 0
        while (item := self.peek()) is not None and not (depth == 0 and item.keyword("from")):
            depth += item.text == "("
            depth -= item.text == ")"
            if item.text == "*" and depth == 0:
                raise SqlError("Mixed wildcard projections are not supported")
            self.i += 1
        if self.i == 1:
            raise SqlError("sql parser error: Expected an expression, found: EOF")
        return "", None

    def relvar(self) -> tuple[str, str]:
        if self.at_text("("):
            raise SqlError(f"Unsupported FROM expression: {self.rest(self.i)}")
        name = self.ident()
        if self.at_text("."):
            after = self.peek(1)
            raise SqlError(f"Multi-part names are not supported: {name}.{after.text if after else ''}")
        alias = name
        if self.at("as"):
            self.i += 1
            alias = self.ident()
        else:
            tok = self.peek()
            if tok is not None and (
                tok.kind == "qident" or (tok.kind == "ident" and tok.value.lower() not in _RESERVED)
            ):
                alias = self.ident()
        return name, alias

    def disjunction(self) -> _Expr:
        left = self.conjunction()
        while self.at("or"):
            self.i += 1
            left = _Log("or", left, self.conjunction())
        return left

    def conjunction(self) -> _Expr:
        left = self.comparison()
        while self.at("and"):
            self.i += 1
            left = _Log("and", left, self.comparison())
        return left

    def comparison(self) -> _Expr:
        start = self.i
        if self.at("not"):
            raise SqlError(f"Unsupported expression: {self.rest(start)}")
        if self.at_text("("):
            self.i += 1
            inner = self.disjunction()
            if not self.at_text(")"):
                tok = self.peek()
                raise SqlError(f"sql parser error: Expected ), found: {tok.text if tok else 'EOF'}")
            self.i += 1
            left: _Expr = inner
        else:
            left = self.operand()
        tok = self.peek()
        if tok is not None and tok.kind == "op":
            self.i += 1
            op = "<>" if tok.text == "!=" else tok.text
            if self.at_text("("):
                self.i += 1
                right = self.disjunction()
                if not self.at_text(")"):
                    tok = self.peek()
                    raise SqlError(f"sql parser error: Expected ), found: {tok.text if tok else 'EOF'}")
                self.i += 1
                return _Bin(op, left, right)
            return _Bin(op, left, self.operand())
        if tok is not None and any(tok.keyword(w) for w in ("like", "in", "is", "between", "not")):
            raise SqlError(f"Unsupported expression: {self.rest(start)}")
        if tok is not None and tok.kind == "punct" and tok.text in "+-*":
            raise SqlError(f"Unsupported binary operator: {tok.text}")
        return left

    def operand(self) -> _Expr:
        tok = self.peek()
        if tok is None:
            raise SqlError("sql parser error: Expected an expression, found: EOF")
        if tok.kind == "num":
            self.i += 1
            return _Lit("num", tok.value)
        if tok.text in ("+", "-") and tok.kind == "punct":
            self.i += 1
            num = self.next()
            if num.kind != "num":
                raise SqlError(f"Unsupported expression: {tok.text}{num.text}")
            return _Lit("num", ("-" if tok.text == "-" else "+") + num.value)
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
            return _Sender()
        if tok.keyword("true") or tok.keyword("false"):
            self.i += 1
            return _Lit("bool", tok.value.lower())
        if tok.keyword("null"):
            raise SqlError("Unsupported literal expression: NULL")
        if tok.kind in ("ident", "qident") and self.text_at(1) == "(":
            raise SqlError(f"Unsupported expression: {self.rest(self.i)}")
        first = self.ident()
        if self.at_text("."):
            self.i += 1
            column = self.next()
            if column.kind not in ("ident", "qident"):
                raise SqlError(f"sql parser error: Expected identifier, found: {column.text}")
            return _Field(first, column.value)
        return _Field(None, first)


def _fields(expr: _Expr | None) -> list[_Field]:
    if expr is None:
        return []
    if isinstance(expr, _Field):
        return [expr]
    if isinstance(expr, _Bin | _Log):
        return _fields(expr.left) + _fields(expr.right)
    return []


def _require_qualified(select: _Select) -> None:
    exprs: list[_Expr | None] = [select.where, *(on for _, _, on in select.joins)]
    if any(f.alias is None for e in exprs for f in _fields(e)):
        raise SqlError("Names must be qualified when using joins")


# -- typing ----------------------------------------------------------------------------------

Row = Any
_Bindings = dict[str, Row]
_Eval = Callable[[_Bindings], Any]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<>": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_BOOL = PrimitiveType("Bool")
_IDENTITY_NAME = "(__identity__: U256)"


_Resolver = Callable[[AlgebraicType], AlgebraicType]


def _fmt(ty: AlgebraicType, resolve: _Resolver) -> str:
    """The server's ``fmt_algebraic_type`` (special types print as the products they are)."""
    ty = resolve(ty)
    if isinstance(ty, PrimitiveType):
        return ty.name
    if isinstance(ty, ArrayType):
        return f"Array<{_fmt(ty.elem, resolve)}>"
    if isinstance(ty, ProductType):
        parts = [
            f"{e.name if e.name is not None else i}: {_fmt(e.type, resolve)}"
            for i, e in enumerate(ty.elements)
        ]
        return "(" + ", ".join(parts) + ")"
    if isinstance(ty, SumType):
        if not ty.variants:
            return "(|)"
        parts = [(f"{v.name}: " if v.name is not None else "") + _fmt(v.type, resolve) for v in ty.variants]
        return "(" + " | ".join(parts) + ")"
    return str(ty)


def _is_bytes(ty: AlgebraicType) -> bool:
    return isinstance(ty, ArrayType) and ty.elem == PrimitiveType("U8")


def _special(ty: AlgebraicType) -> str | None:
    return ty.special if isinstance(ty, ProductType) else None


def _supports_ops(ty: AlgebraicType) -> bool:
    if isinstance(ty, PrimitiveType):
        return True
    return _is_bytes(ty) or _special(ty) in (
        "__identity__",
        "__connection_id__",
        "__timestamp_micros_since_unix_epoch__",
        "__uuid__",
    )


def _to_f32(value: float) -> float:
    """An f32 the way stored rows hold it: the shortest decimal that round-trips through f32."""
    return float(format_f32(value))


def _parse_literal(text: str, ty: AlgebraicType, resolve: _Resolver) -> Any:
    """A literal's value as the server's ``expr::parse`` reads it for type ``ty``."""

    def invalid() -> SqlError:
        return SqlError(f"The literal expression `{text}` cannot be parsed as type `{_fmt(ty, resolve)}`")

    try:
        if isinstance(ty, PrimitiveType):
            name = ty.name
            if name == "String":
                return text
            if name == "Bool":
                raise invalid()
            number = Decimal(text)
            if not number.is_finite():
                raise invalid()
            if name in ("F32", "F64"):
                value = float(number)
                if name == "F32" and abs(value) > 3.4028234663852886e38:
                    raise invalid()
                return _to_f32(value) if name == "F32" else value
            if number != number.to_integral_value():
                raise invalid()
            integer = int(number)
            low, high = INT_RANGES[name]
            if not low <= integer <= high:
                raise invalid()
            return integer
        special = _special(ty)
        digits = text[2:] if text[:2] in ("0x", "0X") else text
        if special == "__timestamp_micros_since_unix_epoch__":
            return Timestamp.from_datetime(datetime.fromisoformat(text))
        if special == "__identity__":
            if len(digits) != 64:
                raise invalid()
            return Identity(int(digits, 16))
        if special == "__connection_id__":
            if len(digits) != 32:
                raise invalid()
            return ConnectionId(int(digits, 16))
        if special == "__uuid__":
            return Uuid(uuid.UUID(text).int)
        if _is_bytes(ty):
            return bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
    except (ValueError, InvalidOperation, OverflowError):
        raise invalid() from None
    raise invalid()


class _Typer:
    """Types and compiles expressions against the relation variables in scope (``crates/expr`` rules)."""

    def __init__(self, scope: dict[str, TableSchema], resolve: _Resolver, sender: Identity | None) -> None:
        self.scope = scope
        self.resolve = resolve
        self.sender = sender

    def unexpected(self, expected: AlgebraicType | str, inferred: AlgebraicType) -> SqlError:
        shown = expected if isinstance(expected, str) else _fmt(expected, self.resolve)
        return SqlError(f"Unexpected type: (expected) {shown} != {_fmt(inferred, self.resolve)} (inferred)")

    def field(self, f: _Field) -> tuple[str, int, AlgebraicType]:
        alias = f.alias if f.alias is not None else next(iter(self.scope))
        table = self.scope.get(alias)
        if table is None:
            raise SqlError(f"`{alias}` is not in scope")
        try:
            index = table.column_names.index(f.name)
        except ValueError:
            raise SqlError(f"`{f.name}` is not in scope") from None
        return alias, index, self.resolve(table.columns[index].type)

    def expr(self, e: _Expr, expected: AlgebraicType | None) -> tuple[_Eval, AlgebraicType]:
        """Compile ``e`` (checked against ``expected``) to an evaluator and its type."""
        resolve = self.resolve
        if isinstance(e, _Lit) and e.kind == "bool":
            if expected is not None and expected != _BOOL:
                raise self.unexpected(_BOOL, expected)
            constant = e.text == "true"
            return (lambda _b: constant), _BOOL
        if isinstance(e, _Lit):
            if expected is None:
                raise SqlError("Cannot resolve type for literal expression")
            value = _parse_literal(e.text, expected, resolve)
            return (lambda _b: value), expected
        if isinstance(e, _Sender):
            if expected is not None and _special(expected) != "__identity__" and not _is_bytes(expected):
                raise self.unexpected(_IDENTITY_NAME, expected)
            sender = self.sender or Identity(0)
            value_of_sender: Any = (
                sender.to_bytes() if expected is not None and _is_bytes(expected) else sender
            )
            return (lambda _b: value_of_sender), expected or ProductType(())
        if isinstance(e, _Field):
            alias, index, column_type = self.field(e)
            if expected is not None and column_type != resolve(expected):
                raise self.unexpected(column_type, expected)
            getter = operator.attrgetter(field_name(self.scope[alias].column_names[index]))
            return (lambda b: getter(b[alias])), column_type
        if expected is not None and expected != _BOOL:
            raise self.unexpected(_BOOL, expected)
        if isinstance(e, _Log):
            left, _ = self.expr(e.left, _BOOL)
            right, _ = self.expr(e.right, _BOOL)
            if e.op == "and":
                return (lambda b: bool(left(b)) and bool(right(b))), _BOOL
            return (lambda b: bool(left(b)) or bool(right(b))), _BOOL
        if isinstance(e.left, _Lit | _Sender):
            right, right_type = self.expr(e.right, None)
            left, left_type = self.expr(e.left, right_type)
        else:
            left, left_type = self.expr(e.left, None)
            right, _ = self.expr(e.right, left_type)
        if not _supports_ops(left_type):
            raise SqlError(f"Invalid binary operator `{e.op}` for type `{_fmt(left_type, resolve)}`")
        compare = _OPS[e.op]

        def evaluate(b: _Bindings) -> bool:
            try:
                return bool(compare(left(b), right(b)))
            except TypeError:
                return False

        return evaluate, _BOOL


# -- queries ---------------------------------------------------------------------------------


class _RowSource(Protocol):
    def rows(self, table: str) -> list[Any]: ...


@dataclasses.dataclass
class Query:
    """A compiled query: the table whose rows it returns and a predicate over row bindings.

    ``rows(db)`` evaluates it against a state; ``matches(row)`` checks one row of the returned table
    (single-table queries), which is how transaction deltas are filtered.
    """

    sql: str
    table: TableSchema
    alias: str
    base: TableSchema
    base_alias: str
    joins: list[tuple[TableSchema, str, tuple[_Eval, _Eval] | None]]
    predicate: _Eval | None
    outputs: list[tuple[str, str | None, int, AlgebraicType]] | None = None
    """/sql column projections: (name, relation variable, column index, type); no variable: COUNT(*)."""
    limit: int | None = None
    """/sql ``LIMIT``: at most this many result rows."""

    @property
    def table_name(self) -> str:
        """The table whose rows this query returns.

        Rows are reported per table.
        """
        return self.table.name

    @property
    def is_join(self) -> bool:
        """True if the query joins other tables.

        Join deltas are computed differently (and written as stored rows).
        """
        return bool(self.joins)

    def matches(self, row: Row) -> bool:
        """True if a row of the returned table (of a single-table query) matches the WHERE clause.

        Transaction deltas of a single-table query are filtered row by row.
        """
        return self.predicate is None or bool(self.predicate({self.alias: row}))

    def rows(self, db: _RowSource | Database) -> list[Row]:
        """The rows of the returned table this query selects now (joins: once per matching pair).

        Snapshots, unsubscribe answers and one-off queries are evaluated this way.
        """
        if not self.joins:
            return [r for r in db.rows(self.table.name) if self.matches(r)]
        return [b[self.alias] for b in self.bindings(db)]  # a bag: one row per join match, as the server

    def bindings(self, db: _RowSource | Database) -> list[_Bindings]:
        """Every match now, as a relation variable -> row mapping (column projections read these)."""
        bindings: list[_Bindings] = [{self.base_alias: r} for r in db.rows(self.base.name)]
        for schema, alias, on in self.joins:
            others = db.rows(schema.name)
            joined: list[_Bindings] = []
            for binding in bindings:
                for other in others:
                    candidate = {**binding, alias: other}
                    if on is None or on[0](candidate) == on[1](candidate):
                        joined.append(candidate)
            bindings = joined
        if self.predicate is not None:
            bindings = [b for b in bindings if self.predicate(b)]
        return bindings

    def values(self, db: _RowSource | Database) -> list[list[Any]]:
        """The /sql result of a column projection or ``COUNT(*)``: one list of values per row."""
        assert self.outputs is not None
        bindings = self.bindings(db)
        if any(alias is None for _, alias, _, _ in self.outputs):
            result = [[len(bindings)]]  # COUNT(*) counts before LIMIT, as the server does
        else:
            getters = [
                (alias, operator.attrgetter(field_name(self.scope_column(alias, index))))
                for _, alias, index, _ in self.outputs
            ]
            result = [[get(b[alias]) for alias, get in getters if alias is not None] for b in bindings]
        return result if self.limit is None else result[: self.limit]

    def scope_column(self, alias: str | None, index: int) -> str:
        """The name of column ``index`` of relation variable ``alias``."""
        table = self.base if alias == self.base_alias else next(t for t, a, _ in self.joins if a == alias)
        return table.column_names[index]

    def joined_tables(self) -> set[str]:
        """Every table this query reads.

        A query needs re-evaluation only when one of its tables changed.
        """
        return {self.base.name, *(schema.name for schema, _, _ in self.joins)}


def compile_query(
    sql: str,
    db: Database,
    *,
    sender: Identity | None = None,
    is_owner: bool = False,
    subscription: bool = False,
) -> Query:
    """Parse and type-check one query against the module; raise SqlError with the server's text.

    ``subscription=True`` adds the checks only subscriptions make (indexes on join columns).
    """
    select = _Parser(sql).parse()
    assert isinstance(select, _Select)  # DML parses only in the /sql grammar
    return _compile_select(sql, select, db, sender, is_owner, subscription)


def compile_statement(sql: str, db: Database, *, sender: Identity, is_owner: bool = False) -> Query | Dml:
    """Parse and type-check one statement of the HTTP ``/sql`` grammar (``crates/sql-parser``).

    Besides queries it takes column projections (``SELECT name, score AS s``), ``COUNT(*) AS n``,
    ``LIMIT n``, and for the database owner ``INSERT``, ``UPDATE`` and ``DELETE``.

    Raises:
        SqlError: with the server's text (a caller other than the owner gets the DML refusal).
    """
    statement = _Parser(sql, full=True).parse()
    if isinstance(statement, _Select):
        return _compile_select(sql, statement, db, sender, is_owner, False)
    dml = _compile_dml(statement, db, sender, is_owner)
    if not is_owner:
        raise SqlError(f"Caller {sender.hex} is not authorized to run SQL DML statements")
    return dml


def _lookup(db: Database, name: str, is_owner: bool) -> TableSchema:
    """A table the caller may see (private ones only for the owner), or the server's error."""
    table = db.module.tables.get(name)
    if table is None or (not table.public and not is_owner):
        raise SqlError(f"no such table: `{name}`. If the table exists, it may be marked private.")
    return table


def _compile_select(
    sql: str,
    select: _Select,
    db: Database,
    sender: Identity | None,
    is_owner: bool,
    subscription: bool,
) -> Query:
    resolve: _Resolver = db.schema.codec.resolve

    def lookup(name: str) -> TableSchema:
        return _lookup(db, name, is_owner)

    scope: dict[str, TableSchema] = {select.alias: lookup(select.table)}
    typer = _Typer(scope, resolve, sender)
    joins: list[tuple[TableSchema, str, tuple[_Eval, _Eval] | None]] = []
    for jname, jalias, on in select.joins:
        if jalias in scope:
            raise SqlError(f"Duplicate name `{jalias}`")
        jtable = lookup(jname)
        scope[jalias] = jtable
        if on is None:
            joins.append((jtable, jalias, None))
            continue
        assert isinstance(on.left, _Field) and isinstance(on.right, _Field)
        left, left_type = typer.expr(on.left, None)
        right, _ = typer.expr(on.right, left_type)
        joins.append((jtable, jalias, (left, right)))
    if subscription and select.joins and not _index_joins(select, scope):
        raise SqlError("Subscriptions require indexes on join columns")
    predicate = typer.expr(select.where, _BOOL)[0] if select.where is not None else None
    if select.items is not None:
        outputs: list[tuple[str, str | None, int, AlgebraicType]] = []
        for name, column in select.items:
            if column is None:
                outputs.append((name, None, 0, PrimitiveType("U64")))
                continue
            alias, index, column_type = typer.field(column)
            outputs.append((name, alias, index, column_type))
        base = scope[select.alias]
        return Query(sql, base, select.alias, base, select.alias, joins, predicate, outputs, select.limit)
    if select.project == "*":
        if joins:
            raise SqlError("SELECT * is not supported for joins")
        returned = select.alias
    elif select.project == "alias":
        assert select.project_alias is not None
        if select.project_alias not in scope:
            raise SqlError(f"`{select.project_alias}` is not in scope")
        returned = select.project_alias
    else:
        raise SqlError(_RETURN_TYPE)
    base = scope[select.alias]
    return Query(sql, scope[returned], returned, base, select.alias, joins, predicate, None, select.limit)


@dataclasses.dataclass
class Dml:
    """A type-checked ``INSERT``/``UPDATE``/``DELETE`` of ``/sql``; ``apply`` runs it in a transaction."""

    kind: str
    table: TableSchema
    rows: list[dict[str, Any]]
    """insert: the rows, by column name."""
    assignments: dict[str, Any]
    """update: column name -> new value."""
    predicate: _Eval | None

    def apply(self, view: DbView) -> tuple[int, int, int]:
        """Change the rows (inside the caller's transaction); (inserted, deleted, updated) counts."""
        handle = view[self.table.name]
        if self.kind == "insert":
            for row in self.rows:
                handle.insert(row)
            return len(self.rows), 0, 0
        name = self.table.name
        matching = [r for r in handle if self.predicate is None or self.predicate({name: r})]
        if self.kind == "delete":
            for row in matching:
                handle.delete(row)
            return 0, len(matching), 0
        changes = {field_name(column): value for column, value in self.assignments.items()}
        pk = self.table.primary_key
        key = operator.attrgetter(field_name(self.table.column_names[pk])) if pk is not None else None
        for row in matching:
            new = dataclasses.replace(row, **changes)
            if key is not None and key(new) == key(row):
                handle.update(new)
            else:
                handle.delete(row)
                handle.insert(new)
        return 0, 0, len(matching)


def _dml_value(typer: _Typer, literal: _Lit, ty: AlgebraicType) -> Any:
    """A DML literal as a value of column type ``ty`` (``crates/expr`` ``type_insert``/``type_update``)."""
    resolved = typer.resolve(ty)
    if literal.kind == "str" and resolved != PrimitiveType("String"):
        raise typer.unexpected(PrimitiveType("String"), resolved)
    return typer.expr(literal, ty)[0]({})


def _compile_dml(dml: _Dml, db: Database, sender: Identity, is_owner: bool) -> Dml:
    table = _lookup(db, dml.table, is_owner)
    typer = _Typer({dml.table: table}, db.schema.codec.resolve, sender)
    names = table.column_names
    rows: list[dict[str, Any]] = []
    if dml.kind == "insert":
        if len(dml.columns) != len(names):
            raise SqlError(
                f"The number of fields ({len(dml.columns)}) in the INSERT does not match the number of "
                f"columns ({len(names)}) of the table `{table.name}`"
            )
        for values in dml.values:
            if len(values) != len(names):
                raise SqlError(
                    f"Inserting a row with {len(values)} values into `{table.name}` which has "
                    f"{len(names)} fields"
                )
            pairs = zip(table.columns, values, strict=True)
            rows.append({column.name: _dml_value(typer, value, column.type) for column, value in pairs})
    assignments: dict[str, Any] = {}
    for column, literal in dml.assignments:
        if column not in names:
            raise SqlError(f"`{table.name}` does not have a field `{column}`")
        assignments[column] = _dml_value(typer, literal, table.columns[names.index(column)].type)
    predicate = typer.expr(dml.where, _BOOL)[0] if dml.where is not None else None
    return Dml(dml.kind, table, rows, assignments, predicate)


def _conjuncts(expr: _Expr | None) -> list[_Expr]:
    """The terms of a WHERE clause's top-level AND (the whole clause if it is not an AND)."""
    if expr is None:
        return []
    if isinstance(expr, _Log) and expr.op == "and":
        return _conjuncts(expr.left) + _conjuncts(expr.right)
    return [expr]


def _filtered_aliases(where: _Expr | None) -> set[str]:
    """Relation variables that get a constant filter pushed down to their scan.

    The server's optimizer (``PushConstEq``/``PushConstAnd``) pushes each top-level AND term of
    the form ``column <op> constant`` (``:sender`` included) to the scan of that column's table;
    ORs and column-to-column comparisons stay above the join.
    """
    aliases: set[str] = set()
    for term in _conjuncts(where):
        if not isinstance(term, _Bin):
            continue
        for field, other in ((term.left, term.right), (term.right, term.left)):
            if isinstance(field, _Field) and field.alias is not None and isinstance(other, _Lit | _Sender):
                aliases.add(field.alias)
    return aliases


def _index_joins(select: _Select, scope: dict[str, TableSchema]) -> bool:
    """True if the server's planner turns every join into an index join (subscriptions need that).

    The plan is left-deep in FROM order. A join becomes an index join only if its right-hand table
    (after pushed-down filters) has an index on its join column (``HashToIxJoin``). For the first
    join the sides are swapped first when only the right-hand table has a pushed filter
    (``ReorderHashJoin``), so the index must then be on the left table's join column.
    """
    filtered = _filtered_aliases(select.where)
    for position, (_, alias, on) in enumerate(select.joins):
        if on is None:
            return False  # a cross join is a nested-loop join
        probed = alias
        if position == 0 and select.alias not in filtered and alias in filtered:
            probed = select.alias
        side = next((f for f in (on.left, on.right) if isinstance(f, _Field) and f.alias == probed), None)
        if side is None:
            return False
        table = scope[probed]
        if table.column_names.index(side.name) not in table.indexed:
            return False
    return True


def type_name(ty: AlgebraicType, typespace: Sequence[AlgebraicType]) -> str:
    """How the server prints a type in errors: ``(__identity__: U256)``, ``(some: I32 | none: ())``.

    Error messages must match the server's, types included.
    """

    def resolve(t: AlgebraicType) -> AlgebraicType:
        while isinstance(t, RefType):
            t = typespace[t.index]
        return t

    return _fmt(ty, resolve)
