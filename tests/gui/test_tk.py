"""The Tk example against the embedded emulator, on a real X display (a private Xvfb if needed).

Server-side changes must show in the window, and the buttons must call reducers whose rows then
appear. The Tk loop is pumped until a condition holds (bounded), never for a fixed time.
"""

from __future__ import annotations

import gc
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

try:
    import tkinter as tk
    from tkinter import ttk
except ImportError:  # a Python built without Tk
    pytest.skip("tkinter is not available (apt-get install python3-tk)", allow_module_level=True)

import rx_spacetimedb
from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module
from tests.gui import load_example

tk_players = load_example("tk_players")


def _read_display_number(fd: int, timeout: float) -> str:
    """What Xvfb writes to ``-displayfd`` once it accepts clients: the display number and a newline."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return ""
        chunk = os.read(fd, 64)
        if not chunk:
            return ""
        data += chunk
    return data.decode().strip()


@pytest.fixture(scope="module")
def display() -> Iterator[str | None]:
    """The X display to use: ``$DISPLAY`` if set (None), else a private Xvfb started here, else skip."""
    if os.environ.get("DISPLAY"):
        yield None
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no X display: DISPLAY is unset and Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display itself and reports it when ready (no races, no sleeps).
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        number = _read_display_number(read_fd, timeout=15.0)
        if not number:
            pytest.skip(f"Xvfb did not start (exit code {proc.poll()})")
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def root(display: str | None) -> Iterator[tk.Tk]:
    try:
        window = tk.Tk(screenName=display)
    except tk.TclError as err:
        pytest.skip(f"Tk cannot open the display {display or os.environ.get('DISPLAY')}: {err}")
    yield window
    window.destroy()
    # Tk objects must be freed on the Tk thread: collect cycles here, not by chance on the I/O thread.
    gc.collect()


@pytest.fixture
def server() -> Iterator[SpacetimeDBEmulator]:
    with SpacetimeDBEmulator(example_module()) as emulator:
        yield emulator


def pump_until(root: tk.Misc, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run the Tk main loop until ``condition()`` holds or ``timeout`` passes; the final answer.

    Why ``mainloop`` and not ``update()`` in a loop: a Tk call from another thread (the I/O thread's
    ``after``) waits for the Tk thread only while it is inside ``mainloop``; under ``update()`` it
    fails after 1 s with "RuntimeError: main thread is not in main loop" (measured).
    """
    deadline = time.monotonic() + timeout

    def check() -> None:
        if condition() or time.monotonic() > deadline:
            root.quit()
        else:
            root.after(5, check)

    root.after(0, check)
    root.mainloop()
    return condition()


class RecordingApp(tk_players.PlayersApp):  # type: ignore[name-defined, misc]
    """The example's app, noting the thread every row update arrives on."""

    def __init__(self, root: tk.Tk, conn: rx_spacetimedb.Connection) -> None:
        self.threads: set[int] = set()
        super().__init__(root, conn)

    def show_rows(self, rows: Sequence[Any]) -> None:
        self.threads.add(threading.get_ident())
        super().show_rows(rows)


@pytest.fixture
def app(root: tk.Tk, server: SpacetimeDBEmulator) -> Iterator[RecordingApp]:
    conn = rx_spacetimedb.connect(server.host, server.database, port=server.port)
    window = RecordingApp(root, conn)
    yield window
    window.dispose()
    closed: list[bool] = []
    tk_players.close_then(root, conn, lambda: closed.append(True))
    assert pump_until(root, lambda: bool(closed)), "the connection did not close"


def test_window_shows_rows_the_server_changes(app: RecordingApp, server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["alice"])
    assert pump_until(app.root, lambda: app.shown_rows() == [("1", "alice", "0")]), app.shown_rows()
    assert app.status == "connected"

    server.call_reducer("CreatePlayer", ["bob"])
    server.call_reducer("SetScore", [1, 42])
    assert pump_until(app.root, lambda: app.shown_rows() == [("1", "alice", "42"), ("2", "bob", "0")]), \
        app.shown_rows()

    server.call_reducer("DeletePlayer", [1])
    assert pump_until(app.root, lambda: app.shown_rows() == [("2", "bob", "0")]), app.shown_rows()
    assert app.threads == {threading.main_thread().ident}, "rows must reach the widgets on the Tk thread"


