"""``connect()``'s options as one frozen object, validated in one place.

Durations are seconds everywhere; the old ``reconnect_delay_ms``/``max_reconnect_delay_ms`` are
turned into seconds by ``connect()`` with a ``DeprecationWarning``.
"""

from __future__ import annotations

import os
import ssl as _ssl
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reactivex import abc

from rx_spacetimedb.credentials import CredentialStore, default_credentials_path
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.transport import build_url

__all__ = ["ConnectOptions", "seconds_from_deprecated_ms"]

CredentialsOption = CredentialStore | str | os.PathLike[str] | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectOptions:
    """Everything ``connect()`` was given, checked and normalized (see ``connect`` for each one).

    ``url`` is the resolved server URL (``host`` as given, or built from ``host``/``port``/``tls``)
    and ``credentials`` the resolved store. The token is never shown in the repr.
    """

    host: str = "localhost"
    database: str = ""
    port: int = 3000
    tls: bool = False
    token: str | None = field(default=None, repr=False)
    reconnect: bool = True
    reconnect_delay: float = 0.5
    max_reconnect_delay: float = 30.0
    reconnect_jitter: float = 0.0
    name: str | None = None
    light: bool = False
    confirmed: bool = False
    ssl_context: _ssl.SSLContext | None = None
    fetch_schema: bool = True
    schema: ModuleSchema | None = field(default=None, repr=False)
    row_types: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))
    credentials: CredentialsOption = None
    request_timeout: float | None = 30.0
    max_queued_requests: int = 1000
    ping_interval: float | None = 15.0
    open_timeout: float | None = 10.0
    subscribe: Sequence[str] = ()
    scheduler: abc.SchedulerBase | None = field(default=None, repr=False)
    url: str = field(init=False, default="")

    def __post_init__(self) -> None:
        """Check every option (the error names it) and resolve the URL and the credentials store."""
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("host: must be a non-empty string")
        if not isinstance(self.database, str) or not self.database:
            raise ValueError("database: must be a database name or identity")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"port: must be an int in 1..65535, got {self.port!r}")
        for option in ("tls", "reconnect", "light", "confirmed", "fetch_schema"):
            if not isinstance(getattr(self, option), bool):
                raise TypeError(f"{option}: must be a bool, got {type(getattr(self, option)).__name__}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("token: must be a non-empty string or None")
        for option in ("reconnect_delay", "max_reconnect_delay"):
            if not _is_number(getattr(self, option)) or getattr(self, option) < 0:
                raise ValueError(f"{option}: must be a number of seconds >= 0, got {getattr(self, option)!r}")
        if self.max_reconnect_delay < self.reconnect_delay:
            raise ValueError("max_reconnect_delay: must be >= reconnect_delay")
        if not _is_number(self.reconnect_jitter) or not 0 <= self.reconnect_jitter <= 1:
            raise ValueError(f"reconnect_jitter: must be a fraction in [0, 1], got {self.reconnect_jitter!r}")
        if isinstance(self.max_queued_requests, bool) or not isinstance(self.max_queued_requests, int) \
                or self.max_queued_requests < 0:
            raise ValueError(f"max_queued_requests: must be an int >= 0, got {self.max_queued_requests!r}")
        if self.request_timeout is not None and (not _is_number(self.request_timeout)
                                                 or self.request_timeout <= 0):
            raise ValueError("request_timeout: must be a positive number of seconds or None, "
                             f"got {self.request_timeout!r}")
        for option in ("ping_interval", "open_timeout"):
            value = getattr(self, option)
            if value is not None and (not _is_number(value) or value <= 0):
                raise ValueError(f"{option}: must be a positive number of seconds or None, got {value!r}")
        if self.ssl_context is not None and not isinstance(self.ssl_context, _ssl.SSLContext):
            raise TypeError("ssl_context: must be an ssl.SSLContext")
        if self.schema is not None and not isinstance(self.schema, ModuleSchema):
            raise TypeError("schema: must be a ModuleSchema")
        if not isinstance(self.row_types, Mapping):
            raise TypeError(f"row_types: must be a mapping of table name to class, "
                            f"not {type(self.row_types).__name__}")
        if isinstance(self.subscribe, str):
            raise TypeError("subscribe: must be a list of queries, not one string")
        scheme = "wss" if self.tls or self.ssl_context is not None else "ws"
        url = self.host if "://" in self.host else f"{scheme}://{self.host}:{self.port}"
        build_url(url, self.database)  # validates host and database now, at the call
        set_field = object.__setattr__  # frozen: normalized once, here
        set_field(self, "url", url)
        set_field(self, "row_types", MappingProxyType(dict(self.row_types)))
        set_field(self, "subscribe", tuple(self.subscribe or ()))
        set_field(self, "credentials", _store(self.credentials, url, self.database))

    @property
    def store(self) -> CredentialStore | None:
        """The credentials store (resolved from ``credentials``), or None."""
        assert self.credentials is None or isinstance(self.credentials, CredentialStore)
        return self.credentials


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _store(credentials: Any, url: str, database: str) -> CredentialStore | None:
    if credentials is True:
        return CredentialStore(default_credentials_path(url, database))
    if credentials is None or credentials is False or isinstance(credentials, CredentialStore):
        return credentials or None
    if isinstance(credentials, str | os.PathLike):
        return CredentialStore(credentials)
    raise TypeError("credentials: must be True, a path or a CredentialStore, "
                    f"not {type(credentials).__name__}")


def seconds_from_deprecated_ms(old: str, new: str, ms: float | None, seconds: float | None,
                               default: float) -> float:
    """The seconds of option ``new``, taking the deprecated ``old`` (milliseconds) with a warning."""
    if ms is None:
        return default if seconds is None else seconds
    if seconds is not None:
        raise ValueError(f"{old}: give {new} (seconds) only; {old} is its deprecated name in milliseconds")
    if not _is_number(ms):
        raise ValueError(f"{old}: must be a number >= 0, got {ms!r}")
    warnings.warn(f"{old} is deprecated: pass {new}={ms / 1000!r} (seconds)", DeprecationWarning,
                  stacklevel=3)
    return ms / 1000
