"""rx_spacetimedb.notebook without Jupyter: fake display handles, virtual time, a real emulator."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from typing import Any

import pytest
from reactivex import Observable
from reactivex.scheduler import TimeoutScheduler
from reactivex.scheduler.eventloop import AsyncIOThreadSafeScheduler
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

import rx_spacetimedb
from rx_spacetimedb import notebook
from rx_spacetimedb.notebook import (
    HtmlView,
    kernel_scheduler,
    live_chart,
    live_table,
    rows_html,
    throttle_latest,
    to_dataframe,
)
from rx_spacetimedb.protocol.values import Identity, Timestamp
from rx_spacetimedb.testing import SpacetimeDBEmulator
from tests.conftest import WAIT

on_next, on_completed, on_error = ReactiveTest.on_next, ReactiveTest.on_completed, ReactiveTest.on_error


@dataclasses.dataclass(frozen=True)
class Player:
    id: int
    name: str
    score: int


class FakeHandle:
    """Stands in for IPython's DisplayHandle: records what is shown, and on which thread."""

    def __init__(self, first: Any) -> None:
        self.shown = [first]
        self.threads: list[threading.Thread] = []
        self.changed = threading.Condition()

    def update(self, obj: Any) -> None:
        with self.changed:
            self.shown.append(obj)
            self.threads.append(threading.current_thread())
            self.changed.notify_all()


class FakeDisplay:
    """Stands in for ``IPython.display.display(obj, display_id=True)``."""

    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []

    def __call__(self, obj: Any) -> FakeHandle:
        handle = FakeHandle(obj)
        self.handles.append(handle)
        return handle

    @property
    def html(self) -> list[str]:
        return [obj.html for obj in self.handles[0].shown]


# -- throttle_latest -----------------------------------------------------------------------------


def test_throttle_latest_draws_at_once_then_the_last_of_each_window() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, "a"), on_next(220, "b"), on_next(230, "c"),
        on_next(400, "d"), on_next(405, "e"), on_completed(500))
    result = scheduler.start(lambda: source.pipe(throttle_latest(50, scheduler)))
    assert result.messages == [on_next(210, "a"), on_next(260, "c"), on_next(400, "d"),
                               on_next(450, "e"), on_completed(500)]


def test_throttle_latest_never_starves_a_steady_stream() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(*[on_next(201 + 10 * i, i) for i in range(20)])
    result = scheduler.start(lambda: source.pipe(throttle_latest(30, scheduler)), disposed=420)
    times = [m.time for m in result.messages]
    assert times == [201, 231, 261, 291, 321, 351, 381, 411]
    assert result.messages[-1].value.value == 19  # the last value came through


def test_throttle_latest_keeps_the_last_value_before_an_error() -> None:
    scheduler = TestScheduler()
    boom = ValueError("boom")
    source = scheduler.create_hot_observable(on_next(210, 1), on_next(220, 2), on_error(230, boom))
    result = scheduler.start(lambda: source.pipe(throttle_latest(50, scheduler)))
    assert result.messages == [on_next(210, 1), on_next(260, 2), on_error(260, boom)]


def test_throttle_latest_as_in_its_marble_diagram() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(201, "a"), on_next(203, "b"), on_next(205, "c"), on_next(214, "d"), on_completed(216))
    result = scheduler.start(lambda: source.pipe(throttle_latest(5, scheduler)))
    assert result.messages == [on_next(201, "a"), on_next(206, "c"), on_next(214, "d"), on_completed(216)]


def test_throttle_latest_ends_at_once_when_nothing_waits() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(210, 1), on_completed(220))
    result = scheduler.start(lambda: source.pipe(throttle_latest(50, scheduler)))
    assert result.messages == [on_next(210, 1), on_completed(220)]


