"""Failures surface at once, with their cause: nothing waits for the request timeout in vain.

Each "at once" is checked against a bound far below the 30 s request timeout: the test asserts
that the call finished within it, never how fast.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from reactivex import operators as ops
from reactivex.subject import ReplaySubject

import rx_spacetimedb
from rx_spacetimedb import (
    AuthenticationFailed,
    ConnectionClosedByUser,
    ConnectionState,
    ConnectTimeout,
    CredentialsError,
    DatabaseNotFound,
    ReducerFailed,
    TransportError,
)
from rx_spacetimedb.credentials import CredentialStore
from rx_spacetimedb.testing import SpacetimeDBEmulator, TokenIssuer, example_module
from tests.conftest import WAIT, wait_for
from tests.test_connection import open_conn

_T = TypeVar("_T")

SOON = 3.0
"""The bound of every "at once": a tenth of the default request timeout."""


def finishes(call: Callable[[], _T], bound: float = SOON) -> _T:
    """Run ``call`` on a thread; fail unless it returned or raised within ``bound`` seconds."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", call()))
        except BaseException as err:  # the caller inspects it
            outcome.append(("error", err))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert outcome, f"still blocked after {bound} s"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value  # type: ignore[no-any-return]


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_table_and_typed_views_never_block_on_a_connection_that_cannot_connect() -> None:
    conn = rx_spacetimedb.connect("127.0.0.1", "quickstart", port=dead_port(), reconnect_delay=0.05)
    try:
        live = finishes(lambda: conn.table("Player"))
        assert live.rows() == ()
        finishes(lambda: conn.table_diffs("Player").subscribe(lambda _: None))
        finishes(lambda: conn.reducer_results("SetScore").subscribe(lambda _: None))
        finishes(lambda: conn.subscribe_all())  # read from the schema once it comes
    finally:
        finishes(conn.close)


def test_a_table_made_before_the_schema_fills_when_it_comes(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["ann"])
    with open_conn(server) as conn:
        live = conn.table("Player")  # most likely before the schema: must not wait for it
        everything = conn.subscribe_all()
        everything.result(WAIT)
        assert [p.name for p in live.rows()] == ["ann"]
        assert len(everything.result(0).update.tables) == 1


def test_after_a_fatal_error_every_pending_and_new_request_fails_at_once_with_it(
        server: SpacetimeDBEmulator) -> None:
    conn = rx_spacetimedb.connect(server.url, "nope")
    pending = conn.call_reducer("CreatePlayer", ["ann"])  # queued: nothing is connected yet
    subscription = conn.subscribe_single("SELECT * FROM Player")
    with pytest.raises(DatabaseNotFound):
        finishes(lambda: conn.wait_connected(WAIT))
    for request in (pending, subscription):
        with pytest.raises(DatabaseNotFound):
            finishes(lambda r=request: r.result(WAIT))  # type: ignore[misc]
    for call in (lambda: conn.call_reducer("CreatePlayer", ["bob"]), lambda: conn.one_off_query("SELECT 1"),
                 lambda: conn.subscribe_multi(["SELECT * FROM Player"]), lambda: conn.call_procedure("X")):
        with pytest.raises(DatabaseNotFound):
            finishes(call)
    conn.close()


def test_after_close_every_request_fails_at_once(server: SpacetimeDBEmulator) -> None:
    conn = open_conn(server)
    conn.wait_connected(WAIT)
    server.pause()
    in_flight = conn.call_reducer("CreatePlayer", ["ann"])
    conn.close()
    server.resume()
    with pytest.raises(ConnectionClosedByUser):
        finishes(lambda: in_flight.result(WAIT))
    with pytest.raises(ConnectionClosedByUser):
        finishes(lambda: conn.call_reducer("CreatePlayer", ["bob"]))
    with pytest.raises(ConnectionClosedByUser):
        finishes(lambda: conn.wait_connected(WAIT))


def test_wait_connected_times_out_with_the_last_cause_as_a_timeout_error() -> None:
    port = dead_port()
    conn = rx_spacetimedb.connect("127.0.0.1", "quickstart", port=port, reconnect_delay=0.02,
                                  max_reconnect_delay=0.05)
    try:
        wait_for(conn.states, lambda s: s.error is not None)
        with pytest.raises(ConnectTimeout) as caught:
            conn.wait_connected(0.2)
        assert isinstance(caught.value, TimeoutError)
        assert "not connected after 0.2 s; last attempt:" in str(caught.value)
        assert str(port) in str(caught.value) or "refused" in str(caught.value).lower()
        assert isinstance(caught.value.last_error, TransportError)
    finally:
        conn.close()


def test_with_reconnect_false_a_refused_connection_raises_its_own_error() -> None:
    conn = rx_spacetimedb.connect("127.0.0.1", "quickstart", port=dead_port(), reconnect=False)
    with pytest.raises(TransportError) as caught:
        finishes(lambda: conn.wait_connected(WAIT))
    assert not isinstance(caught.value, ConnectionClosedByUser)  # the user closed nothing
    conn.close()


