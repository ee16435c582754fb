"""Request handles: the id a request got at once, and its outcome later.

Each request method of ``Connection`` returns a ``Request``: ``.id`` is the request id (query id,
message id) known immediately, ``.outcome`` an Observable that emits the answer once and completes
(or errors with a typed error), and the handle can be awaited from any asyncio loop or waited on
with ``.result()`` from plain threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Generator
from typing import Any, Generic, TypeVar

from reactivex import Observable
from reactivex.subject import AsyncSubject

__all__ = ["Request"]

_T = TypeVar("_T")


class Request(Generic[_T]):
    """One request in flight: ``id`` now, ``outcome`` (Observable), ``result()``, or ``await``."""

    def __init__(self, kind: str, request_id: Any, name: str = "") -> None:
        self.kind = kind
        self.id = request_id
        self.name = name
        self._subject: AsyncSubject[_T] = AsyncSubject()
        self._future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._lock = threading.Lock()  # guards _done: of concurrent settle/fail calls exactly one wins
        self._done = False
        self.sent = False

    @property
    def outcome(self) -> Observable[_T]:
        """Emits the answer once and completes, or errors (replayed to late subscribers)."""
        return self._subject

    @property
    def done(self) -> bool:
        """Whether the outcome is settled."""
        return self._done

    def settle(self, value: _T) -> bool:
        """Set the answer; False if it was already settled."""
        with self._lock:
            if self._done:
                return False
            self._done = True
        self._future.set_result(value)
        self._subject.on_next(value)
        self._subject.on_completed()
        return True

    def fail(self, error: Exception) -> bool:
        """Set a failure; False if it was already settled."""
        with self._lock:
            if self._done:
                return False
            self._done = True
        self._future.set_exception(error)
        self._subject.on_error(error)
        return True

    def result(self, timeout: float | None = None) -> _T:
        """Block until the answer arrives (never call it from the connection's I/O thread)."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            if self._future.done():
                raise  # the outcome itself (RequestTimeout is a TimeoutError too)
            raise TimeoutError(f"{self!r} has no answer after {timeout} s") from None

    def __await__(self) -> Generator[Any, None, _T]:
        return asyncio.wrap_future(self._future).__await__()

    def __repr__(self) -> str:
        state = "done" if self._done else ("sent" if self.sent else "queued")
        label = f" {self.name!r}" if self.name else ""
        shown = self.id.hex() if isinstance(self.id, bytes) else self.id
        return f"<Request {self.kind}{label} id={shown} {state}>"
