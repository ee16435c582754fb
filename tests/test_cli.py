"""The command line: the demo, watch/sql/call/identity against an embedded emulator, errors, secrecy."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rx_spacetimedb import cli
from rx_spacetimedb.cli import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    TOKEN_ENV,
    main,
    parse_arg,
)
from rx_spacetimedb.testing import SpacetimeDBEmulator
from tests.conftest import WAIT

DEMO_OUTPUT = """\
Started the embedded SpacetimeDB emulator (example module, database 'quickstart').
Connected. Every change to Player is printed as it arrives:
  + inserted   ~ updated   - deleted
> subscribe_single('SELECT * FROM Player')
    + Player(id=1, name='ada', score=0)
> call_reducer('CreatePlayer', ['alice'])
    + Player(id=2, name='alice', score=0)
> call_reducer('CreatePlayer', ['bob'])
    + Player(id=3, name='bob', score=0)
> call_reducer('CreatePlayer', ['carol'])
    + Player(id=4, name='carol', score=0)
> call_reducer('SetScore', [2, 42])
    ~ Player(id=2, name='alice', score=42)  score: 0 -> 42
> call_reducer('SetScore', [3, 17])
    ~ Player(id=3, name='bob', score=17)  score: 0 -> 17
> server.call_reducer('SetScore', [1, 7])   # a change made elsewhere
    ~ Player(id=1, name='ada', score=7)  score: 0 -> 7
> call_reducer('CreatePlayer', ['alice'])   # the name is taken: the reducer fails
    failed: reducer 'CreatePlayer' failed: name "alice" is already taken
> call_reducer('DeletePlayer', [4])
    - Player(id=4, name='carol', score=0)
> one_off_query('SELECT * FROM Player WHERE score > 10')
    alice, bob
Final Player table (conn.table('Player').rows()):
 id | name  | score
----+-------+-------
  1 | ada   |     7
  2 | alice |    42
  3 | bob   |    17
(3 rows)
Closed the connection and stopped the emulator.
"""
"""What the README shows; the demo prints exactly this, every time."""


class Watched(io.StringIO):
    """A text stream that lets a test wait (bounded) until some text has been written to it."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            n = super().write(text)
            self._changed.notify_all()
        return n

    def wait_for(self, text: str, timeout: float = WAIT) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: text in self.getvalue(), timeout):
                raise TimeoutError(f"{text!r} not written within {timeout} s; got {self.getvalue()!r}")


def start(*argv: str) -> tuple[Watched, Watched, Callable[[], int | None]]:
    """``main(argv)`` on a thread of its own: its stdout, its stderr, and a function that waits
    (bounded) for it to end and gives its exit code (None if it has not ended)."""
    out, err = Watched(), Watched()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(list(argv), stdout=out, stderr=err)))
    thread.start()

    def exit_code() -> int | None:
        thread.join(WAIT)
        return result[0] if result else None

    return out, err, exit_code


