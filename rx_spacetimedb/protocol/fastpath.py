"""The optional C parser (``_typedjson.c``): JSON text straight to typed values, by a plan.

It is built at install where a C compiler is found, and switched off with
``RX_SPACETIMEDB_PURE_PYTHON=1``. It is a fast path only: for any text it does not take it answers
``FALLBACK`` and the caller decodes that text with the Python decoders, which stay the reference
(they decide what is valid and make every error).
"""

from __future__ import annotations

import os
from typing import Any

from rx_spacetimedb.errors import ProtocolError

__all__ = ["FALLBACK", "PARSER"]

FALLBACK: Any = object()
"""The parser's answer for a text it leaves to the Python decoders."""


def _load() -> Any:
    if os.environ.get("RX_SPACETIMEDB_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from rx_spacetimedb.protocol import _typedjson
    except ImportError:
        return None
    # A row or variant class raising these means "not for the fast path" (see sats.py).
    _typedjson.configure(FALLBACK, (ProtocolError, KeyError))
    return _typedjson


PARSER: Any = _load()
"""The ``_typedjson`` module, or None (not built here, or switched off)."""