def test_throttle_latest_never_blocks_the_emitting_loop_while_the_kernel_loop_is_busy() -> None:
    """A cell blocked in ``Request.result()`` holds the kernel loop; the I/O loop must go on.

    The connection emits from its own running asyncio loop; from there, cancelling an
    ``AsyncIOThreadSafeScheduler`` timer waits for the kernel loop (``throttle_with_timeout`` does
    that on every value, and deadlocks here).
    """
    kernel, io_loop = asyncio.new_event_loop(), asyncio.new_event_loop()
    threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in (kernel, io_loop)]
    for thread in threads:
        thread.start()
    try:
        seen: list[int] = []
        done, emitted = threading.Event(), threading.Event()
        source: Subject[int] = Subject()
        source.pipe(throttle_latest(0.01, AsyncIOThreadSafeScheduler(kernel))).subscribe(
            seen.append, on_completed=done.set)

        def emit() -> None:  # on the I/O loop, as the connection does
            for i in range(100):
                source.on_next(i)
            source.on_completed()
            emitted.set()

        def cell() -> None:  # blocks the kernel loop until the I/O loop has emitted everything
            io_loop.call_soon_threadsafe(emit)
            emitted.wait(WAIT)

        kernel.call_soon_threadsafe(cell)
        assert emitted.wait(WAIT), "the I/O loop was blocked by the busy kernel loop"
        assert done.wait(WAIT)
        assert seen[-1] == 99
    finally:
        for loop, thread in zip((kernel, io_loop), threads, strict=True):
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()


# -- live_table ----------------------------------------------------------------------------------


def test_live_table_redraws_throttled_with_the_latest_rows() -> None:
    scheduler, display = TestScheduler(), FakeDisplay()
    rows: Subject[tuple[Player, ...]] = Subject()
    view = live_table(rows, "Player", columns=["name", "score"], sort_by="score", interval=1.0,
                      scheduler=scheduler, display=display)
    assert "(0 rows)" in display.html[0]
    rows.on_next((Player(1, "ada", 5),))
    rows.on_next((Player(1, "ada", 5), Player(2, "bob", 3)))
    scheduler.advance_by(0.5)
    assert view.renders == 2  # once, with the latest rows
    assert "(2 rows)" in display.html[-1]
    rows.on_next((Player(1, "ada", 5), Player(2, "bob", 4)))
    scheduler.advance_by(0.4)
    assert view.renders == 2  # still inside the one-second window
    scheduler.advance_by(0.2)
    assert view.renders == 3
    last = display.html[-1]
    assert "<td>4</td>" in last
    assert "(2 rows)" in last
    assert last.index("bob") < last.index("ada")  # sorted by score
    assert "<th>id</th>" not in last
    assert repr(view.last).splitlines()[0] == "Player"  # a text twin for consoles
    view.dispose()


def test_live_table_from_a_live_table_draws_its_rows_at_once() -> None:
    class FakeLiveTable:
        table = "Player"
        snapshots: Observable[tuple[Player, ...]] = Subject()

        def rows(self) -> tuple[Player, ...]:
            return (Player(1, "ada", 0),)

    display = FakeDisplay()
    with live_table(FakeLiveTable(), scheduler=TestScheduler(), display=display):
        assert "<td>ada</td>" in display.html[0]
        assert "<caption>Player (1 row)</caption>" in display.html[0]


def test_dispose_draws_a_change_still_waiting_for_its_interval() -> None:
    scheduler, display = TestScheduler(), FakeDisplay()
    rows: Subject[tuple[Player, ...]] = Subject()
    view = live_table(rows, interval=10.0, scheduler=scheduler, display=display)
    rows.on_next((Player(1, "ada", 0),))
    scheduler.advance_by(0.001)
    rows.on_next((Player(1, "ada", 0), Player(2, "bob", 0)))  # waits for the window
    view.dispose()
    assert "bob" in display.html[-1]
    rows.on_next(())
    scheduler.advance_by(100)
    assert "bob" in display.html[-1]  # nothing after dispose


def test_cells_are_escaped_and_rows_capped() -> None:
    rows = [Player(i, f"<b>p{i}</b>", i) for i in range(5)]
    text = rows_html(rows, max_rows=2, title="T")
    assert "<b>" not in text
    assert "&lt;b&gt;p0&lt;/b&gt;" in text and "p2" not in text
    assert "<caption>T (5 rows, showing 2)</caption>" in text