def test_buttons_call_reducers_and_the_new_rows_appear(app: RecordingApp,
                                                       server: SpacetimeDBEmulator) -> None:
    assert pump_until(app.root, lambda: app.status == "connected")
    app.name_entry.insert(0, "carol")
    app.add_button.invoke()
    assert pump_until(app.root, lambda: app.shown_rows() == [("1", "carol", "0")]), app.shown_rows()
    assert [(p.name, p.score) for p in server.table_rows("Player")] == [("carol", 0)]

    app.tree.selection_set("1")
    app.score_button.invoke()
    assert pump_until(app.root, lambda: app.shown_rows() == [("1", "carol", "1")]), app.shown_rows()
    assert server.table_rows("Player")[0].score == 1


def test_a_failing_reducer_call_shows_in_the_status_line(app: RecordingApp,
                                                        server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["dave"])
    assert pump_until(app.root, lambda: len(app.shown_rows()) == 1)
    app.name_entry.insert(0, "dave")
    app.add_button.invoke()
    assert pump_until(app.root, lambda: "failed" in app.status), app.status
    assert "already taken" in app.status
    assert app.shown_rows() == [("1", "dave", "0")]


def test_main_starts_the_emulator_shows_its_rows_and_closes_cleanly(
        display: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    windows: list[AutoClosingTk] = []

    class AutoClosingTk(tk.Tk):
        """A root that presses the window's close button once the status line says connected."""

        def __init__(self) -> None:
            super().__init__(screenName=display)
            windows.append(self)
            self.after(5, self.close_when_connected)

        def close_when_connected(self) -> None:
            texts = [str(w.cget("text")) for w in self.winfo_children() if isinstance(w, ttk.Label)]
            if "connected" not in texts:
                self.after(5, self.close_when_connected)
                return
            handler = self.protocol("WM_DELETE_WINDOW")
            self.tk.call(handler)

    monkeypatch.setattr(tk_players.tk, "Tk", AutoClosingTk)
    try:
        assert tk_players.main([]) == 0
    except tk.TclError as err:
        pytest.skip(f"Tk cannot open the display: {err}")
    assert len(windows) == 1
    with pytest.raises(tk.TclError):
        windows[0].winfo_exists()  # destroyed after the connection closed
    windows.clear()
    gc.collect()


def readme_snippet(heading: str) -> str:
    """The first Python block after ``heading`` in the README."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_the_readme_tk_snippet_shows_the_connection_state(
        root: tk.Tk, server: SpacetimeDBEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Tk snippet as pasted, pointed at the emulator, its main loop bounded."""
    made: list[rx_spacetimedb.Connection] = []
    real_connect = rx_spacetimedb.connect

    def connect(*args: Any, **kwargs: Any) -> rx_spacetimedb.Connection:
        made.append(real_connect(server.url, server.database))
        return made[-1]

    namespace: dict[str, Any] = {}

    real_mainloop = root.mainloop

    def mainloop(n: int = 0) -> None:
        label = namespace["label"]
        monkeypatch.setattr(root, "mainloop", real_mainloop)  # pump_until runs the real one
        assert pump_until(root, lambda: label.cget("text") == "connected"), label.cget("text")

    monkeypatch.setattr(rx_spacetimedb, "connect", connect)
    monkeypatch.setattr(tk, "Tk", lambda *args, **kwargs: root)
    monkeypatch.setattr(root, "mainloop", mainloop)
    try:
        exec(compile(readme_snippet("#### Tk"), "README.md[Tk]", "exec", dont_inherit=True), namespace)
    finally:
        namespace["states"].dispose()
        monkeypatch.undo()
        closed: list[bool] = []
        tk_players.close_then(root, made[0], lambda: closed.append(True))
        assert pump_until(root, lambda: bool(closed))
    assert made and made[0].state.status == "closed"
