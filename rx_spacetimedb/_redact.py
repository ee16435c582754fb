"""A logger for websockets that never writes a token (spec §1.4: never log tokens).

websockets logs every handshake header and frame at DEBUG level: the ``Authorization`` header, the
101 response's ``spacetime-identity-token`` and the ``IdentityToken`` frame all carry a token. The
client transport and the embedded emulator both hand websockets this adapter.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Final

from websockets.frames import Frame, Opcode

__all__ = ["RedactingLogger"]

_SENSITIVE_HEADERS: Final = frozenset({"authorization", "spacetime-identity-token", "cookie"})
_REDACTED: Final = "<redacted>"
_DATA_OPCODES: Final = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """Hand websockets a logger that never writes the token.

    websockets logs every handshake header and frame at DEBUG level: the ``Authorization``
    header, the 101 response's ``spacetime-identity-token`` and the ``IdentityToken`` frame
    all carry a token (§1.4: never log tokens).
    """

    def __init__(self, logger: logging.Logger, token: str | None = None) -> None:
        super().__init__(logger, {})
        self._token = token

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        # Attribute the record to websockets' line, not to this wrapper.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self.logger.log(level, msg, *self._redact(msg, args), **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs

    def _redact(self, msg: object, args: tuple[object, ...]) -> tuple[object, ...]:
        header_line = msg in ("> %s: %s", "< %s: %s") and len(args) == 2
        if header_line and str(args[0]).lower() in _SENSITIVE_HEADERS:
            return (args[0], _REDACTED)
        redacted: list[object] = []
        for arg in args:
            if isinstance(arg, Frame) and arg.opcode in _DATA_OPCODES:
                # Payloads may hold a token (IdentityToken); log only their kind and size.
                arg = f"{arg.opcode.name} [{len(arg.data)} bytes]"
            elif self._token and isinstance(arg, str | bytes) and self._token in str(arg):
                arg = str(arg).replace(self._token, _REDACTED)
            redacted.append(arg)
        return tuple(redacted)
