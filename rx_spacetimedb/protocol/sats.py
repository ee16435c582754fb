"""Type-directed SATS-JSON values: decode any of the three wire shapes, encode any of them.

The server writes one value in three shapes (§3.1: envelope A, stored row B, untyped C) and never
says which, so decoding is driven by the type. A type is described once, as a plan
(``TypeCodec.plan``): the C parser compiles it, the Python decoders are closures built from it
(``node_decoder``), and so are the encoders (``node_encoder``); decoders and encoders are built once
per type, because rows are decoded by the thousand.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import re
import reprlib
from collections.abc import Callable, Collection, Mapping, Sequence
from operator import length_hint
from typing import Any, Literal

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol.jsontext import F32_OVERFLOW, RawJson, format_f32
from rx_spacetimedb.protocol.rowclasses import register_row_class
from rx_spacetimedb.protocol.types import (
    INT_RANGES,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    RefType,
    SumType,
)
from rx_spacetimedb.protocol.values import (
    ConnectionId,
    Identity,
    ScheduleAt,
    SumValue,
    TimeDuration,
    Timestamp,
    Uuid,
)

__all__ = ["Decoder", "Encoder", "Form", "InexactInteger", "TypeCodec", "VariantClass", "field_name",
           "node_encoder", "plain_fields", "slot_descriptors", "unit_variant"]

Decoder = Callable[[Any], Any]
Encoder = Callable[[Any], Any]
Form = Literal["A", "B", "C"]


class InexactInteger(ProtocolError):
    """An integer field held a float: either a real error or orjson's 64-bit overflow.

    Row loaders catch it once and parse the text again with the exact (slower) parser.
    """


_REPR = reprlib.Repr()  # bounded depth: a plain repr of a 1000-deep array raises RecursionError
_REPR.maxstring = _REPR.maxother = 80


def _fail(expected: str, value: Any) -> ProtocolError:
    shown = _REPR.repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ProtocolError(f"expected {expected}, got {shown}")


def field_name(name: str) -> str:
    """A Python attribute name for a column (``class`` → ``class_``, ``__x`` → ``f__x``)."""
    if not name.isidentifier() or keyword.iskeyword(name):
        name = name + "_" if name.isidentifier() else "_" + "".join(
            c if c.isalnum() or c == "_" else "_" for c in name)
    if name.startswith("__"):  # a slot named __x is name-mangled away; __eq__ would replace a method
        name = "f" + name
    return name


def _int_decoder(name: str) -> Decoder:
    low, high = INT_RANGES[name]
    wide = name.endswith(("256",))

    def dec(v: Any) -> int:
        if type(v) is int:
            if low <= v <= high:
                return v
            raise _fail(f"{name} in range", v)
        if wide and type(v) is str:
            return _parse_big_hex(name, v, low, high)
        if type(v) is float:
            raise InexactInteger(f"expected an integer literal for {name}, got {v!r}")
        raise _fail(name, v)

    return dec


_BIG_HEX = re.compile(r"[+-]?0[xX][0-9a-fA-F]+")


def _parse_big_hex(name: str, text: str, low: int, high: int) -> int:
    # int(text, 16) alone would also take "0x_1", " 0x1" and "0x1\n"
    if _BIG_HEX.fullmatch(text) is None:
        raise _fail(f"{name} as a 0x string", text)
    value = int(text, 16)
    if not low <= value <= high:
        raise _fail(f"{name} in range", text)
    return value


def _float_decoder(v: Any) -> float:
    if type(v) is float:
        return v
    if v is None:
        return math.nan
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:   # an integer of more than 308 digits (the exact parser keeps them)
            raise _fail("a number within the f64 range", v) from None
    raise _fail("a number", v)


def _f32_decoder(v: Any) -> float:
    value = _float_decoder(v)
    if -F32_OVERFLOW < value < F32_OVERFLOW or value != value:
        return value
    return math.copysign(math.inf, value)  # an f32 cannot hold it: it is ±inf, as on the server


def _str_decoder(v: Any) -> str:
    if type(v) is str:
        return v
    raise _fail("a string", v)


_STR_TYPE = frozenset({str})


def _bool_decoder(v: Any) -> bool:
    if type(v) is bool:
        return v
    raise _fail("a boolean", v)


def _bytes_decoder(v: Any) -> bytes:
    if type(v) is str:
        try:
            return bytes.fromhex(v)
        except ValueError:
            raise _fail("hex bytes", v) from None
    if type(v) is list:
        try:
            return bytes(v)
        except (TypeError, ValueError):
            raise _fail("an array of bytes", v) from None
    raise _fail("bytes", v)


_INT_DECODERS: dict[str, Decoder] = {name: _int_decoder(name) for name in INT_RANGES}


def _special_decoder(special: str, wrap: Callable[[int], Any], inner: Decoder) -> Decoder:
    def dec(v: Any) -> Any:
        if type(v) is dict and len(v) == 1:
            try:
                return wrap(inner(v[special]))
            except KeyError:
                pass
        elif type(v) is list and len(v) == 1:
            return wrap(inner(v[0]))
        raise _fail(special, v)

    return dec


_SPECIAL_CLASSES: dict[str, type[Identity | ConnectionId | Timestamp | TimeDuration | Uuid]] = {
    "__identity__": Identity,
    "__connection_id__": ConnectionId,
    "__timestamp_micros_since_unix_epoch__": Timestamp,
    "__time_duration_micros__": TimeDuration,
    "__uuid__": Uuid,
}


def slot_descriptors(cls: type) -> tuple[Any, ...]:
    """The slot descriptors of a slotted dataclass, in field order (what its ``__init__`` stores)."""
    return tuple(getattr(cls, f.name) for f in dataclasses.fields(cls))


def _trusting_constructor(cls: type) -> Callable[[Any], Any]:
    """Build a one-field slotted value from a payload the decoder has checked.

    For a special value (``Identity``...) the class's ``__init__`` would store the field with
    ``object.__setattr__`` (it is frozen) and check the range again in ``__post_init__``; a special
    product's inner type is always the integer type of exactly that range (``ProductType.special``),
    whose decoder has made the check. Storing through the slot descriptor directly takes half the
    time. Variants such as ``Committed`` have no check at all (``_plain_one_slot``).
    """
    new = object.__new__
    (slot,) = slot_descriptors(cls)
    store = slot.__set__

    def make(value: int) -> Any:
        obj: Any = new(cls)
        store(obj, value)
        return obj

    return make


class _UnitMaker:
    """A field-less variant's class, called on its (unit) payload: ``unit_variant``'s maker."""

    __slots__ = ("cls",)

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, _payload: Any) -> Any:
        return self.cls()


def _no_payload(_value: Any) -> tuple[()]:
    return ()


def unit_variant(cls: type) -> VariantClass:
    """A variant without a payload (``OutOfEnergy``, a generated ``Color.Red``), built as ``cls()``."""
    return VariantClass(cls, _UnitMaker(cls), _no_payload)


def plain_fields(cls: type) -> tuple[str, ...] | None:
    """The fields of a slotted dataclass with no checks of its own (no ``__post_init__``), whose
    ``__init__`` does nothing but store them: such an object may be built through its slots. None
    for any other class."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in vars(cls) or hasattr(cls, "__post_init__"):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain_unit(variant: VariantClass) -> bool:
    """A ``unit_variant`` of a plain class with no fields: the C parser allocates it without
    calling its ``__init__`` (which would set nothing)."""
    return isinstance(variant.make, _UnitMaker) and plain_fields(variant.cls) == ()


