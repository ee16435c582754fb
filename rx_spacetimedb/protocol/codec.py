"""Frames ⇄ message dataclasses, both directions, as pure functions.

The message shapes are written down once, as SATS types (the protocol is itself SATS, envelope
form A), and the generic type-directed codec does the work. Decoding accepts every shape the
server accepts (§3.2 "also accepted from clients"); encoding writes exactly what the server and
the official clients write, byte for byte.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from rx_spacetimedb.errors import ProtocolError
from rx_spacetimedb.protocol import messages as m
from rx_spacetimedb.protocol.fastpath import FALLBACK, PARSER
from rx_spacetimedb.protocol.jsontext import dumps, parse_exact
from rx_spacetimedb.protocol.sats import InexactInteger, TypeCodec, VariantClass, unit_variant
from rx_spacetimedb.protocol.types import (
    BYTES,
    CONNECTION_ID,
    IDENTITY,
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    U32,
    U64,
    U128,
    UNIT,
    AlgebraicType,
    ArrayType,
    Element,
    ProductType,
    RefType,
    SumType,
    Variant,
    option_of,
)
from rx_spacetimedb.protocol.values import EnergyQuanta

__all__ = [
    "decode_client_message",
    "decode_server_message",
    "encode_client_message",
    "encode_server_message",
]

def _product(*fields: tuple[str, AlgebraicType]) -> ProductType:
    return ProductType(tuple(Element(name, ty) for name, ty in fields))

# Typespace of the protocol itself; indexes are named for readability.
_TYPES: list[AlgebraicType] = []
_CLASSES: dict[int, type] = {}
_VARIANTS: dict[int, list[VariantClass]] = {}

def _define(ty: AlgebraicType, cls: type | None = None) -> RefType:
    _TYPES.append(ty)
    index = len(_TYPES) - 1
    if cls is not None:
        _CLASSES[index] = cls
    return RefType(index)

def _identity(value: Any) -> Any:
    return value

_QUERY_ID = _define(_product(("id", U32)), int)  # QueryId {"id": n} decodes to the int n
_ROWS = ArrayType(STRING)
_QUERY_UPDATE = _define(_product(("deletes", _ROWS), ("inserts", _ROWS)), m.QueryUpdate)
_TABLE_UPDATE = _define(_product(
    ("table_id", U32), ("table_name", STRING), ("num_rows", U64),
    ("updates", ArrayType(_QUERY_UPDATE)),
), m.TableUpdate)
_DATABASE_UPDATE = _define(_product(("tables", ArrayType(_TABLE_UPDATE))), m.DatabaseUpdate)
_REDUCER_CALL = _define(_product(
    ("reducer_name", STRING), ("reducer_id", U32), ("args", STRING), ("request_id", U32),
), m.ReducerCallInfo)
_ENERGY = _define(_product(("quanta", U128)), EnergyQuanta)
_UPDATE_STATUS = _define(SumType((
    Variant("Committed", _DATABASE_UPDATE), Variant("Failed", STRING), Variant("OutOfEnergy", UNIT),
)))
_VARIANTS[_UPDATE_STATUS.index] = [
    VariantClass(m.Committed, m.Committed, lambda v: v.update),
    VariantClass(m.Failed, m.Failed, lambda v: v.message),
    unit_variant(m.OutOfEnergy),
]
_PROCEDURE_STATUS = _define(SumType((
    Variant("Returned", STRING), Variant("OutOfEnergy", UNIT), Variant("InternalError", STRING),
)))
_VARIANTS[_PROCEDURE_STATUS.index] = [
    VariantClass(m.Returned, m.Returned, lambda v: v.value),
    unit_variant(m.ProcedureOutOfEnergy),
    VariantClass(m.InternalError, m.InternalError, lambda v: v.message),
]
_SUBSCRIBE_ROWS = _define(_product(
    ("table_id", U32), ("table_name", STRING), ("table_rows", _TABLE_UPDATE),
), m.SubscribeRows)
_ONE_OFF_TABLE = _define(_product(("table_name", STRING), ("rows", _ROWS)), m.OneOffTable)

_APPLIED = (("request_id", U32), ("total_host_execution_duration_micros", U64), ("query_id", _QUERY_ID))

SERVER_VARIANTS: Final[list[tuple[str, type, ProductType]]] = [
    ("InitialSubscription", m.InitialSubscription, _product(
        ("database_update", _DATABASE_UPDATE), ("request_id", U32),
        ("total_host_execution_duration", TIME_DURATION))),
    ("TransactionUpdate", m.TransactionUpdate, _product(
        ("status", _UPDATE_STATUS), ("timestamp", TIMESTAMP), ("caller_identity", IDENTITY),
        ("caller_connection_id", CONNECTION_ID), ("reducer_call", _REDUCER_CALL),
        ("energy_quanta_used", _ENERGY), ("total_host_execution_duration", TIME_DURATION))),
    ("TransactionUpdateLight", m.TransactionUpdateLight, _product(
        ("request_id", U32), ("update", _DATABASE_UPDATE))),
    ("IdentityToken", m.IdentityToken, _product(
        ("identity", IDENTITY), ("token", STRING), ("connection_id", CONNECTION_ID))),
    ("OneOffQueryResponse", m.OneOffQueryResponse, _product(
        ("message_id", BYTES), ("error", option_of(STRING)), ("tables", ArrayType(_ONE_OFF_TABLE)),
        ("total_host_execution_duration", TIME_DURATION))),
    ("SubscribeApplied", m.SubscribeApplied, _product(*_APPLIED, ("rows", _SUBSCRIBE_ROWS))),
    ("UnsubscribeApplied", m.UnsubscribeApplied, _product(*_APPLIED, ("rows", _SUBSCRIBE_ROWS))),
    ("SubscriptionError", m.SubscriptionError, _product(
        ("total_host_execution_duration_micros", U64), ("request_id", option_of(U32)),
        ("query_id", option_of(U32)), ("table_id", option_of(U32)), ("error", STRING))),
    ("SubscribeMultiApplied", m.SubscribeMultiApplied, _product(*_APPLIED, ("update", _DATABASE_UPDATE))),
    ("UnsubscribeMultiApplied", m.UnsubscribeMultiApplied, _product(
        *_APPLIED, ("update", _DATABASE_UPDATE))),
    ("ProcedureResult", m.ProcedureResult, _product(
        ("status", _PROCEDURE_STATUS), ("timestamp", TIMESTAMP),
        ("total_host_execution_duration", TIME_DURATION), ("request_id", U32))),
]

CLIENT_VARIANTS: Final[list[tuple[str, type, ProductType]]] = [
    ("CallReducer", m.CallReducer, _product(
        ("reducer", STRING), ("args", STRING), ("request_id", U32), ("flags", U8))),
    ("Subscribe", m.Subscribe, _product(("query_strings", ArrayType(STRING)), ("request_id", U32))),
    ("OneOffQuery", m.OneOffQuery, _product(("message_id", BYTES), ("query_string", STRING))),
    ("SubscribeSingle", m.SubscribeSingle, _product(
        ("query", STRING), ("request_id", U32), ("query_id", _QUERY_ID))),
    ("SubscribeMulti", m.SubscribeMulti, _product(
        ("query_strings", ArrayType(STRING)), ("request_id", U32), ("query_id", _QUERY_ID))),
    ("Unsubscribe", m.Unsubscribe, _product(("request_id", U32), ("query_id", _QUERY_ID))),
    ("UnsubscribeMulti", m.UnsubscribeMulti, _product(("request_id", U32), ("query_id", _QUERY_ID))),
    ("CallProcedure", m.CallProcedure, _product(
        ("procedure", STRING), ("args", STRING), ("request_id", U32), ("flags", U8))),
]

_SERVER_REFS = {name: _define(ty, cls) for name, cls, ty in SERVER_VARIANTS}
_CLIENT_REFS = {name: _define(ty, cls) for name, cls, ty in CLIENT_VARIANTS}
_CLIENT_SUM = _define(SumType(tuple(Variant(name, _CLIENT_REFS[name]) for name, _, _ in CLIENT_VARIANTS)))
_VARIANTS[_CLIENT_SUM.index] = [VariantClass(cls, _identity, _identity) for _, cls, _ in CLIENT_VARIANTS]

# The message classes are plain frozen slotted dataclasses: built through their slots.
_SLOTTED: Final = [cls for cls in _CLASSES.values() if dataclasses.is_dataclass(cls)]
_CODEC: Final = TypeCodec(_TYPES, classes=_CLASSES, variants=_VARIANTS, slotted=_SLOTTED)
# A newer server may add fields to its messages: read what we know, ignore the rest. Client frames
# stay strict, as the server is (every field required, none unknown).
_SERVER_CODEC: Final = TypeCodec(_TYPES, classes=_CLASSES, variants=_VARIANTS, ignore_unknown_fields=True,
                                 slotted=_SLOTTED)
_SERVER_DECODERS: Final[dict[str, Callable[[Any], Any]]] = {
    name: _SERVER_CODEC.decoder(ref) for name, ref in _SERVER_REFS.items()
}
_SERVER_ENCODERS: Final[dict[type, tuple[str, Callable[[Any], Any]]]] = {
    cls: (name, _CODEC.encoder(_SERVER_REFS[name], "A")) for name, cls, _ in SERVER_VARIANTS
}
# The C parser's plan of a whole frame: {"Tag": body} only (a "message", spec §4: never [tag, body]),
# the known messages in the shape the server writes them (anything else, unknown tags included,
# goes the Python way below).
_FRAME_PLAN: Final = None if PARSER is None else PARSER.compile((
    "message", tuple(name for name, _, _ in SERVER_VARIANTS), (None,) * len(SERVER_VARIANTS),
    tuple(_SERVER_CODEC.plan(_SERVER_REFS[name]) for name, _, _ in SERVER_VARIANTS)))
_CLIENT_DECODER: Final = _CODEC.decoder(_CLIENT_SUM)
_CLIENT_ENCODERS: Final[dict[type, tuple[str, Callable[[Any], Any]]]] = {
    cls: (name, _CODEC.encoder(_CLIENT_REFS[name], "A")) for name, cls, _ in CLIENT_VARIANTS
}

def _wide_fields(message: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
    """(field, key) of the 128-bit integers one level down in a message's plan, {"field": {"key": n}}."""
    _, _, names, _, fields = message
    return tuple((field, key) for field, node in zip(names, fields, strict=True)
                 for key, part in _parts(node) if _is_128_bit(part))


