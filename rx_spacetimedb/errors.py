"""The exception tree of rx_spacetimedb.

Every error the library raises or emits on a stream derives from ``SpacetimeDBError``::

    SpacetimeDBError
    ├── ProtocolError              a frame or value that does not follow the protocol
    ├── SchemaError                an unknown table/reducer name, a row type that does not fit
    ├── TransportError             the socket: refused, dropped, timed out
    │   ├── ConnectTimeout         wait_connected() timed out (also a TimeoutError): the last cause
    │   ├── ConnectionClosed       the socket closed (close code and reason when there is one)
    │   │   └── ConnectionRejected closed before IdentityToken: the module refused the client
    │   └── HandshakeError         the HTTP upgrade was answered with an error status
    │       ├── BadRequest         400 (malformed token, query string, subprotocol...)
    │       ├── AuthenticationFailed  401 (token invalid or unknown)
    │       └── DatabaseNotFound   404 (no database of that name)
    ├── RequestError               a request did not succeed
    │   ├── ReducerFailed          the reducer returned an error (or could not start)
    │   ├── OutOfEnergy            the reducer or procedure ran out of energy
    │   ├── ProcedureFailed        the procedure failed (InternalError)
    │   ├── SubscriptionFailed     SubscriptionError for a subscribe/unsubscribe
    │   ├── QueryFailed            a one-off query came back with an error
    │   ├── RequestTimeout         no answer in time (also a TimeoutError)
    │   └── RequestAborted         the connection went away before the answer came
    ├── SlowConsumer               a subscriber fell too far behind (observe_on_bounded)
    ├── CredentialsError           a credentials file that cannot be read as a token
    └── ConnectionClosedByUser     the connection was closed with close(); no more requests
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "ConnectionClosed",
    "ConnectionClosedByUser",
    "ConnectTimeout",
    "ConnectionRejected",
    "CredentialsError",
    "DatabaseNotFound",
    "HandshakeError",
    "OutOfEnergy",
    "ProcedureFailed",
    "ProtocolError",
    "QueryFailed",
    "ReducerFailed",
    "RequestAborted",
    "RequestError",
    "RequestTimeout",
    "SchemaError",
    "SlowConsumer",
    "SpacetimeDBError",
    "SubscriptionFailed",
    "TransportError",
]

_RAW_PREVIEW = 200


class SpacetimeDBError(Exception):
    """Root of every rx_spacetimedb error."""


class ProtocolError(SpacetimeDBError):
    """A frame or value that does not follow the protocol.

    ``path`` names where in the message the problem is (``TransactionUpdate.status.Committed``),
    ``raw`` keeps the whole offending frame for logging (its repr shows only a preview).
    """

    def __init__(self, message: str, *, path: str = "", raw: str | bytes | None = None) -> None:
        self.reason = message
        self.path = path
        self.raw = raw
        super().__init__(f"{path}: {message}" if path else message)

    def __repr__(self) -> str:
        raw = self.raw
        if isinstance(raw, str) and len(raw) > _RAW_PREVIEW:
            raw = raw[:_RAW_PREVIEW] + "..."
        elif isinstance(raw, bytes) and len(raw) > _RAW_PREVIEW:
            raw = raw[:_RAW_PREVIEW] + b"..."
        return f"ProtocolError({str(self)!r}, raw={raw!r})"


class SchemaError(SpacetimeDBError):
    """A name the module schema does not know, or a row type that does not match it."""


class TransportError(SpacetimeDBError):
    """The socket could not be opened or was lost."""


class ConnectTimeout(TransportError, TimeoutError):
    """Not connected in time; ``last_error`` is why the last attempt failed (None: none failed yet)."""

    def __init__(self, message: str, *, last_error: Exception | None = None) -> None:
        self.last_error = last_error
        super().__init__(message)


class ConnectionClosed(TransportError):
    """The WebSocket closed; ``code``/``reason`` are the close frame's (1006: no close frame)."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class ConnectionRejected(ConnectionClosed):
    """The socket closed before ``IdentityToken``: the module's ``client_connected`` refused us."""


class HandshakeError(TransportError):
    """The server answered the WebSocket upgrade with an HTTP error status."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}" if body else f"HTTP {status}")


class BadRequest(HandshakeError):
    """HTTP 400: a malformed token, query string, database name or subprotocol."""


class AuthenticationFailed(HandshakeError):
    """HTTP 401: the token is invalid, expired or signed by an unknown key.

    ``token_source`` says where the rejected token came from: ``"user"`` (``token=``), ``"file"``
    (a credentials file) or None.
    """

    token_source: str | None = None


class DatabaseNotFound(HandshakeError):
    """HTTP 404: no database of that name."""


class RequestError(SpacetimeDBError):
    """A request was answered with a failure, or not answered at all."""


class ReducerFailed(RequestError):
    """The reducer returned an error, or the server could not start it (unknown name, bad args)."""

    def __init__(self, reducer: str, message: str) -> None:
        self.reducer = reducer
        self.message = message
        super().__init__(f"reducer {reducer!r} failed: {message}")


class OutOfEnergy(RequestError):
    """The reducer or procedure ran out of energy; nothing was changed."""


class ProcedureFailed(RequestError):
    """The procedure could not run or raised (``InternalError``)."""

    def __init__(self, procedure: str, message: str) -> None:
        self.procedure = procedure
        self.message = message
        super().__init__(f"procedure {procedure!r} failed: {message}")


class SubscriptionFailed(RequestError):
    """A subscribe or unsubscribe was answered with ``SubscriptionError``."""

    def __init__(self, message: str, *, query_id: int | None = None,
                 request_id: int | None = None) -> None:
        self.message = message
        self.query_id = query_id
        self.request_id = request_id
        super().__init__(message)


class QueryFailed(RequestError):
    """A one-off query came back with an error."""


class RequestTimeout(RequestError, TimeoutError):
    """No answer arrived within the request's timeout."""


class RequestAborted(RequestError):
    """The connection was lost or closed before the answer arrived."""


class SlowConsumer(SpacetimeDBError):
    """A subscriber fell more than ``max_pending`` items behind (``observe_on_bounded``, overflow "error")."""


class CredentialsError(SpacetimeDBError):
    """A credentials file that is not a saved token (binary, empty, a directory, unreadable)."""


class ConnectionClosedByUser(SpacetimeDBError):
    """The connection was closed with ``close()``; it takes no more requests."""