def _plain_one_slot(variant: VariantClass) -> bool:
    """A variant built by its plain class's own ``__init__`` of one field (as ``Committed(update)``):
    storing the payload through the slot is the same, at a fraction of the cost."""
    fields = plain_fields(variant.cls)
    return variant.make is variant.cls and fields is not None and len(fields) == 1


_SPECIAL_MAKERS: dict[str, Callable[[int], Any]] = {
    special: _trusting_constructor(cls) for special, cls in _SPECIAL_CLASSES.items()
}


def _unit_decoder(v: Any) -> tuple[()]:
    if (type(v) is list or type(v) is dict) and not v:
        return ()
    raise _fail("unit ([] or {})", v)


def _sum_parts(v: Any, names: Sequence[str | None]) -> tuple[int, Any]:
    """(tag, payload) from ``[tag, p]`` / ``{"Variant": p}`` with names or decimal tags."""
    if type(v) is list and len(v) == 2:
        key, payload = v
    elif type(v) is dict and len(v) == 1:
        ((key, payload),) = v.items()
    else:
        raise _fail("a sum ([tag, payload] or {variant: payload})", v)
    if type(key) is int:
        tag = key
    elif type(key) is str:
        if key in names:
            tag = names.index(key)
        elif key.isascii() and key.isdigit():
            tag = int(key)
        else:
            raise _fail(f"a variant of {list(names)}", key)
    else:
        raise _fail("a variant tag", key)
    if not 0 <= tag < len(names):
        raise _fail(f"a tag below {len(names)}", key)
    return tag, payload


@dataclasses.dataclass(frozen=True, slots=True)
class VariantClass:
    """How one variant of a sum maps to a Python class: build from the payload, and back."""

    cls: type
    make: Callable[[Any], Any]
    payload: Callable[[Any], Any]


class _Fallback(Exception):
    """Raised by a generated decoder for a value its fast path does not take (see below)."""


def _in_line(node: tuple[Any, ...]) -> bool:
    """Whether generated code decodes a value of this plan node without a decoder of its own."""
    tag = node[0]
    if tag in ("special", "option"):
        return _in_line(node[-1])
    return tag in ("int", "str", "bool", "f64", "f32")