def test_wait_connected_while_reconnecting_waits_for_the_new_socket(server: SpacetimeDBEmulator) -> None:
    with open_conn(server, reconnect_delay=0.2, max_reconnect_delay=0.2) as conn:
        first = conn.wait_connected(WAIT)
        server.drop_all()
        wait_for(conn.states, lambda s: s.status != "connected")
        second = conn.wait_connected(WAIT)
        assert second.connection_id != first.connection_id
        assert second.identity == first.identity


def test_an_unknown_reducer_fails_one_way_whatever_the_timing(server: SpacetimeDBEmulator) -> None:
    conn = open_conn(server)
    early = conn.call_reducer("NoSuchReducer", [])  # before the schema, most likely: queued
    conn.wait_connected(WAIT)
    late = conn.call_reducer("NoSuchReducer", [])
    for request in (early, late):
        with pytest.raises(ReducerFailed, match="no such reducer"):
            finishes(lambda r=request: r.result(WAIT))  # type: ignore[misc]
    conn.close()


def test_a_handler_callback_that_matches_nothing_raises_at_connect(server: SpacetimeDBEmulator) -> None:
    class Typo:
        def on_insert(self, message: Any) -> None: ...

        def on_transaction_update(self, message: Any) -> None: ...

    for handler in (Typo(), {"on_connect": print}):
        with pytest.raises(ValueError, match=r"match no message kind.*on_transaction_update"):
            rx_spacetimedb.connect(server.url, server.database, handler=handler)


def test_a_server_that_simply_went_away_is_not_blamed_on_our_last_message(
        server: SpacetimeDBEmulator) -> None:
    with open_conn(server) as conn:
        conn.wait_connected(WAIT)
        states: ReplaySubject[ConnectionState] = ReplaySubject()
        conn.states.subscribe(states)
        server.set_delay(WAIT)  # no answer comes before the drop
        conn.call_reducer("CreatePlayer", ["ann"])  # sent just before the socket dies
        server.drop_all()
        state = wait_for(states, lambda s: s.status == "disconnected")
        assert "1006" in str(state.error) and "last message" not in str(state.error)


# -- tokens the server forgets --------------------------------------------------------------------


def other_key() -> TokenIssuer:
    """The tokens of another server (or of this one after a reset): a new signing key."""
    return TokenIssuer(secret=os.urandom(32))


def test_a_minted_token_the_server_forgot_is_dropped_and_the_connection_carries_on(tmp_path: Path) -> None:
    first = SpacetimeDBEmulator(example_module()).start()
    port = first.port
    store = CredentialStore(tmp_path / "token")
    conn = rx_spacetimedb.connect(first.url, first.database, credentials=store, reconnect_delay=0.02,
                                  max_reconnect_delay=0.05)
    try:
        old = conn.wait_connected(WAIT)
        assert store.load() == old.token
        first.stop()
        # A development server reset: same address, new signing key, the old token is unknown.
        second = SpacetimeDBEmulator(example_module(), port=port, token_issuer=other_key()).start()
        try:
            identities = conn.identity.pipe(ops.filter(lambda t: t.identity != old.identity))
            new = wait_for(identities, lambda _: True)
            assert conn.state.status == "connected" and "new identity" in conn.state.reason
            assert conn.token == new.token and store.load() == new.token
        finally:
            second.stop()
    finally:
        conn.close()


def test_a_rejected_token_from_a_file_stays_fatal_and_names_the_file(
        server: SpacetimeDBEmulator, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(other_key().mint()[1])  # signed by another server's key
    conn = rx_spacetimedb.connect(server.url, server.database, credentials=path)
    with pytest.raises(AuthenticationFailed) as caught:
        finishes(lambda: conn.wait_connected(WAIT))
    assert str(path) in str(caught.value) and "delete that file" in str(caught.value)
    assert caught.value.token_source == "file"
    conn.close()


def test_a_rejected_token_given_by_the_user_stays_fatal(server: SpacetimeDBEmulator) -> None:
    token = other_key().mint()[1]
    conn = rx_spacetimedb.connect(server.url, server.database, token=token)
    with pytest.raises(AuthenticationFailed, match=r"connect\(token=\.\.\.\) was rejected") as caught:
        finishes(lambda: conn.wait_connected(WAIT))
    assert token not in str(caught.value)
    conn.close()


@pytest.mark.parametrize(("content", "says"), [
    (b"\xff\xfe\x00binary", "not text"),
    (b"", "empty"),
    (b"two\nlines", "does not hold one token"),
    (None, "is a directory"),
])
def test_a_credentials_file_that_is_not_a_token_names_the_file(
        tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "token"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CredentialsError, match=says) as caught:
        rx_spacetimedb.connect("127.0.0.1", "quickstart", credentials=path)
    assert str(path) in str(caught.value)
