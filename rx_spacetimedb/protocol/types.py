"""SATS algebraic types: the schema's type language, parsed from and written to its JSON form (§3.7).

Types are frozen dataclasses so they can be compared, hashed and shared between the client and the
embedded emulator. Special types (Identity, Timestamp, Option...) are recognised structurally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from rx_spacetimedb.errors import ProtocolError

__all__ = [
    "AlgebraicType",
    "ArrayType",
    "Element",
    "PRIMITIVES",
    "PrimitiveType",
    "ProductType",
    "RefType",
    "SumType",
    "Variant",
    "option_of",
    "parse_type",
    "type_to_json",
    "BOOL",
    "U8",
    "U16",
    "U32",
    "U64",
    "U128",
    "U256",
    "I8",
    "I16",
    "I32",
    "I64",
    "I128",
    "I256",
    "F32",
    "F64",
    "STRING",
    "BYTES",
    "UNIT",
    "IDENTITY",
    "CONNECTION_ID",
    "TIMESTAMP",
    "TIME_DURATION",
    "UUID",
    "SCHEDULE_AT",
]

PRIMITIVES: Final = (
    "Bool", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64",
    "I128", "U128", "I256", "U256", "F32", "F64", "String",
)

# Inclusive ranges of the integer primitives.
INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    f"{sign}{bits}": ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if sign == "I" else (0, (1 << bits) - 1))
    for sign in ("I", "U")
    for bits in (8, 16, 32, 64, 128, 256)
}


@dataclass(frozen=True, slots=True)
class PrimitiveType:
    """A primitive: ``Bool``, an integer (``U8`` … ``I256``), ``F32``/``F64`` or ``String``."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class ArrayType:
    """``Vec<elem>``; ``Vec<u8>`` is bytes (hex on the wire)."""

    elem: AlgebraicType


@dataclass(frozen=True, slots=True)
class Element:
    """One named (or unnamed) field of a product."""

    name: str | None
    type: AlgebraicType