def _field_code(x: str, d: str | None, node: tuple[Any, ...], env: dict[str, Any]) -> list[str]:
    """Lines that replace the JSON value in variable ``x`` by its decoded value, from its plan node
    (``d``: the name of the value's decoder, for what is not decoded in line; None inside a value
    being unwrapped, where such a value falls back).

    A line may raise ``Fallback`` or ProtocolError: the value is not one the fast path takes.
    """
    tag = node[0]
    if tag == "int":
        _, low, high, wide = node
        check = f"if type({x}) is not int or not {low} <= {x} <= {high}: raise Fallback"
        if not wide:
            return [check]
        env["hex_256"] = _BIG_HEX.fullmatch  # 256-bit integers are usually "0x..." strings
        return [f"if type({x}) is str and hex_256({x}) is not None: {x} = int({x}, 16)", check]
    if tag in ("str", "bool"):
        return [f"if type({x}) is not {tag}: raise Fallback"]
    if tag == "f64":
        return [f"if type({x}) is not float: {x} = f64({x})"]
    if tag == "f32":
        return [f"if type({x}) is not float or not -F32_OVERFLOW < {x} < F32_OVERFLOW: {x} = f32({x})"]
    if tag == "special" and _in_line(node):
        _, special, _, _, inner = node
        n = len(env)  # a fresh suffix: x may be unwrapped again inside (Option<Option<T>>)
        key, make = f"key{n}", f"make{n}"
        env[key], env[make] = special, _SPECIAL_MAKERS[special]
        return [
            f"if type({x}) is list and len({x}) == 1: {x} = {x}[0]",
            f"elif type({x}) is dict and len({x}) == 1: {x} = {x}[{key}]",
            "else: raise Fallback",
            *_field_code(x, None, inner, env),
            f"{x} = {make}({x})",
        ]
    if tag == "option" and _in_line(node):  # some: in line; none and the rest: d
        lines = [f"    {line}" for line in _field_code(x, None, node[1], env)]
        return [
            f"if {x} is None: pass",
            f"elif type({x}) is list and len({x}) == 2 and type({x}[0]) is int and {x}[0] == 0:",
            f"    {x} = {x}[1]",
            *lines,
            f"elif type({x}) is dict and len({x}) == 1 and 'some' in {x}:",
            f"    {x} = {x}['some']",
            *lines,
            f"else: {x} = {d}({x})" if d else "else: raise Fallback",
        ]
    return [f"{x} = {d}({x})" if d else "raise Fallback"]


_INT_NAMES: dict[tuple[int, int], str] = {bounds: name for name, bounds in INT_RANGES.items()}
_LEAF_DECODERS: dict[str, Decoder] = {"str": _str_decoder, "bool": _bool_decoder, "f64": _float_decoder,
                                      "f32": _f32_decoder, "unit": _unit_decoder, "bytes": _bytes_decoder}


def _array_decoder(elem: Decoder) -> Decoder:
    # Arrays of strings are the row lists of every message: check their items' types in one
    # C-level pass instead of calling the string decoder once per row.
    strings = elem is _str_decoder

    def dec_array(v: Any) -> tuple[Any, ...]:
        if type(v) is not list:
            raise _fail("an array", v)
        if strings and set(map(type, v)) <= _STR_TYPE:
            return tuple(v)
        items = iter(v)
        try:
            return tuple(map(elem, items))
        except ProtocolError as err:
            # the failed item is the one just taken: no second decode to find it (which
            # would double the time of an error per level of nesting)
            at = len(v) - length_hint(items) - 1
            raise type(err)(err.reason, path=_join(f"[{at}]", err.path)) from None

    return dec_array


_OPTION_NAMES = ("some", "none")


def _option_decoder(some: Decoder) -> Decoder:
    def dec_option(v: Any) -> Any:
        if v is None:
            return None
        tag, payload = _sum_parts(v, _OPTION_NAMES)
        if tag == 0:
            return some(payload)
        _unit_decoder(payload)
        return None

    return dec_option


def _maker(maker: Any) -> Callable[[Any], Any]:
    """A variant's constructor from its plan: None keeps the payload, (class,) builds a class of no
    fields, (class, slot) stores the payload through the slot, (SumValue, its three slots, name, tag)
    builds a SumValue; else a callable."""
    if maker is None:
        return _keep
    if type(maker) is tuple and len(maker) == 4:
        return _sum_value_maker(*maker)
    if type(maker) is tuple and len(maker) == 1:
        return _UnitMaker(maker[0])
    if type(maker) is tuple:
        return _trusting_constructor(maker[0])
    return maker  # type: ignore[no-any-return]


def _keep(payload: Any) -> Any:
    return payload


def _sum_value_maker(cls: type, slots: tuple[Any, Any, Any], name: str, tag: int) -> Callable[[Any], Any]:
    """A SumValue of one variant built through its slots, as the C parser builds it (no checks:
    the class has none)."""
    new = object.__new__
    store_name, store_value, store_tag = (slot.__set__ for slot in slots)

    def make(payload: Any) -> Any:
        obj: Any = new(cls)
        store_name(obj, name)
        store_value(obj, payload)
        store_tag(obj, tag)
        return obj

    return make