def test_an_error_is_shown_in_place_and_not_raised() -> None:
    scheduler, display = TestScheduler(), FakeDisplay()
    rows: Subject[tuple[Player, ...]] = Subject()
    view = live_table(rows, "Player", scheduler=scheduler, display=display)
    rows.on_error(rx_spacetimedb.ConnectionClosed("gone", code=1006))
    scheduler.advance_by(1)
    assert isinstance(view.error, rx_spacetimedb.ConnectionClosed)
    assert "live_table(Player) stopped: gone" in display.html[-1]
    assert "failed" in repr(view)


def test_a_bad_source_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="a Connection \\(with a table name\\), a LiveTable"):
        live_table(42, display=FakeDisplay())


def test_redraws_run_on_the_asyncio_loop_that_created_the_view() -> None:
    """In a kernel, rows arrive on the I/O thread and are drawn on the kernel's loop."""
    display = FakeDisplay()
    rows: Subject[tuple[Player, ...]] = Subject()

    async def scenario() -> tuple[threading.Thread, list[threading.Thread]]:
        assert isinstance(kernel_scheduler(), AsyncIOThreadSafeScheduler)
        view = live_table(rows, "Player", interval=0.01, display=display)
        drawn = asyncio.Event()
        loop = asyncio.get_running_loop()
        handle = display.handles[0]
        original = handle.update

        def update(obj: Any) -> None:
            original(obj)
            if "<td>bob</td>" in obj.html:
                loop.call_soon(drawn.set)

        handle.update = update  # type: ignore[method-assign]
        io_thread = threading.Thread(target=lambda: rows.on_next((Player(2, "bob", 1),)))
        io_thread.start()
        await asyncio.wait_for(drawn.wait(), WAIT)
        io_thread.join(WAIT)
        view.dispose()
        return threading.current_thread(), handle.threads

    loop_thread, drew_on = asyncio.run(scenario())
    assert drew_on and all(t is loop_thread for t in drew_on)


def test_without_a_running_loop_redraws_use_timer_threads() -> None:
    assert isinstance(kernel_scheduler(), TimeoutScheduler)


def test_live_table_follows_a_connection(server: SpacetimeDBEmulator) -> None:
    display = FakeDisplay()
    with rx_spacetimedb.connect(server.url, server.database) as conn:
        conn.wait_connected(WAIT)
        conn.subscribe_single("SELECT * FROM Player").result(WAIT)
        view = live_table(conn, "Player", columns=["id", "name"], interval=0.01, display=display)
        server.call_reducer("CreatePlayer", ["alice"])
        shown = view.wait_until(lambda obj: "<td>alice</td>" in obj.html, WAIT)
        assert isinstance(shown, HtmlView)
        view.dispose()


# -- live_chart ----------------------------------------------------------------------------------


def test_live_chart_records_changes_and_draws_a_png() -> None:
    pytest.importorskip("matplotlib", reason="live_chart needs matplotlib (the notebook extra)")
    scheduler, display = TestScheduler(), FakeDisplay()
    now = [100.0]
    rows: Subject[tuple[Player, ...]] = Subject()
    view = live_chart(rows, "Player", value=lambda p: p.score, label=lambda p: p.name, interval=1.0,
                      clock=lambda: now[0], scheduler=scheduler, display=display)
    first = display.handles[0].shown[0]
    assert first._repr_png_().startswith(b"\x89PNG")
    for t, score in ((101.0, 1), (102.0, 1), (103.0, 4)):
        now[0] = t
        rows.on_next((Player(1, "ada", score), Player(2, "bob", 2)))
        scheduler.advance_by(2.0)
    assert repr(view.last) == "<Player over time: ada, bob>"
    view.dispose()
    assert display.handles[0].shown[-1]._repr_png_().startswith(b"\x89PNG")


