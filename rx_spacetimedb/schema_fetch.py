"""Fetch the module schema over HTTP (``GET /v1/database/{db}/schema?version=9``), stdlib only."""

from __future__ import annotations

import asyncio
import ssl as _ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from rx_spacetimedb.errors import (
    AuthenticationFailed,
    BadRequest,
    DatabaseNotFound,
    HandshakeError,
    TransportError,
)
from rx_spacetimedb.protocol.schema import ModuleSchema

__all__ = ["fetch_schema", "http_base"]

_HTTP = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def http_base(host: str) -> str:
    """``http[s]://host[:port][/prefix]`` for a ws/wss/http/https URL or bare ``host[:port]``."""
    if "://" not in host:
        host = f"http://{host}"
    parts = urlsplit(host)
    scheme = _HTTP.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"host: not a server URL: {host!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _get(url: str, token: str | None, ssl: _ssl.SSLContext | None, timeout: float) -> bytes:
    request = urllib.request.Request(url, method="GET")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ssl) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as err:
        text = err.read().decode("utf-8", "replace").strip()
        cls = {400: BadRequest, 401: AuthenticationFailed, 404: DatabaseNotFound}.get(
            err.code, HandshakeError)
        raise cls(err.code, text) from err
    except (urllib.error.URLError, OSError) as err:
        raise TransportError(f"cannot fetch the schema from {url}: {err}") from err


async def fetch_schema(host: str, database: str, *, token: str | None = None,
                       ssl: _ssl.SSLContext | None = None, timeout: float = 15.0,
                       row_types: Mapping[str, type] | None = None) -> ModuleSchema:
    """Fetch and parse the schema without blocking the event loop (a worker thread does the HTTP)."""
    url = f"{http_base(host)}/v1/database/{quote(database, safe='')}/schema?version=9"
    body = await asyncio.to_thread(_get, url, token, ssl, timeout)
    return ModuleSchema.from_json(body, row_classes=row_types)