def run(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def target(server: SpacetimeDBEmulator) -> list[str]:
    return ["--host", server.url, "--database", server.database]


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("SPACETIMEDB_DATABASE", raising=False)
    monkeypatch.delenv("SPACETIMEDB_HOST", raising=False)
    yield


pytestmark = pytest.mark.usefixtures("no_token_env")


# -- demo ----------------------------------------------------------------------------------------


def test_demo_prints_the_live_diffs_and_the_final_table() -> None:
    code, out, err = run("demo")
    assert code == EXIT_OK, err
    assert out == DEMO_OUTPUT
    assert err == ""


def test_demo_as_a_subprocess_is_deterministic() -> None:
    """``python -m rx_spacetimedb demo`` exits 0 with the same output as in-process."""
    done = subprocess.run([sys.executable, "-m", "rx_spacetimedb", "demo"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == DEMO_OUTPUT
    assert done.stderr == ""


def test_help_documents_exit_codes_and_the_token_of_identity() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "exit codes:" in out and TOKEN_ENV in out
    code, out, _ = run("identity", "--help")
    assert code == 0
    assert "PRINTS ITS TOKEN" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run()[0] == EXIT_USAGE
    code, _, err = run("sql", "SELECT * FROM Player")
    assert code == EXIT_USAGE
    assert one_error_line(err) == "error: --database is required (or set $SPACETIMEDB_DATABASE)"


def test_parse_arg_takes_json_and_bare_words() -> None:
    assert parse_arg("42") == 42
    assert parse_arg('"42"') == "42"
    assert parse_arg("alice") == "alice"
    assert parse_arg("[1, 2]") == [1, 2]
    assert parse_arg("null") is None


# -- sql -----------------------------------------------------------------------------------------


def test_sql_prints_a_table(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["alice"])
    server.call_reducer("CreatePlayer", ["bob"])
    code, out, err = run("sql", *target(server), "SELECT * FROM Player")
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split("|")[0].strip() == "id"
    assert [c.strip() for c in lines[0].split("|")] == ["id", "identity", "name", "score", "created_at",
                                                        "location"]
    assert "| alice |" in out and "| bob   |" in out
    assert lines[-1] == "(2 rows)"


def test_sql_json_is_one_object_per_row(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["alice"])
    code, out, _ = run("sql", "--json", *target(server), "SELECT * FROM Player")
    assert code == EXIT_OK
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["name"] == "alice" and row["id"] == 1 and row["location"] is None
    assert len(row["identity"]) == 64 and row["created_at"].endswith("Z")


def test_sql_on_an_empty_table_still_names_the_columns(server: SpacetimeDBEmulator) -> None:
    code, out, _ = run("sql", *target(server), "SELECT * FROM Note")
    assert code == EXIT_OK
    assert out.splitlines()[0].split() == ["author", "|", "text"]
    assert out.splitlines()[-1] == "(0 rows)"


def test_bad_sql_is_one_line_and_exit_1(server: SpacetimeDBEmulator) -> None:
    code, out, err = run("sql", *target(server), "SELEC * FROM Player")
    assert code == EXIT_FAILED
    assert out == ""
    assert one_error_line(err).startswith("error: query failed: ")


# -- call ----------------------------------------------------------------------------------------


def test_call_commits_and_prints_the_outcome(server: SpacetimeDBEmulator) -> None:
    code, out, err = run("call", *target(server), "CreatePlayer", "alice")
    assert (code, out, err) == (EXIT_OK, "CreatePlayer committed\n", "")
    assert [p.name for p in server.table_rows("Player")] == ["alice"]
    code, out, _ = run("call", "--json", *target(server), "SetScore", "1", "42")
    assert code == EXIT_OK
    outcome = json.loads(out)
    assert outcome["reducer"] == "SetScore" and outcome["status"] == "committed"
    assert server.table_rows("Player")[0].score == 42


def test_call_of_a_procedure_prints_its_value(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["alice"])
    code, out, _ = run("call", *target(server), "FindPlayer", "alice")
    assert code == EXIT_OK
    assert out.startswith("FindPlayer returned: Player(id=1, ") and "name='alice'" in out
    assert run("call", *target(server), "FindPlayer", "nobody")[1] == "FindPlayer returned: none\n"


def test_a_failing_reducer_exits_1_with_its_message(server: SpacetimeDBEmulator) -> None:
    code, out, err = run("call", *target(server), "SetScore", "99", "1")
    assert code == EXIT_FAILED
    assert out == ""
    assert one_error_line(err) == "error: reducer 'SetScore' failed: no player with id 99"


@pytest.mark.parametrize(("args", "says"), [
    (["SetScore", "x", "1"], "U64 takes an int"),
    (["NoSuchReducer"], "unknown reducer 'NoSuchReducer'"),
])
def test_arguments_that_do_not_fit_exit_2(server: SpacetimeDBEmulator, args: list[str], says: str) -> None:
    code, _, err = run("call", *target(server), *args)
    assert code == EXIT_USAGE
    assert says in one_error_line(err)


# -- connection errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sql", "SELECT * FROM Player"], ["call", "CreatePlayer", "a"],
                                     ["watch", "SELECT * FROM Player"]])
def test_an_unreachable_host_is_one_line_and_exit_3(free_port: int, command: list[str]) -> None:
    code, out, err = run(command[0], "--host", "127.0.0.1", "--port", str(free_port), "-d", "quickstart",
                         *command[1:])
    assert code == EXIT_UNREACHABLE
    assert out == ""
    error = [line for line in err.splitlines() if not line.startswith("connecting")]
    assert one_error_line("\n".join(error)).startswith(f"error: cannot connect to ws://127.0.0.1:{free_port}")


def test_identity_against_an_unreachable_host(free_port: int) -> None:
    code, _, err = run("identity", "--host", "127.0.0.1", "--port", str(free_port))
    assert code == EXIT_UNREACHABLE
    assert one_error_line(err).startswith("error: cannot connect to http://127.0.0.1:")


@pytest.mark.parametrize("command", [["sql", "SELECT * FROM Player"], ["watch", "SELECT * FROM Player"]])
def test_an_unknown_database_is_one_line_and_exit_5(server: SpacetimeDBEmulator, command: list[str]) -> None:
    code, _, err = run(command[0], "--host", server.url, "-d", "nosuchdb", *command[1:])
    assert code == EXIT_NOT_FOUND
    error = [line for line in err.splitlines() if not line.startswith("connecting")]
    assert "no such database" in one_error_line("\n".join(error))


def test_a_bad_token_is_one_line_and_exit_4_and_not_echoed(server: SpacetimeDBEmulator) -> None:
    bad = "not.a.valid-token-3f9a"
    code, out, err = run("sql", *target(server), "--token", bad, "SELECT * FROM Player")
    assert code == EXIT_AUTH
    assert "rejected the token" in one_error_line(err)
    assert bad not in out + err


# -- the token is never printed ------------------------------------------------------------------


def test_watch_sql_and_call_never_print_the_token(server: SpacetimeDBEmulator,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = server.mint_token()
    printed = ""
    for flag in (["--token", token], []):
        if not flag:
            monkeypatch.setenv(TOKEN_ENV, token)
        for argv in (["call", *target(server), *flag, "CreatePlayer", f"p{len(flag)}"],
                     ["call", *target(server), *flag, "CreatePlayer", f"p{len(flag)}"],  # fails: taken
                     ["call", "--json", *target(server), *flag, "SetScore", "1", "5"],
                     ["sql", *target(server), *flag, "SELECT * FROM Player"],
                     ["sql", "--json", *target(server), *flag, "SELECT * FROM Player"],
                     ["sql", *target(server), *flag, "SELEC nonsense"],
                     ["watch", "-vv", *target(server), *flag, "--limit", "1", "SELECT * FROM Player"],
                     ["watch", "--json", *target(server), *flag, "--limit", "1", "SELECT * FROM Player"]):
            code, out, err = run(*argv)
            assert code in (EXIT_OK, EXIT_FAILED), err
            printed += out + err
    assert "p2" in printed and "p0" in printed  # the commands did run, as the token's identity
    assert token not in printed
    assert token.split(".")[2] not in printed  # not even the signature


# -- identity ------------------------------------------------------------------------------------


def test_identity_mints_a_token_that_the_server_accepts(server: SpacetimeDBEmulator) -> None:
    code, out, _ = run("identity", "--host", server.url, "--json")
    assert code == EXIT_OK
    minted = json.loads(out)
    assert len(minted["identity"]) == 64
    code, out, err = run("sql", *target(server), "--token", minted["token"], "SELECT * FROM Player")
    assert code == EXIT_OK, err
    code, out, _ = run("identity", "--host", server.url)
    assert out.startswith("identity: ") and "\ntoken: " in out


def test_identity_save_writes_the_token_and_prints_only_the_identity(server: SpacetimeDBEmulator,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "token"
    code, out, err = run("identity", "--host", server.url, "--save", str(path))
    assert code == EXIT_OK
    token = path.read_text()
    assert token and token not in out + err
    assert out.startswith("identity: ") and "token" not in out
    assert (path.stat().st_mode & 0o777) == 0o600
    code, _, err = run("sql", *target(server), "--credentials", str(path), "SELECT * FROM Player")
    assert code == EXIT_OK, err


# -- watch ---------------------------------------------------------------------------------------


def test_watch_prints_diffs_as_they_arrive(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["ada"])
    out, err, exit_code = start("watch", *target(server), "--limit", "4", "SELECT * FROM Player")
    err.wait_for("subscribed: SELECT * FROM Player")
    out.wait_for("+ Player(id=1,")
    server.call_reducer("CreatePlayer", ["bob"])
    out.wait_for("name='bob'")
    server.call_reducer("SetScore", [1, 42])
    out.wait_for("score: 0 -> 42")
    server.call_reducer("DeletePlayer", [2])
    assert exit_code() == EXIT_OK
    lines = out.getvalue().splitlines()
    assert lines[0] == "# subscribe (1 row)"
    assert lines[2] == '# CreatePlayer ["bob"] (1 row)'
    assert lines[3].startswith("+ Player(id=2, identity=") and "name='bob', score=0" in lines[3]
    assert lines[4] == "# SetScore [1,42] (1 row)"
    assert lines[5].startswith("~ Player(id=1, ") and lines[5].endswith("score: 0 -> 42")
    assert lines[6] == "# DeletePlayer [2] (1 row)"
    assert lines[7].startswith("- Player(id=2, ")
    status = err.getvalue().splitlines()
    assert status[0].startswith(f"connecting to {server.url} database 'quickstart'")
    assert status[1].startswith(f"connected to {server.url} database 'quickstart' as ")


def test_watch_json_is_one_object_per_line(server: SpacetimeDBEmulator) -> None:
    out, err, exit_code = start("watch", "--json", *target(server), "--limit", "3", "SELECT * FROM Player")
    err.wait_for("subscribed:")
    out.wait_for('"cause":"subscribe"')
    server.call_reducer("CreatePlayer", ["ada"])
    out.wait_for('"reducer":"CreatePlayer"')
    server.call_reducer("SetScore", [1, 3])
    assert exit_code() == EXIT_OK
    first, created, updated = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first == {"table": None, "cause": "subscribe", "reducer": None,
                     "inserts": [], "deletes": [], "updates": []}
    assert created["table"] == "Player" and created["inserts"][0]["name"] == "ada"
    assert updated["updates"][0]["old"]["score"] == 0 and updated["updates"][0]["new"]["score"] == 3
    assert "subscribed:" not in out.getvalue()  # status stays on stderr


def test_watch_reports_reconnects_on_stderr(server: SpacetimeDBEmulator) -> None:
    out, err, exit_code = start("watch", *target(server), "--limit", "2", "SELECT * FROM Player")
    err.wait_for("subscribed:")
    server.drop_all()
    err.wait_for("connected again")
    server.call_reducer("CreatePlayer", ["ada"])
    assert exit_code() == EXIT_OK
    assert "disconnected: " in err.getvalue() and "reconnecting in " in err.getvalue()
    assert "name='ada'" in out.getvalue()


def test_watch_with_no_reconnect_exits_3_when_the_connection_drops(server: SpacetimeDBEmulator) -> None:
    _, err, exit_code = start("watch", *target(server), "--no-reconnect", "SELECT * FROM Player")
    err.wait_for("subscribed:")
    server.drop_all()
    assert exit_code() == EXIT_UNREACHABLE
    assert err.getvalue().splitlines()[-1].startswith("error: the connection to ") or \
        err.getvalue().splitlines()[-1].startswith("error: cannot connect to ")


def test_watch_of_a_bad_query_is_one_line_and_exit_1(server: SpacetimeDBEmulator) -> None:
    code, _, err = run("watch", *target(server), "SELECT * FROM Nope")
    assert code == EXIT_FAILED
    assert err.splitlines()[-1].startswith("error: subscription failed: no such table")


class _SlowQueue(queue.Queue[tuple[str, object]]):
    """Records each get's timeout; empty for the first ``empty_for`` gets."""

    def __init__(self, empty_for: int) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.empty_for = empty_for
        self.put(("diff", 1))

    def get(self, block: bool = True, timeout: float | None = None) -> tuple[str, object]:
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.empty_for:
            raise queue.Empty
        return super().get(block, timeout)


def test_the_watch_loop_never_blocks_in_one_untimed_wait() -> None:
    # a Ctrl-C the kernel hands to the I/O thread is raised only when the main thread runs again
    events = _SlowQueue(empty_for=3)
    assert cli._next_event(events, None) == ("diff", 1)
    assert len(events.timeouts) == 4
    assert all(t is not None and 0 < t <= cli._WAKE_UP for t in events.timeouts)
    # with a timeout, Empty comes once it has passed, not after the first short wait
    with pytest.raises(queue.Empty):
        cli._next_event(_SlowQueue(empty_for=10**9), 0.0)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX")
def test_ctrl_c_during_watch_is_an_event_and_a_second_one_interrupts() -> None:
    before = signal.getsignal(signal.SIGINT)
    events: queue.Queue[tuple[str, object]] = queue.Queue()
    with cli._ctrl_c_as_event(events):
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt wherever the main thread is
        assert events.get_nowait() == ("stop", None)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    # off the main thread no handler can be set: Ctrl-C keeps its default there
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(_enter_and_report(events)))
    thread.start()
    thread.join()
    assert seen == [before] and events.empty()


def _enter_and_report(events: queue.Queue[tuple[str, object]]) -> object:
    with cli._ctrl_c_as_event(events):
        return signal.getsignal(signal.SIGINT)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_watch_subprocess_stops_cleanly_on_ctrl_c(server: SpacetimeDBEmulator) -> None:
    env = {**os.environ, TOKEN_ENV: server.mint_token()[1], "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "rx_spacetimedb", "watch", *target(server), "SELECT * FROM Player"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stderr is not None and child.stdout is not None
        status: list[str] = []
        for line in child.stderr:  # bounded by the pytest timeout; the child says it at once
            status.append(line)
            if line.startswith("subscribed:"):
                break
        assert child.stdout.readline() == "# subscribe (0 rows)\n"
        server.call_reducer("CreatePlayer", ["ada"])
        assert child.stdout.readline() == '# CreatePlayer ["ada"] (1 row)\n'
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=3 * WAIT)  # a bound for a loaded machine, not a speed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == EXIT_OK, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "stopped"
    assert env[TOKEN_ENV] not in "".join(status) + out + err