def test_history_keeps_changes_only_and_draws_present_lines_to_now() -> None:
    history = notebook._History(start=10.0, window=2)
    history.record(11.0, {"ada": 1.0, "bob": 2.0})
    history.record(12.0, {"ada": 1.0, "bob": 3.0})
    history.record(13.0, {"ada": 5.0})  # bob left
    history.record(14.0, {"ada": 6.0})
    series = history.copy(now=20.0)
    assert series["ada"] == [(3.0, 5.0), (4.0, 6.0), (10.0, 6.0)]  # window 2, then drawn on to now
    assert series["bob"] == [(1.0, 2.0), (2.0, 3.0)]  # gone: not drawn on


# -- to_dataframe --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    id: int
    owner: Identity
    at: Timestamp


def test_to_dataframe_converts_timestamps_and_identities() -> None:
    pandas = pytest.importorskip("pandas", reason="to_dataframe needs pandas (the notebook extra)")
    rows = [Row(1, Identity(0xAB), Timestamp(1_700_000_000_000_000)), Row(2, Identity(1), Timestamp(0))]
    frame = to_dataframe(rows)
    assert list(frame.columns) == ["id", "owner", "at"]
    assert frame["owner"][0] == f"{0xAB:064x}"
    assert pandas.api.types.is_datetime64_any_dtype(frame["at"])
    assert str(frame["at"].dt.tz) == "UTC"

    result = type("Result", (), {"rows": tuple(rows)})()  # a OneOffResult's shape
    assert to_dataframe(result, columns=["id"]).to_dict("list") == {"id": [1, 2]}
    assert list(to_dataframe([], columns=["id", "name"]).columns) == ["id", "name"]


def test_missing_optional_packages_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pandas", "matplotlib", "matplotlib.figure", "IPython", "IPython.display"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    install = r"pip install 'rx_spacetimedb\[notebook\]'"
    with pytest.raises(ImportError, match=f"to_dataframe needs pandas: {install}"):
        to_dataframe([])
    with pytest.raises(ImportError, match="live_chart needs matplotlib"):
        live_chart(Subject(), value=float, display=FakeDisplay())
    with pytest.raises(ImportError, match="showing live output needs IPython"):
        live_table(Subject())


def test_the_module_imports_without_the_optional_packages() -> None:
    import subprocess

    code = ("import sys\n"
            "for name in ('pandas', 'matplotlib', 'IPython'): sys.modules[name] = None\n"
            "import rx_spacetimedb.notebook\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout == "ok\n", done.stderr


def test_the_readme_snippet_works_against_a_server(server: SpacetimeDBEmulator) -> None:
    """The README's Jupyter snippet, with fake displays standing in for the notebook."""
    pytest.importorskip("matplotlib", reason="live_chart needs matplotlib (the notebook extra)")
    pytest.importorskip("pandas", reason="to_dataframe needs pandas (the notebook extra)")
    table_display, chart_display = FakeDisplay(), FakeDisplay()
    conn = rx_spacetimedb.connect(server.url, server.database)
    conn.wait_connected(timeout=10)
    conn.subscribe_single("SELECT * FROM Player").result(timeout=10)

    players = live_table(conn, "Player", columns=["id", "name", "score"], sort_by="id",
                         display=table_display)
    scores = live_chart(conn, "Player", value=lambda p: p.score, label=lambda p: p.name, ylabel="score",
                        display=chart_display)

    async def call() -> None:
        await conn.call_reducer("CreatePlayer", ["alice"])

    asyncio.run(call())
    players.wait_until(lambda obj: "<td>alice</td>" in obj.html, WAIT)
    scores.wait_until(lambda obj: "alice" in repr(obj), WAIT)

    frame = to_dataframe(conn.one_off_query("SELECT * FROM Player").result(timeout=10))
    assert frame["name"].tolist() == ["alice"]

    players.dispose()
    scores.dispose()
    conn.close()
    assert "<td>alice</td>" in table_display.html[-1]
    assert chart_display.handles[0].shown[-1]._repr_png_().startswith(b"\x89PNG")
