"""JSON text in and out, exact at every integer width and written the way the server writes it.

orjson is fast but turns integers outside the 64-bit range into floats (spec §3.4) and refuses to
write them; the standard library is exact but slower. ``loads_exact`` takes orjson when the text has
no digit run long enough to overflow, the standard library otherwise. ``dumps`` writes compact JSON
with exact integers, Rust-style shortest floats (``1e16``, ``-2.5e-7``) and ``null`` for NaN/inf.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["RawJson", "dumps", "format_f32", "format_f64", "loads", "loads_exact", "parse_exact"]

# 19 digits can already leave the i64 range; anything shorter always fits orjson's integers.
_LONG_DIGITS_STR = re.compile(r"\d{19,}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19,}")

loads = orjson.loads
"""Fast parse; integers beyond 64 bits come back as floats (callers check where it matters)."""


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON keeping every integer exact."""
    pattern = _LONG_DIGITS_BYTES if isinstance(text, bytes) else _LONG_DIGITS_STR
    if pattern.search(text) is None:  # type: ignore[arg-type]
        return orjson.loads(text)
    return parse_exact(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_exact(text: str | bytes, object_pairs_hook: Callable[[Any], Any] | None = None) -> Any:
    """Parse with the standard library, as strictly as orjson: exact integers, no ``NaN``/``Infinity``.

    Raises:
        ValueError: not JSON, or nested too deeply for the standard library's recursive parser.
    """
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text), "surrogatepass")  # as json.loads does
    # json.loads with keyword arguments builds a new decoder per call (twice the time on a row)
    decoder = _EXACT if object_pairs_hook is None else json.JSONDecoder(
        parse_constant=_reject_constant, object_pairs_hook=object_pairs_hook)
    try:
        return decoder.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_EXACT = json.JSONDecoder(parse_constant=_reject_constant)


class RawJson(str):
    """Text that ``dumps`` writes verbatim (e.g. an f32 already formatted)."""

    __slots__ = ()


def _rust_float(text: str, plain_below: int = 16, plain_above: int = -5) -> str:
    """Lay out the digits of Python's shortest ``repr`` as Rust's ryu does.

    Same digits, other layout: ryu writes a plain decimal when ``10**(kk-1) <= |x| < 10**kk`` with
    ``plain_above < kk <= plain_below`` (f64: 16 and -5, f32: 13 and -6), else ``1.5e16``/``2.5e-7``;
    Python switches at other points (``1e-05``, ``2.5e-05``) and spells exponents ``e+16``.
    """
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    kk = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if not digits:
        return sign + "0.0"
    length = len(digits)
    if length <= kk <= plain_below:
        body = digits + "0" * (kk - length) + ".0"
    elif 0 < kk <= plain_below:
        body = f"{digits[:kk]}.{digits[kk:]}"
    elif plain_above < kk <= 0:
        body = "0." + "0" * -kk + digits
    elif length == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + body


def format_f64(value: float) -> str:
    """Shortest round-trip decimal of an f64, as the server writes it; NaN/±inf → ``null``."""
    if not math.isfinite(value):
        return "null"
    return _rust_float(repr(float(value)))


F32_OVERFLOW = 2.0**128 - 2.0**103
"""Numbers at least this large round to infinity as an f32 (f32::MAX is just below it)."""


def format_f32(value: float) -> str:
    """Shortest decimal that round-trips through f32 (``0.1``, not ``0.10000000149011612``)."""
    if not math.isfinite(value) or abs(value) >= F32_OVERFLOW:
        return "null"  # beyond f32's range the value is ±inf as an f32, and non-finite is null
    (single,) = struct.unpack("<f", struct.pack("<f", value))
    for digits in range(1, 10):
        text = f"{single:.{digits}g}"
        try:
            if struct.unpack("<f", struct.pack("<f", float(text)))[0] == single:
                break
        except OverflowError:  # rounded up past f32::MAX (3e+38 for 3.4028235e38): more digits
            continue
    text = repr(float(text))  # normalise spelling: '12.5', '1e+16', '0.0001'
    return _rust_float(text, plain_below=13, plain_above=-6)


def _dumps_str(value: str) -> str:
    return orjson.dumps(value).decode()


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value if isinstance(value, RawJson) else _dumps_str(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(format_f64(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_dumps_str(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """Compact JSON text, exact integers, server-style floats and string escapes."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)