def _shown(names: Sequence[str | None]) -> tuple[str, ...]:
    """A sum's variant names as written in form A and in errors: a variant without one by its tag."""
    return tuple(name or str(tag) for tag, name in enumerate(names))


def _variant_decoder(names: Sequence[str | None], makers: Sequence[Callable[[Any], Any]],
                     decs: Sequence[Decoder]) -> Decoder:
    shown = _shown(names)

    def dec_variant(v: Any) -> Any:
        tag, payload = _sum_parts(v, names)
        try:
            return makers[tag](decs[tag](payload))
        except ProtocolError as err:  # the path names the variant: "rgb.r", "3[0]"
            raise type(err)(err.reason, path=_join(shown[tag], err.path)) from None

    return dec_variant


def _key_decoder(names: Sequence[str], columns: Sequence[int], decs: Mapping[int, Decoder]) -> Decoder:
    """A row's primary key from the row's JSON value: only the key columns are decoded."""
    parts = [(c, names[c], decs[c]) for c in columns]
    count = len(names)
    single = len(parts) == 1  # the usual case: one key column, no list or tuple to build
    column0, name0, dec0 = parts[0]

    def key_of(value: Any) -> Any:
        if type(value) is list and len(value) == count:
            if single:
                return dec0(value[column0])
            keys = [dec(value[c]) for c, _, dec in parts]
        elif type(value) is dict:
            try:
                if single:
                    return dec0(value[name0])
                keys = [dec(value[name]) for _, name, dec in parts]
            except KeyError as err:
                raise ProtocolError(f"missing key column {err.args[0]!r}") from None
        else:
            raise ProtocolError(f"expected a row of {count} columns, object or array")
        return tuple(keys)

    return key_of


