"""``QtThreadScheduler`` and the Qt example, offscreen: work from foreign threads reaches the GUI thread.

Also documents why the scheduler exists: reactivex's ``QtScheduler`` drops work scheduled from a
thread without a Qt event loop, like the connection's I/O thread.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

PySide6 = pytest.importorskip("PySide6", reason="PySide6 is not installed (pip install 'rx_spacetimedb[qt]')")

from reactivex.disposable import Disposable  # noqa: E402

import rx_spacetimedb  # noqa: E402
from rx_spacetimedb.qt import KNOWN_BAD_PYSIDE6, QtThreadScheduler  # noqa: E402
from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module  # noqa: E402
from tests.gui import load_example  # noqa: E402

if PySide6.__version__ == KNOWN_BAD_PYSIDE6 and sys.version_info < (3, 12):
    pytest.skip(f"PySide6 {KNOWN_BAD_PYSIDE6} aborts Python < 3.12 (reference counting bug)",
                allow_module_level=True)

from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from reactivex.scheduler.mainloop import QtScheduler  # noqa: E402

Action = Callable[[Any, Any], Any]


@pytest.fixture(scope="module")
def qapp() -> QCoreApplication:
    """The process's one QApplication, offscreen (no display needed)."""
    app = QApplication.instance()
    return app if app is not None else QApplication(["rx-spacetimedb-tests", "-platform", "offscreen"])


def pump_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run a Qt event loop until ``condition()`` holds or ``timeout`` passes; the final answer.

    A ``QEventLoop`` with a polling timer rather than ``QCoreApplication.processEvents()``: the
    static call leaks a reference to None on every call under PySide6 6.12.0 (measured).
    """
    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()

    def check() -> None:
        if condition() or time.monotonic() > deadline:
            loop.quit()

    timer.timeout.connect(check)
    timer.start(2)
    if not condition():
        loop.exec()
    timer.stop()
    return condition()


def in_thread(work: Callable[[], object]) -> None:
    """Run ``work`` on a new thread (no Qt event loop, like the I/O thread) and wait for it."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def note(ran: list[Any], value: Any) -> Action:
    def action(scheduler: Any, state: Any) -> None:
        ran.append(value)
    return action


def test_reactivex_qtscheduler_drops_work_scheduled_from_another_thread(qapp: QCoreApplication) -> None:
    from PySide6 import QtCore

    theirs = QtScheduler(QtCore)
    ran: list[str] = []
    scheduled = threading.Event()
    release = threading.Event()

    def io_thread() -> None:  # alive while the GUI loop runs, as the connection's I/O thread is
        theirs.schedule(note(ran, "schedule"))
        theirs.schedule_relative(0.005, note(ran, "schedule_relative"))
        scheduled.set()
        release.wait(10)

    worker = threading.Thread(target=io_thread)
    worker.start()
    assert scheduled.wait(10)
    theirs.schedule_relative(0.1, note(ran, "control from the GUI thread"))
    try:
        assert pump_until(lambda: "control from the GUI thread" in ran)
    finally:
        release.set()
        worker.join()
    if ran != ["control from the GUI thread"]:
        pytest.skip(f"reactivex's QtScheduler now delivers work from other threads: {ran}")
    assert ran == ["control from the GUI thread"]  # both foreign schedules silently dropped


