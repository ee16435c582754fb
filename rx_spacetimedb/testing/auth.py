"""Tokens and identities as the emulator mints and checks them.

Tokens are JWT-shaped (``header.payload.signature``, base64url) with the real server's claims
(``hex_identity``, ``sub``, ``iss``, ``aud``, ``iat``, ``exp: null``) so clients can store and inspect
them; the signature is an HMAC of the emulator's secret instead of ES256, so only tokens this
emulator minted validate. Identities derive from ``(iss, sub)`` exactly as the server derives them
(``Identity::from_claims``: BLAKE3, ``c200`` prefix, checksum), so the same claims give the same
identity here and on a real server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from rx_spacetimedb.protocol.values import Identity
from rx_spacetimedb.testing._blake3 import blake3

__all__ = ["Claims", "TokenError", "TokenIssuer", "identity_from_claims"]

_HEADER = {"typ": "JWT", "alg": "ES256"}
_PROCESS_SECRET = secrets.token_bytes(32)
_LEEWAY = 60
"""Seconds a token stays valid after its ``exp`` (the server's JWT validation default)."""


class TokenError(Exception):
    """A token this emulator did not mint (or a malformed one); ``str()`` is the 401 body text.

    The text starts with ``Invalid token:`` as the real server's validation errors do.
    """


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a validated token.

    Only what the emulator needs to recover the identity and to echo the token back.
    """

    identity: Identity
    issuer: str
    subject: str


def identity_from_claims(issuer: str, subject: str) -> Identity:
    """The identity of ``(iss, sub)`` as the server derives it: ``c200``, 4 checksum bytes, 26 hash bytes.

    The hash bytes are the first 26 of BLAKE3(``"{iss}|{sub}"``), the checksum the first 4 of
    BLAKE3(``c200`` + hash bytes); big-endian, so the identity prints as ``c200...``.
    """
    first = blake3(f"{issuer}|{subject}".encode())[:26]
    checksum = blake3(b"\xc2\x00" + first)[:4]
    return Identity(int.from_bytes(b"\xc2\x00" + checksum + first, "big"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Mints and validates the emulator's tokens.

    One secret per process by default, so a token stays valid across emulators of one test run.
    """

    def __init__(self, issuer: str = "localhost", secret: bytes | None = None) -> None:
        self.issuer = issuer
        self._secret = secret if secret is not None else _PROCESS_SECRET

    def mint(
        self, subject: str | None = None, *, issuer: str | None = None, expires_in: int | None = None
    ) -> tuple[Identity, str]:
        """A new (identity, token) for ``subject`` (a random UUID by default).

        Used for anonymous connections and ``POST /v1/identity``, like the server's minting.
        """
        sub = subject if subject is not None else str(uuid.uuid4())
        iss = issuer if issuer is not None else self.issuer
        identity = identity_from_claims(iss, sub)
        now = int(time.time())
        payload = {
            "hex_identity": identity.hex,
            "sub": sub,
            "iss": iss,
            "aud": ["spacetimedb"],
            "iat": now,
            "exp": None if expires_in is None else now + expires_in,
        }
        signing_input = (
            _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(payload, separators=(",", ":")).encode())
        )
        signature = hmac.new(self._secret, signing_input.encode(), hashlib.sha512).digest()
        return identity, signing_input + "." + _b64(signature)

    def validate(self, token: str) -> Claims:
        """The claims of a token this emulator minted; TokenError otherwise.

        Lets reconnecting clients keep their identity while foreign tokens get the 401 they would get.
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("Invalid token: InvalidToken")
        signing_input = parts[0] + "." + parts[1]
        try:
            signature = _unb64(parts[2])
            payload = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            raise TokenError("Invalid token: InvalidToken") from None
        expected = hmac.new(self._secret, signing_input.encode(), hashlib.sha512).digest()
        if not hmac.compare_digest(signature, expected):
            raise TokenError("Invalid token: InvalidSignature")
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("sub"), str)
            or not isinstance(payload.get("iss"), str)
        ):
            raise TokenError("Invalid token: InvalidClaims")
        exp = payload.get("exp")
        if isinstance(exp, int) and exp + _LEEWAY < time.time():
            raise TokenError("Invalid token: ExpiredSignature")
        identity = identity_from_claims(payload["iss"], payload["sub"])
        if payload.get("hex_identity", identity.hex) != identity.hex:
            raise TokenError("Invalid token: Identity mismatch")
        return Claims(identity, payload["iss"], payload["sub"])