class TypeCodec:
    """Compiled decoders and encoders for the types of one typespace.

    ``classes`` maps typespace indexes of product types to the Python classes their values
    decode to (row dataclasses); other products get a generated frozen dataclass.
    ``ignore_unknown_fields`` lets objects carry fields the type does not have (a newer server's).
    ``slotted``: classes of ``classes`` that may be built through their slots, as generated ones are
    (plain frozen slotted dataclasses without ``__post_init__``).
    """

    def __init__(self, typespace: Sequence[AlgebraicType] = (),
                 names: Mapping[int, str] | None = None,
                 classes: Mapping[int, type] | None = None,
                 variants: Mapping[int, Sequence[VariantClass]] | None = None,
                 ignore_unknown_fields: bool = False, slotted: Collection[type] = ()) -> None:
        self.typespace = tuple(typespace)
        self.ignore_unknown_fields = ignore_unknown_fields
        self._variants = dict(variants or {})
        self._names = dict(names or {})
        self._classes: dict[int, type] = dict(classes or {})
        self._decoders: dict[int, Decoder] = {}
        self._encoders: dict[tuple[int, str], Encoder] = {}
        self._anon_classes: dict[ProductType, type] = {}
        self._anon_decoders: dict[AlgebraicType, Decoder] = {}
        # classes whose fields we may store directly: the ones made here, and ``slotted`` (plain
        # frozen slotted dataclasses of ours, without __post_init__: the protocol's messages)
        self._generated: set[type] = set(slotted)

    # -- types ---------------------------------------------------------------------------

    def resolve(self, ty: AlgebraicType) -> AlgebraicType:
        """Follow ``Ref``s to a concrete type."""
        seen = 0
        while isinstance(ty, RefType):
            if not 0 <= ty.index < len(self.typespace):
                raise ProtocolError(f"Ref {ty.index} outside the typespace")
            ty = self.typespace[ty.index]
            seen += 1
            if seen > len(self.typespace):
                raise ProtocolError("Ref cycle in the typespace")
        return ty

    def class_for(self, ty: AlgebraicType, name: str | None = None) -> type:
        """The Python class values of a product type decode to (generated on first use)."""
        index = ty.index if isinstance(ty, RefType) else None
        if index is not None and index in self._classes:
            return self._classes[index]
        product = self.resolve(ty)
        if not isinstance(product, ProductType):
            raise TypeError(f"{ty!r} is not a product type")
        if index is None and product in self._anon_classes:
            return self._anon_classes[product]
        cls_name = name or (self._names.get(index) if index is not None else None) or "Product"
        try:
            cls = dataclasses.make_dataclass(
                field_name(cls_name),
                [(field_name(n), self.python_type(e.type))
                 for n, e in zip(product.names, product.elements, strict=True)],
                frozen=True, slots=True,
            )
        except TypeError as err:  # e.g. two columns that map to one attribute name ("a b", "_a_b")
            raise ProtocolError(f"no Python class for {cls_name} {list(product.names)}: {err}") from None
        cls.__module__ = "rx_spacetimedb.rows"
        register_row_class(cls)  # picklable and copyable, though no module holds the class
        self._generated.add(cls)
        if index is not None:
            self._classes[index] = cls
        else:
            self._anon_classes[product] = cls
        return cls

    def python_type(self, ty: AlgebraicType) -> Any:
        """The Python type a value of ``ty`` decodes to (for annotations and docs)."""
        if isinstance(ty, RefType):
            target = self.resolve(ty)
            if isinstance(target, ProductType) and target.special is None and target.elements:
                return self.class_for(ty)
            return self.python_type(target)
        if isinstance(ty, PrimitiveType):
            return {"Bool": bool, "F32": float, "F64": float, "String": str}.get(ty.name, int)
        if isinstance(ty, ArrayType):
            return bytes if ty.elem == PrimitiveType("U8") else tuple[self.python_type(ty.elem), ...]  # type: ignore[misc]
        if isinstance(ty, ProductType):
            special = ty.special
            if special is not None:
                return _SPECIAL_CLASSES[special]
            return tuple[()] if not ty.elements else Any
        if ty.is_option:
            return self.python_type(ty.variants[0].type) | None
        if ty.is_schedule_at:
            return ScheduleAt
        return SumValue

    # -- decoding ------------------------------------------------------------------------

    def decoder(self, ty: AlgebraicType, name: str | None = None) -> Decoder:
        """A function from a JSON value (any of the three shapes) to the Python value.

        ``name`` names the class generated for an anonymous product (e.g. a reducer's params).
        """
        if isinstance(ty, RefType):
            cached = self._decoders.get(ty.index)
            if cached is None:
                cached = self._decoders[ty.index] = self.node_decoder(self.plan(ty))
            return cached
        # Types without a Ref are decoded the same wherever they appear (their classes are shared,
        # see class_for); keep one decoder each.
        cached = self._anon_decoders.get(ty)
        if cached is None:
            if isinstance(ty, ProductType) and ty.special is None and ty.elements:
                node = self._product_plan(ty, self.class_for(ty, name))
            else:
                node = self.plan(ty)
            cached = self._anon_decoders[ty] = self.node_decoder(node)
        return cached

    def node_decoder(self, node: tuple[Any, ...]) -> Decoder:
        """The Python decoder of a plan node (see ``plan``): what the C parser does with it."""
        tag = node[0]
        if tag == "int":
            return _INT_DECODERS[_INT_NAMES[node[1], node[2]]]
        if tag in _LEAF_DECODERS:
            return _LEAF_DECODERS[tag]
        if tag == "array":
            return _array_decoder(self.node_decoder(node[1]))
        if tag == "special":
            special = node[1]
            return _special_decoder(special, _SPECIAL_MAKERS[special], self.node_decoder(node[4]))
        if tag == "option":
            return _option_decoder(self.node_decoder(node[1]))
        if tag == "variant":
            return _variant_decoder(node[1], [_maker(m) for m in node[2]],
                                    [self.node_decoder(p) for p in node[3]])
        if tag == "product":
            return self._product_decoder(node)
        if tag == "key":
            return _key_decoder(node[1], node[3], {c: self.node_decoder(node[2][c]) for c in node[3]})
        raise ValueError(f"no Python decoder for a {tag!r} plan node")

    def _product_decoder(self, node: tuple[Any, ...]) -> Decoder:
        _, cls, names, _, fields = node
        decs = [self.node_decoder(f) for f in fields]
        pairs = list(zip(names, decs, strict=True))
        count = len(names)

        def dec_product(v: Any) -> Any:
            fields = iter(pairs)
            values = None
            try:
                if type(v) is list and len(v) == count:
                    values = [d(x) for (_, d), x in zip(fields, v, strict=True)]
                elif type(v) is dict and len(v) == count:
                    values = [d(v[n]) for n, d in fields]
                if values is not None:
                    return cls(*values)
            except ProtocolError as err:
                if values is not None:
                    raise  # the class's own error, after every field decoded
                # the failed field is the one just taken (see _array_decoder)
                name = names[count - length_hint(fields) - 1]
                raise type(err)(err.reason, path=_join(name, err.path)) from None
            except KeyError as err:
                raise ProtocolError(f"missing field {err.args[0]!r}") from None
            if type(v) is dict:
                missing = [n for n in names if n not in v]
                unknown = [k for k in v if k not in names]
                if self.ignore_unknown_fields and not missing:
                    return dec_product({n: v[n] for n in names})
                raise ProtocolError(f"{cls.__name__}: missing fields {missing}, unknown fields {unknown}")
            raise _fail(f"{cls.__name__} ({count} fields, object or array)", v)

        return self._fast_product_decoder(node, decs, dec_product)

    def _fast_product_decoder(self, node: tuple[Any, ...], decs: Sequence[Decoder],
                              slow: Decoder) -> Decoder:
        """A decoder specialised to one product type, generated as Python source (as ``dataclasses``
        generates ``__init__``) from the product's plan node, the description the C parser compiles:
        rows are decoded by the thousand, and the closure decoder spends most of its time calling
        one closure per field and building argument lists.

        It is a fast path only. It reads the fields straight from the array or object, checks
        integers, strings and booleans in line, unwraps Identity/Timestamp/... in line, calls the
        field decoders (``decs``) for everything else, and builds a row through the plan's slot
        setters when it has them (``_trusting_constructor``'s reasoning). Anything it does not
        accept as it is (another shape, a wrong type, a value out of range) goes to ``slow``, the
        closure decoder of the same type, which decodes it or raises the ProtocolError with the
        field's path. An error of a field decoder is the error ``slow`` would raise (the fields
        before it passed, so they pass there too): it gets its field's name here, without decoding
        the value again (at every level of nesting that would double the time of an error). So the
        generated code decides nothing of its own about what is valid, and schema text (field
        names) never enters it: names and decoders are passed in as globals.
        """
        _, cls, names, setters, fields = node
        count = len(fields)
        env: dict[str, Any] = {"slow": slow, "new": object.__new__, "cls": cls, "names": names,
                               "join": _join, "ProtocolError": ProtocolError, "Fallback": _Fallback,
                               "F32_OVERFLOW": F32_OVERFLOW, "f64": _float_decoder, "f32": _f32_decoder}
        lines = []
        for i, field in enumerate(fields):
            env[f"k{i}"] = names[i]
            env[f"d{i}"] = decs[i]
            lines += [f"at = {i}", *_field_code(f"x{i}", f"d{i}", field, env)]
        lines.append("at = -1")
        xs = [f"x{i}" for i in range(count)]
        if setters is not None:
            for i, slot in enumerate(setters):
                env[f"s{i}"] = slot.__set__
            build = ["row = new(cls)", *(f"s{i}(row, x{i})" for i in range(count)), "return row"]
        else:  # a user's class (or an envelope class, or int for a one-field product): its constructor
            build = [f"return cls({', '.join(xs)})"]
        source = "\n".join([
            "def decode(v):",
            "    at = -1",
            "    try:",
            f"        if type(v) is list and len(v) == {count}:",
            f"            {', '.join(xs)}, = v",
            f"        elif type(v) is dict and len(v) == {count}:",
            *(f"            x{i} = v[k{i}]" for i in range(count)),
            "        else:",
            "            raise Fallback",
            *(f"        {line}" for line in lines + build),
            # a field decoder's error: the one `slow` would raise too, as every field before took
            "    except ProtocolError as err:",
            "        if at < 0: return slow(v)",
            "        raise type(err)(err.reason, path=join(names[at], err.path)) from None",
            "    except (KeyError, Fallback):",
            "        return slow(v)",
        ])
        exec(source, env)  # our own template, no schema text in it: see the docstring
        decode: Decoder = env["decode"]
        decode.__qualname__ = f"decode_{cls.__name__}"
        return decode

    def plan(self, ty: AlgebraicType) -> tuple[Any, ...]:
        """The description of ``ty`` as nested tuples: the one description of a type.

        The C parser (``_typedjson.c``, see fastpath) compiles it; the Python decoders are
        interpreted from it (``node_decoder``, with generated source for products), and so are the
        encoders (``node_encoder``): the same classes, ranges, names and slot setters. Nodes:
        ("int", low, high, hex_ok), ("str",), ("bool",), ("f64",), ("f32", overflow), ("bytes",),
        ("unit",), ("array", item), ("option", some), ("special", key, class, slot, inner),
        ("product", class, names, slots | None, fields) and, for every other sum,
        ("variant", names, makers, payloads, unmake): names may be None (such a variant is written
        by its tag), a maker builds the value from the payload (see ``_maker``) and ``unmake``
        takes a value apart again, (tag, payload), for the encoders. The parser refuses plans nested
        deeper than 200; a module's types are at most ``schema.MAX_TYPE_DEPTH`` deep (``ModuleSchema``
        checks), so its plans compile.
        """
        if isinstance(ty, RefType):
            target = self.resolve(ty)
            if ty.index in self._variants and isinstance(target, SumType):
                return self._variant_plan(ty.index, target)
            if isinstance(target, ProductType) and target.special is None and target.elements:
                return self._product_plan(target, self.class_for(ty))
            return self.plan(target)
        if isinstance(ty, PrimitiveType):
            if ty.name in INT_RANGES:
                low, high = INT_RANGES[ty.name]
                return ("int", low, high, ty.name.endswith("256"))
            return {"String": ("str",), "Bool": ("bool",), "F64": ("f64",),
                    "F32": ("f32", F32_OVERFLOW)}[ty.name]
        if isinstance(ty, ArrayType):
            if self.resolve(ty.elem) == PrimitiveType("U8"):
                return ("bytes",)
            return ("array", self.plan(ty.elem))
        if isinstance(ty, ProductType):
            special = ty.special
            if special is not None:
                cls = _SPECIAL_CLASSES[special]
                (slot,) = slot_descriptors(cls)
                return ("special", special, cls, slot, self.plan(ty.elements[0].type))
            if not ty.elements:
                return ("unit",)
            return self._product_plan(ty, self.class_for(ty))
        if ty.is_option:
            return ("option", self.plan(ty.variants[0].type))
        names = tuple(v.name for v in ty.variants)
        payloads = tuple(self.plan(v.type) for v in ty.variants)
        if ty.is_schedule_at:
            return ("variant", names, (ScheduleAt, ScheduleAt), payloads, _unmake_schedule)
        slots = slot_descriptors(SumValue)
        makers = tuple((SumValue, slots, name, tag) for tag, name in enumerate(_shown(names)))
        return ("variant", names, makers, payloads, _sum_value_unmaker(names))

    def key_plan(self, ty: ProductType, columns: Sequence[int]) -> tuple[Any, ...]:
        """The decoding of the primary key alone (``columns``, a tuple for more than one) of a row
        of ``ty``: the other columns are skipped unread by the C parser, not looked at by Python."""
        return ("key", tuple(ty.names), tuple(self.plan(e.type) if c in columns else ("skip",)
                                              for c, e in enumerate(ty.elements)), tuple(columns))

    def _variant_plan(self, index: int, ty: SumType) -> tuple[Any, ...]:
        makers = tuple((c.cls, slot_descriptors(c.cls)[0]) if _plain_one_slot(c)
                       else (c.cls,) if _plain_unit(c) else c.make
                       for c in self._variants[index])
        names = tuple(v.name for v in ty.variants)
        return ("variant", names, makers, tuple(self.plan(v.type) for v in ty.variants),
                _class_unmaker(self._variants[index], _shown(names)))

    def _product_plan(self, ty: ProductType, cls: type) -> tuple[Any, ...]:
        # slots only for the classes we generate: as their generated decoder builds them
        setters = slot_descriptors(cls) if cls in self._generated else None
        return ("product", cls, tuple(ty.names), setters, tuple(self.plan(e.type) for e in ty.elements))

    # -- encoding ------------------------------------------------------------------------

    def encoder(self, ty: AlgebraicType, form: Form) -> Encoder:
        """A function from a Python value to the JSON value of shape ``form`` (A, B or C)."""
        if isinstance(ty, RefType):
            key = (ty.index, form)
            cached = self._encoders.get(key)
            if cached is None:
                cached = self._encoders[key] = node_encoder(self.plan(ty), form)
            return cached
        if isinstance(ty, ProductType) and ty.special is None and ty.elements:
            # no class for it here: an anonymous product's (a reducer's parameters') is named by
            # its decoder, decoder(ty, name)
            return _product_encoder(None, ty.names, [node_encoder(self.plan(e.type), form)
                                                     for e in ty.elements], form)
        return node_encoder(self.plan(ty), form)