def test_work_from_other_threads_runs_on_the_gui_thread_in_order(qapp: QCoreApplication) -> None:
    scheduler = QtThreadScheduler()
    ran: list[tuple[int, int, int]] = []

    def action(_: Any, state: Any) -> None:
        ran.append((*state, threading.get_ident()))

    def producer(k: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(250):
                scheduler.schedule(action, (k, i))
        return work

    threads = [threading.Thread(target=producer(k)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pump_until(lambda: len(ran) == 1000), len(ran)
    assert {ident for *_, ident in ran} == {threading.get_ident()}
    for k in range(4):
        assert [i for kk, i, _ in ran if kk == k] == list(range(250))


def test_a_scheduler_made_on_another_thread_still_runs_work_on_the_gui_thread(
        qapp: QCoreApplication) -> None:
    made: list[QtThreadScheduler] = []
    in_thread(lambda: made.append(QtThreadScheduler()))
    (scheduler,) = made
    ran: list[bool] = []
    in_thread(lambda: scheduler.schedule_relative(0.005, lambda s, _: ran.append(scheduler.in_gui_thread())))
    assert scheduler.in_gui_thread()  # the test runs on the GUI thread
    assert pump_until(lambda: bool(ran))
    assert ran == [True]


def test_relative_and_absolute_timers_fire_in_due_order_never_early(qapp: QCoreApplication) -> None:
    scheduler = QtThreadScheduler()
    ran: list[tuple[str, float]] = []
    due: dict[str, float] = {}

    def at(name: str, seconds: float) -> Action:
        due[name] = time.monotonic() + seconds

        def action(_: Any, __: Any) -> None:
            ran.append((name, time.monotonic()))
        return action

    def schedule_all() -> None:
        scheduler.schedule_relative(0.04, at("40ms", 0.04))
        scheduler.schedule_relative(0.01, at("10ms a", 0.01))
        scheduler.schedule_relative(timedelta(milliseconds=25), at("25ms", 0.025))
        scheduler.schedule_relative(0.01, at("10ms b", 0.01))
        scheduler.schedule_absolute(datetime.now(UTC) + timedelta(milliseconds=55), at("55ms abs", 0.055))
        scheduler.schedule(at("now", 0.0))

    in_thread(schedule_all)
    assert pump_until(lambda: len(ran) == 6), ran
    assert [name for name, _ in ran] == ["now", "10ms a", "10ms b", "25ms", "40ms", "55ms abs"]
    # The absolute one is converted from the wall clock; allow a millisecond for that.
    assert all(when >= due[name] - (0.001 if "abs" in name else 0.0) for name, when in ran), \
        [(name, when - due[name]) for name, when in ran]


def test_disposing_from_any_thread_cancels(qapp: QCoreApplication) -> None:
    scheduler = QtThreadScheduler()
    ran: list[str] = []
    handles: dict[str, Any] = {}

    def schedule_and_cancel() -> None:
        scheduler.schedule(note(ran, "immediate, cancelled at once")).dispose()
        handles["timer"] = scheduler.schedule_relative(0.02, note(ran, "timer, cancelled from a thread"))
        handles["gui timer"] = scheduler.schedule_relative(0.02, note(ran, "timer, cancelled on the GUI"))

    in_thread(schedule_and_cancel)
    in_thread(handles["timer"].dispose)
    handles["gui timer"].dispose()
    scheduler.schedule_relative(0.05, note(ran, "control"))
    assert pump_until(lambda: "control" in ran)
    assert ran == ["control"]


def test_disposing_after_the_action_ran_disposes_what_it_returned(qapp: QCoreApplication) -> None:
    scheduler = QtThreadScheduler()
    disposed: list[bool] = []
    ran: list[bool] = []

    def action(_: Any, __: Any) -> Disposable:
        ran.append(True)
        return Disposable(lambda: disposed.append(True))

    handle = scheduler.schedule(action)
    assert pump_until(lambda: bool(ran))
    in_thread(handle.dispose)
    assert disposed == [True]


def test_periodic_work_stops_when_disposed_from_another_thread(qapp: QCoreApplication) -> None:
    scheduler = QtThreadScheduler()
    ticks: list[int] = []

    def tick(state: Any) -> int:
        ticks.append(state)
        return int(state) + 1

    handle = scheduler.schedule_periodic(0.005, tick, 0)
    assert pump_until(lambda: len(ticks) >= 3)
    in_thread(handle.dispose)
    count = len(ticks)
    control: list[str] = []
    scheduler.schedule_relative(0.03, note(control, "control"))
    assert pump_until(lambda: bool(control))
    assert ticks == list(range(count))


def test_an_action_that_raises_is_reported_and_the_others_still_run(qapp: QCoreApplication) -> None:
    errors: list[Exception] = []
    scheduler = QtThreadScheduler(on_error=errors.append)
    ran: list[str] = []

    def boom(_: Any, __: Any) -> None:
        raise ValueError("boom")

    def schedule() -> None:
        scheduler.schedule(boom)
        scheduler.schedule(note(ran, "after"))

    in_thread(schedule)
    assert pump_until(lambda: bool(ran))
    assert [str(e) for e in errors] == ["boom"]
    assert ran == ["after"]


def test_many_cancelled_timers_do_not_pile_up(qapp: QCoreApplication) -> None:
    scheduler = QtThreadScheduler()
    for _ in range(1000):
        scheduler.schedule_relative(60.0, note([], "never")).dispose()
    ran: list[str] = []
    scheduler.schedule(note(ran, "flush"))
    assert pump_until(lambda: bool(ran))
    assert "pending timers: 0" in repr(scheduler)
    assert len(scheduler._heap) <= 2 * 64


@pytest.fixture
def server() -> Iterator[SpacetimeDBEmulator]:
    with SpacetimeDBEmulator(example_module()) as emulator:
        yield emulator


def test_qt_example_shows_rows_the_server_changes_and_its_button_adds_one(
        qapp: QCoreApplication, server: SpacetimeDBEmulator) -> None:
    qt_players = load_example("qt_players")
    conn = rx_spacetimedb.connect(server.host, server.database, port=server.port)
    window = qt_players.PlayersWindow(conn)
    try:
        server.call_reducer("CreatePlayer", ["alice"])
        assert pump_until(lambda: window.shown_rows() == [("1", "alice", "0")]), window.shown_rows()
        assert window.status.text() == "connected"

        server.call_reducer("SetScore", [1, 7])
        assert pump_until(lambda: window.shown_rows() == [("1", "alice", "7")]), window.shown_rows()

        window.name_edit.setText("bob")
        window.add_button.click()
        assert pump_until(lambda: window.shown_rows() == [("1", "alice", "7"), ("2", "bob", "0")]), \
            window.shown_rows()
        window.score_button.click()  # nothing selected: the first player
        assert pump_until(lambda: window.shown_rows()[0] == ("1", "alice", "8")), window.shown_rows()
        assert [(p.name, p.score) for p in server.table_rows("Player")] == [("alice", 8), ("bob", 0)]
    finally:
        window.dispose()
        conn.close()
        window.deleteLater()


def test_the_readme_qt_snippet_shows_the_connection_state(
        qapp: QCoreApplication, server: SpacetimeDBEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Qt snippet as pasted, pointed at the emulator, its event loop bounded."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("#### Qt (PySide6)"):]
    start = section.index("```python\n") + len("```python\n")
    snippet = section[start:section.index("```", start)]
    real_connect = rx_spacetimedb.connect
    namespace: dict[str, Any] = {}

    def exec_until_connected() -> int:
        label = namespace["label"]
        assert pump_until(lambda: label.text() == "connected"), label.text()
        return 0

    monkeypatch.setattr(rx_spacetimedb, "connect",
                        lambda *args, **kwargs: real_connect(server.url, server.database))
    monkeypatch.setattr("PySide6.QtWidgets.QApplication", lambda *args: qapp)
    monkeypatch.setattr(qapp, "exec", exec_until_connected)
    exec(compile(snippet, "README.md[Qt]", "exec", dont_inherit=True), namespace)
    assert namespace["conn"].state.status == "closed"  # the snippet closes it after exec()
    namespace["label"].deleteLater()
