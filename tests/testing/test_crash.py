"""Crash test: ``kill -9`` the emulator process at random moments while a client calls reducers.

The emulator runs as ``python -m rx_spacetimedb.testing serve --data-dir DIR`` in a subprocess; one
client (``rx_spacetimedb.connect`` with a credentials file) keeps up to three reducer calls in flight.
Each round the process is killed (SIGKILL: no shutdown code runs) after a random number of
acknowledged commits, with calls still on the wire, and started again on the same port and data.
After every restart:

* every acknowledged commit is there exactly once: each acknowledged ``CreatePlayer`` row exists,
  and the ``Deposit`` balance counts every acknowledged deposit and at most the ones in doubt;
* nothing appears that was never sent;
* the client reconnected by itself with the same identity, and its cache equals the server's tables.

A few rounds run in the regular suite; ``pytest --runslow`` runs 60.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rx_spacetimedb
from rx_spacetimedb import RequestAborted, RequestTimeout
from rx_spacetimedb.connection import Connection
from rx_spacetimedb.requests import Request
from tests.conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent.parent
IN_FLIGHT = 3


def values(row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, f.name) for f in dataclasses.fields(row))


class ServerProcess:
    """The emulator in its own process on a data dir; ``kill()`` is SIGKILL, ``start()`` reuses the port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.banners: list[str] = []

    def start(self) -> None:
        command = [sys.executable, "-m", "rx_spacetimedb.testing", "serve",
                   "--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()  # printed once it accepts connections
        assert "SpacetimeDB emulator" in banner, f"the server did not start: {banner!r}"
        banner += self.process.stdout.readline()  # where its data is
        self.banners.append(banner)
        found = re.search(r"ws://127\.0\.0\.1:(\d+)", banner)
        assert found is not None
        self.port = int(found.group(1))

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)
        assert self.process.stdout is not None
        self.process.stdout.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    process.start()
    yield process
    if process.process is not None and process.process.poll() is None:
        process.kill()


def settle(request: Request[Any]) -> bool:
    """True if the call was acknowledged, False if it is in doubt (the socket went away first)."""
    try:
        request.result(timeout=WAIT)
    except (RequestAborted, RequestTimeout):
        return False
    return True


def barrier(conn: Connection) -> None:
    """A no-op commit acknowledged after the reconnect (so its resync answers arrived before it)."""
    for _ in range(20):  # the first tries may still go out on the socket the kill has cut
        if settle(conn.call_reducer("Deposit", ["me", 0])):
            return
    raise AssertionError("the client did not get a reducer through after the restart")


def crash_rounds(server: ServerProcess, tmp_path: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    conn = rx_spacetimedb.connect(server.url, "quickstart", credentials=tmp_path / "token",
                                  reconnect_delay=0.02, max_reconnect_delay=0.1)
    with conn:
        identity = conn.wait_connected(timeout=WAIT).identity
        conn.subscribe_multi(["SELECT * FROM Player", "SELECT * FROM Account"]).result(timeout=WAIT)
        barrier(conn)  # the Account row exists from here on
        acked_names: set[str] = set()
        doubt_names: set[str] = set()
        acked_deposits = doubt_deposits = 0
        calls = 0
        for _round in range(rounds):
            target = rng.randint(1, 8)
            done = 0
            flying: list[tuple[str | None, Request[Any]]] = []

            def settle_oldest(flying: list[tuple[str | None, Request[Any]]]) -> bool:
                nonlocal acked_deposits, doubt_deposits
                name, request = flying.pop(0)
                ok = settle(request)
                if name is None:
                    acked_deposits += ok
                    doubt_deposits += not ok
                else:
                    (acked_names if ok else doubt_names).add(name)
                return ok

            while done < target:
                while len(flying) < IN_FLIGHT:
                    calls += 1
                    if rng.random() < 0.5:
                        name = f"p{calls}"
                        flying.append((name, conn.call_reducer("CreatePlayer", [name])))
                    else:
                        flying.append((None, conn.call_reducer("Deposit", ["me", 1])))
                done += settle_oldest(flying)
            server.kill()  # with calls still on the wire
            while flying:
                settle_oldest(flying)
            server.start()
            barrier(conn)

            assert conn.identity_token is not None and conn.identity_token.identity == identity
            players = conn.one_off_query("SELECT * FROM Player").result(timeout=WAIT).rows
            accounts = conn.one_off_query("SELECT * FROM Account").result(timeout=WAIT).rows
            server_names = [p.name for p in players]
            assert len(server_names) == len(set(server_names))
            assert acked_names <= set(server_names), "an acknowledged commit was lost"
            assert set(server_names) <= acked_names | doubt_names, "a row nobody sent appeared"
            (account,) = accounts
            assert acked_deposits <= account.balance <= acked_deposits + doubt_deposits
            assert sorted(map(values, conn.cache.rows("Player"))) == sorted(map(values, players))
            assert [values(a) for a in conn.cache.rows("Account")] == [values(account)]
    assert all("commits replayed" in banner for banner in server.banners[1:])


def test_kill_9_at_random_moments_loses_no_acknowledged_commit(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    crash_rounds(server_process, tmp_path, rounds=3, seed=15)


@pytest.mark.slow
def test_kill_9_sixty_times(server_process: ServerProcess, tmp_path: Path) -> None:
    crash_rounds(server_process, tmp_path, rounds=60, seed=1515)