@dataclass(frozen=True, slots=True)
class ProductType:
    """A struct: ordered, usually named elements. The empty product is unit."""

    elements: tuple[Element, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Element names (``_<index>`` for unnamed ones)."""
        return tuple(e.name if e.name is not None else f"_{i}" for i, e in enumerate(self.elements))

    @property
    def special(self) -> str | None:
        """The reserved field name if this is a special type (``__identity__``...), else None."""
        if len(self.elements) == 1:
            name = self.elements[0].name
            if name in _SPECIAL_PRODUCTS and self.elements[0].type == _SPECIAL_PRODUCTS[name]:
                return name
        return None


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant of a sum."""

    name: str | None
    type: AlgebraicType


@dataclass(frozen=True, slots=True)
class SumType:
    """An enum; ``Option<T>`` and ``ScheduleAt`` are sums recognised by their variant names."""

    variants: tuple[Variant, ...]

    @property
    def is_option(self) -> bool:
        """``some(T) | none(())``."""
        return (
            len(self.variants) == 2
            and self.variants[0].name == "some"
            and self.variants[1].name == "none"
            and self.variants[1].type == UNIT
        )

    @property
    def is_schedule_at(self) -> bool:
        """``Interval(TimeDuration) | Time(Timestamp)``."""
        return (
            len(self.variants) == 2
            and self.variants[0] == Variant("Interval", TIME_DURATION)
            and self.variants[1] == Variant("Time", TIMESTAMP)
        )


@dataclass(frozen=True, slots=True)
class RefType:
    """``{"Ref": n}``: the n-th type of the module's typespace."""

    index: int


AlgebraicType = PrimitiveType | ArrayType | ProductType | SumType | RefType

BOOL: Final = PrimitiveType("Bool")
U8: Final = PrimitiveType("U8")
U16: Final = PrimitiveType("U16")
U32: Final = PrimitiveType("U32")
U64: Final = PrimitiveType("U64")
U128: Final = PrimitiveType("U128")
U256: Final = PrimitiveType("U256")
I8: Final = PrimitiveType("I8")
I16: Final = PrimitiveType("I16")
I32: Final = PrimitiveType("I32")
I64: Final = PrimitiveType("I64")
I128: Final = PrimitiveType("I128")
I256: Final = PrimitiveType("I256")
F32: Final = PrimitiveType("F32")
F64: Final = PrimitiveType("F64")
STRING: Final = PrimitiveType("String")
BYTES: Final = ArrayType(U8)
UNIT: Final = ProductType(())

_SPECIAL_PRODUCTS: Final[dict[str | None, AlgebraicType]] = {
    "__identity__": U256,
    "__connection_id__": U128,
    "__timestamp_micros_since_unix_epoch__": I64,
    "__time_duration_micros__": I64,
    "__uuid__": U128,
}

IDENTITY: Final = ProductType((Element("__identity__", U256),))
CONNECTION_ID: Final = ProductType((Element("__connection_id__", U128),))
TIMESTAMP: Final = ProductType((Element("__timestamp_micros_since_unix_epoch__", I64),))
TIME_DURATION: Final = ProductType((Element("__time_duration_micros__", I64),))
UUID: Final = ProductType((Element("__uuid__", U128),))
SCHEDULE_AT: Final = SumType((Variant("Interval", TIME_DURATION), Variant("Time", TIMESTAMP)))


def option_of(inner: AlgebraicType) -> SumType:
    """``Option<inner>`` as SATS spells it."""
    return SumType((Variant("some", inner), Variant("none", UNIT)))


def _parse_name(value: Any, path: str) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        if "some" in value and isinstance(value["some"], str):
            return value["some"]
        if "none" in value:
            return None
    raise ProtocolError(f"expected an optional name, got {value!r}", path=path)


def parse_type(value: Any, path: str = "type") -> AlgebraicType:
    """Parse an ``AlgebraicType`` from its schema JSON (``{"U64":[]}``, ``{"Product":…}``…)."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ProtocolError(f"expected a one-key object, got {value!r}", path=path)
    ((tag, body),) = value.items()
    if tag in PRIMITIVES:
        return PrimitiveType(tag)
    if tag == "Ref":
        if type(body) is not int:
            raise ProtocolError("Ref index must be an integer", path=path)
        return RefType(body)
    if tag == "Array":
        return ArrayType(parse_type(body, f"{path}.Array"))
    if tag == "Product":
        return ProductType(_parse_elements(body, f"{path}.Product"))
    if tag == "Sum":
        if not isinstance(body, dict) or not isinstance(body.get("variants"), list):
            raise ProtocolError("Sum needs a variants list", path=path)
        return SumType(tuple(
            Variant(_parse_name(v.get("name"), f"{path}.Sum.variants[{i}].name"),
                    parse_type(v.get("algebraic_type"), f"{path}.Sum.variants[{i}]"))
            for i, v in enumerate(_objects(body["variants"], f"{path}.Sum.variants"))
        ))
    raise ProtocolError(f"unknown algebraic type {tag!r}", path=path)


def _parse_elements(body: Any, path: str) -> tuple[Element, ...]:
    if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
        raise ProtocolError("Product needs an elements list", path=path)
    return tuple(
        Element(_parse_name(e.get("name"), f"{path}.elements[{i}].name"),
                parse_type(e.get("algebraic_type"), f"{path}.elements[{i}]"))
        for i, e in enumerate(_objects(body["elements"], f"{path}.elements"))
    )


def _objects(items: list[Any], path: str) -> list[dict[str, Any]]:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"expected an object, got {item!r}", path=f"{path}[{i}]")
    return items


def parse_product(body: Any, path: str = "product") -> ProductType:
    """Parse a bare ``{"elements": […]}`` (reducer params, SQL result schemas)."""
    return ProductType(_parse_elements(body, path))


def _name_json(name: str | None) -> dict[str, Any]:
    return {"some": name} if name is not None else {"none": []}


def type_to_json(ty: AlgebraicType) -> dict[str, Any]:
    """The schema JSON of a type, key order as the server writes it."""
    if isinstance(ty, PrimitiveType):
        return {ty.name: []}
    if isinstance(ty, RefType):
        return {"Ref": ty.index}
    if isinstance(ty, ArrayType):
        return {"Array": type_to_json(ty.elem)}
    if isinstance(ty, ProductType):
        return {"Product": product_to_json(ty)}
    return {"Sum": {"variants": [
        {"name": _name_json(v.name), "algebraic_type": type_to_json(v.type)} for v in ty.variants
    ]}}


def product_to_json(ty: ProductType) -> dict[str, Any]:
    """A bare ``{"elements": […]}``."""
    return {"elements": [
        {"name": _name_json(e.name), "algebraic_type": type_to_json(e.type)} for e in ty.elements
    ]}