def node_encoder(node: tuple[Any, ...], form: Form) -> Encoder:
    """The encoder of a plan node (see ``TypeCodec.plan``): a Python value to the JSON value of
    shape ``form``, the inverse of the node's decoder. Arrays nested in stored rows are written
    untyped (§3.1 B)."""
    tag = node[0]
    if tag == "int":
        return _int_encoder(_INT_NAMES[node[1], node[2]], node[1], node[2], node[3])
    if tag in _LEAF_ENCODERS:
        return _LEAF_ENCODERS[tag]
    if tag == "unit":
        return _unit_encoder(form)
    if tag == "array":
        elem = node_encoder(node[1], "C" if form == "B" else form)
        return lambda v: [elem(x) for x in _as_sequence(v, "an array")]
    if tag == "option":
        return _option_encoder(node_encoder(node[1], form), _unit_encoder(form)(()), form)
    if tag == "special":
        return _special_encoder(node[1], node[2], node_encoder(node[4], form), form)
    if tag == "variant":
        return _variant_encoder(node[1], node[4], [node_encoder(p, form) for p in node[3]], form)
    if tag == "product":
        return _product_encoder(node[1], node[2], [node_encoder(f, form) for f in node[4]], form)
    raise ValueError(f"no encoder for a {tag!r} plan node")