def _parts(node: tuple[Any, ...]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """(key, plan node) of the fields of a product or special node (Identity's, a ConnectionId's)."""
    if node[0] == "product":
        return tuple(zip(node[2], node[4], strict=True))
    return ((node[1], node[4]),) if node[0] == "special" else ()


def _is_128_bit(node: tuple[Any, ...]) -> bool:
    """An integer orjson cannot read exactly, written as a number (256-bit ones are "0x..." strings)."""
    return node[0] == "int" and not node[3] and node[2] > 2**64


# The 128-bit integers of the server envelope in the shape the server writes them (read from the
# message types: a ConnectionId's, energy's quanta), found by key: inside row strings the same keys
# are escaped (\"quanta\":) and cannot match, so these finds are exact and need no full re-parse
# (on the pure-Python path that re-parse would make a transaction's envelope three times slower).
# Any other wide integer the decoder meets as a float re-parses below.
_WIDE_FIELDS: Final = {name: found for name, _, _ in SERVER_VARIANTS
                       if (found := _wide_fields(_SERVER_CODEC.plan(_SERVER_REFS[name])))}
_WIDE_KEYS: Final = sorted({key for fields in _WIDE_FIELDS.values() for _, key in fields})
_WIDE_FIELDS_STR: Final = {key: re.compile(rf'"{key}"\s*:\s*(-?\d+)(?![\d.eE])') for key in _WIDE_KEYS}
_WIDE_FIELDS_BYTES: Final = {
    key: re.compile(rf'"{key}"\s*:\s*(-?\d+)(?![\d.eE])'.encode()) for key in _WIDE_KEYS
}

def _exact(raw: str | bytes, key: str, value: Any) -> Any:
    """orjson gave a float for a 128-bit field: read its digits from the frame text instead."""
    if type(value) is not float:
        return value
    if isinstance(raw, bytes):
        pattern, needle = _WIDE_FIELDS_BYTES[key], f'"{key}"'.encode()
    else:
        pattern, needle = _WIDE_FIELDS_STR[key], f'"{key}"'  # type: ignore[assignment]
    # str.find skips through a large frame far faster than a regex scan; match only where it lands
    found = []
    at = raw.find(needle)  # type: ignore[arg-type]
    while at >= 0:
        match = pattern.match(raw, at)  # type: ignore[arg-type]
        if match is not None:
            found.append(match.group(1))
        at = raw.find(needle, at + 1)  # type: ignore[arg-type]
    if len(found) != 1:
        raise _Reparse
    return int(found[0])

class _Reparse(Exception):
    """The targeted fix did not apply; parse the whole frame with the exact parser."""

def _fix_wide_integers(tag: str, body: Any, raw: str | bytes) -> None:
    if type(body) is not dict:
        return
    for field, key in _WIDE_FIELDS.get(tag, ()):
        holder = body.get(field)
        if type(holder) is dict and key in holder:
            holder[key] = _exact(raw, key, holder[key])

def _parse_frame(data: str | bytes) -> tuple[str, Any]:
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(f"not JSON: {err}", raw=data) from err
    if type(frame) is not dict or len(frame) != 1:
        raise ProtocolError("a message must be a JSON object with exactly one key", raw=data)
    ((tag, body),) = frame.items()
    return tag, body

def decode_server_message(data: str | bytes) -> m.ServerMessage:
    """Decode one text frame from the server.

    Raises:
        ProtocolError: not JSON, not a one-key object, or a field of the wrong shape; the error's
            ``path`` names the message and field, ``raw`` holds the frame.
    """
    if _FRAME_PLAN is not None:
        message = PARSER.decode(_FRAME_PLAN, data)
        if message is not FALLBACK:
            return message  # type: ignore[no-any-return]
    tag, body = _parse_frame(data)
    decoder = _SERVER_DECODERS.get(tag)
    if decoder is None:
        return m.UnknownServerMessage(tag, body, data)
    try:
        try:
            _fix_wide_integers(tag, body, data)
            result: m.ServerMessage = decoder(body)
        except (_Reparse, InexactInteger):
            # orjson read an integer beyond 64 bits where the targeted fix does not reach (an array
            # form, an Identity written as a number) as a float: read the frame again, exactly
            try:
                ((tag, body),) = parse_exact(data).items()
            except ValueError as err:
                raise ProtocolError(f"not JSON: {err}") from None
            result = decoder(body)
    except ProtocolError as err:
        path = f"{tag}.{err.path}" if err.path else tag
        raw = _without_token(data) if tag == "IdentityToken" else data
        raise ProtocolError(err.reason, path=path, raw=raw) from None
    return result


_TOKEN_STR: Final = re.compile(r'("token"\s*:\s*)"(?:[^"\\]|\\.)*"')
_TOKEN_BYTES: Final = re.compile(rb'("token"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _without_token(data: str | bytes) -> str | bytes:
    """The frame with its token blanked, so an error about it can be logged (§1.4)."""
    if isinstance(data, bytes):
        return _TOKEN_BYTES.sub(rb'\1"<redacted>"', data)
    return _TOKEN_STR.sub(r'\1"<redacted>"', data)

def encode_client_message(message: m.ClientMessage) -> str:
    """The text frame for a client message, byte-identical to what official clients send."""
    try:
        name, encoder = _CLIENT_ENCODERS[type(message)]
    except KeyError:
        raise TypeError(f"not a client message: {type(message).__name__}") from None
    return dumps({name: encoder(message)})

def encode_server_message(message: m.ServerMessage) -> str:
    """The text frame the server writes for a message (used by the embedded emulator)."""
    if isinstance(message, m.UnknownServerMessage):
        return dumps({message.tag: message.payload})
    try:
        name, encoder = _SERVER_ENCODERS[type(message)]
    except KeyError:
        raise TypeError(f"not a server message: {type(message).__name__}") from None
    return dumps({name: encoder(message)})

def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ProtocolError(f"duplicate field `{duplicate}`")
    return result

def decode_client_message(data: str | bytes) -> m.ClientMessage:
    """Decode a client frame as the server does: strict fields, every accepted value shape.

    Raises:
        ProtocolError: with the decode error text the emulator closes the connection with (1011).
    """
    try:
        frame = parse_exact(data, object_pairs_hook=_reject_duplicates)
    except ProtocolError as err:  # a duplicate field
        raise ProtocolError(err.reason, raw=data) from None
    except ValueError as err:
        raise ProtocolError(f"not JSON: {err}", raw=data) from None
    try:
        message: m.ClientMessage = _CLIENT_DECODER(frame)
    except ProtocolError as err:
        raise ProtocolError(err.reason, path=err.path, raw=data) from None
    flags = getattr(message, "flags", 0)
    allowed = (0, 1) if isinstance(message, m.CallReducer) else (0,)
    if flags not in allowed:
        raise ProtocolError(f"invalid flags {flags}", path=type(message).__name__ + ".flags", raw=data)
    return message