def _unit_encoder(form: Form) -> Encoder:
    def enc_unit(v: Any) -> Any:
        if v != () and v != [] and v != {}:
            raise TypeError(f"unit takes (), got {v!r}")
        return {} if form == "B" else []

    return enc_unit


def _option_encoder(some: Encoder, unit: Any, form: Form) -> Encoder:
    def enc_option(v: Any) -> Any:
        if v is None:
            return {"none": unit} if form == "A" else [1, unit]
        return {"some": some(v)} if form == "A" else [0, some(v)]

    return enc_option


def _special_encoder(special: str, wrapper: type, inner: Encoder, form: Form) -> Encoder:
    attr = dataclasses.fields(wrapper)[0].name

    def enc_special(v: Any) -> Any:
        if not isinstance(v, wrapper):
            raise TypeError(f"expected {wrapper.__name__}, got {type(v).__name__}")
        raw = inner(getattr(v, attr))
        return [raw] if form == "C" else {special: raw}

    return enc_special


def _variant_encoder(names: Sequence[str | None], unmake: Callable[[Any], tuple[int, Any]],
                     encs: Sequence[Encoder], form: Form) -> Encoder:
    shown = _shown(names)

    def enc_variant(v: Any) -> Any:
        tag, payload = unmake(v)
        body = encs[tag](payload)
        return {shown[tag]: body} if form == "A" else [tag, body]

    return enc_variant


def _class_unmaker(classes: Sequence[VariantClass], shown: Sequence[str]) -> Callable[[Any], tuple[int, Any]]:
    """(tag, payload) of a value of one of a sum's variant classes."""
    table = {c.cls: (tag, c.payload) for tag, c in enumerate(classes)}

    def unmake(v: Any) -> tuple[int, Any]:
        try:
            tag, payload = table[type(v)]
        except KeyError:
            raise TypeError(f"cannot encode {type(v).__name__} as one of {list(shown)}") from None
        return tag, payload(v)

    return unmake


def _unmake_schedule(v: Any) -> tuple[int, Any]:
    """(tag, payload) of a ScheduleAt: Interval (0) or Time (1)."""
    if not isinstance(v, ScheduleAt):
        raise TypeError(f"expected ScheduleAt, got {type(v).__name__}")
    return (0 if v.is_interval else 1), v.value


def _sum_value_unmaker(names: Sequence[str | None]) -> Callable[[Any], tuple[int, Any]]:
    """(tag, payload) of a SumValue (or a variant's name alone, for a unit variant): its own tag
    where its name is that variant's (as decoded: a variant without a name is shown by its tag,
    which may be another variant's name), else found by name as the decoder finds it: a
    variant's own name first, else the tag in digits."""
    shown = _shown(names)

    def unmake(v: Any) -> tuple[int, Any]:
        if isinstance(v, SumValue):
            name, payload = v.name, v.value
            if 0 <= v.tag < len(shown) and shown[v.tag] == name:
                return v.tag, payload
        elif isinstance(v, str):
            name, payload = v, ()
        else:
            raise TypeError(f"expected SumValue for a variant of {list(names)}, got {type(v).__name__}")
        try:
            return _sum_parts({name: payload}, names)
        except ProtocolError:
            raise ValueError(f"unknown variant {name!r}, expected one of {list(shown)}") from None

    return unmake


def _product_encoder(cls: Any, names: Sequence[str], encs: Sequence[Encoder], form: Form) -> Encoder:
    attrs = [field_name(n) for n in names]

    def values_of(v: Any) -> list[Any]:
        if isinstance(v, Mapping):
            missing = [n for n in names if n not in v]
            extra = [k for k in v if k not in names]
            if missing or extra:
                raise ValueError(f"fields {list(names)}: missing {missing}, unknown {extra}")
            return [v[n] for n in names]
        if isinstance(v, list | tuple):
            if len(v) != len(names):
                raise ValueError(f"expected {len(names)} values {list(names)}, got {len(v)}")
            return list(v)
        try:
            return [getattr(v, a) for a in attrs]
        except AttributeError:
            if len(attrs) == 1 and isinstance(cls, type) and isinstance(v, cls):
                return [v]  # a one-field product decoded to its bare value (QueryId -> int)
            what = type(v).__name__
            raise TypeError(f"cannot encode {what} as a product with fields {list(names)}") from None

    if form == "C":
        return lambda v: [e(x) for e, x in zip(encs, values_of(v), strict=True)]
    return lambda v: {n: e(x) for n, e, x in zip(names, encs, values_of(v), strict=True)}


def _join(head: str, path: str) -> str:
    """``head`` + ``path`` as a field path: ``tables`` + ``[0].num_rows`` → ``tables[0].num_rows``."""
    if not path:
        return head
    return head + path if path.startswith("[") else f"{head}.{path}"


def _as_sequence(v: Any, what: str) -> Sequence[Any]:
    if isinstance(v, list | tuple):
        return v
    raise TypeError(f"expected {what}, got {type(v).__name__}")


def _encode_bytes(v: Any) -> str:
    if not isinstance(v, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(v).__name__}")
    return bytes(v).hex()


def _int_encoder(name: str, low: int, high: int, wide: bool) -> Encoder:
    def enc_int(v: Any) -> Any:
        if type(v) is not int:
            raise TypeError(f"{name} takes an int, got {type(v).__name__}")
        if not low <= v <= high:
            raise ValueError(f"{v} is out of range for {name}")
        if wide:
            return f"-0x{-v:x}" if v < 0 else f"0x{v:x}"
        return v

    return enc_int


def _encode_bool(v: Any) -> bool:
    if type(v) is not bool:
        raise TypeError(f"Bool takes a bool, got {type(v).__name__}")
    return v


def _encode_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"String takes a str, got {type(v).__name__}")
    return str(v)


def _encode_f32(v: Any) -> RawJson:
    return RawJson(format_f32(_as_float(v)))


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {type(v).__name__}")
    return float(v)


_LEAF_ENCODERS: dict[str, Encoder] = {"str": _encode_str, "bool": _encode_bool, "f64": _as_float,
                                      "f32": _encode_f32, "bytes": _encode_bytes}
