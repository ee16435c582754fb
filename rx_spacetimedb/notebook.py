"""Jupyter helpers: a live-updating table, a live chart and DataFrames (extra ``rx_spacetimedb[notebook]``).

Rows change on the connection's I/O thread; a notebook can only draw from the kernel. Each helper
records every change as it comes, then redraws at most once per ``interval`` on the kernel's asyncio
loop (reactivex's ``AsyncIOThreadSafeScheduler``), always ending on the latest rows::

    from rx_spacetimedb.notebook import live_chart, live_table, to_dataframe

    players = live_table(conn, "Player", columns=["id", "name", "score"], sort_by="id")
    scores = live_chart(conn, "Player", value=lambda p: p.score, label=lambda p: p.name)
    to_dataframe(conn.one_off_query("SELECT * FROM Player").result(5))

IPython, pandas and matplotlib are imported only when a helper needs them, so this module imports
without them; a helper whose package is missing says which one to install.
"""

from __future__ import annotations

import contextvars
import dataclasses
import html
import importlib
import io
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import Any, Protocol, TypeVar

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import Disposable

from rx_spacetimedb._rows import cell, column_names, row_items, text_table
from rx_spacetimedb.protocol.values import ConnectionId, Identity, Timestamp

__all__ = [
    "DisplayHandle",
    "HtmlView",
    "LiveView",
    "PngView",
    "kernel_scheduler",
    "live_chart",
    "live_table",
    "rows_html",
    "throttle_latest",
    "to_dataframe",
]

_T = TypeVar("_T")
_INSTALL = "pip install 'rx_spacetimedb[notebook]'"


def _require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or fail saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(f"{purpose} needs {package}: {_INSTALL}") from err


# -- what gets displayed -----------------------------------------------------------------------


class DisplayHandle(Protocol):
    """What ``IPython.display.display(obj, display_id=True)`` returns: something to redraw in place."""

    def update(self, obj: Any) -> None:
        """Replace the displayed object."""


DisplayFactory = Callable[[Any], DisplayHandle]
"""Shows an object and returns its handle (default: IPython's ``display(obj, display_id=True)``)."""


def _ipython_display(obj: Any) -> DisplayHandle:
    """Show ``obj`` in the notebook with a display id, so it can be redrawn in place."""
    display = _require("IPython.display", "showing live output").display
    handle: DisplayHandle = display(obj, display_id=True)
    return handle


class HtmlView:
    """HTML for the notebook (``_repr_html_``) with a plain-text twin for consoles and logs."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html = html_text
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


class PngView:
    """A PNG picture for the notebook (``_repr_png_``)."""

    def __init__(self, data: bytes, text: str) -> None:
        self.data = data
        self.text = text

    def _repr_png_(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return self.text


# -- scheduling --------------------------------------------------------------------------------


def kernel_scheduler() -> abc.SchedulerBase:
    """The scheduler redraws run on: the running asyncio loop (a Jupyter kernel's), else timer threads.

    Drawing from the kernel's own loop keeps display output with the kernel, and the thread-safe
    variant lets the connection's I/O thread hand work over to it.
    """
    import asyncio

    from reactivex.scheduler import TimeoutScheduler
    from reactivex.scheduler.eventloop import AsyncIOThreadSafeScheduler

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return TimeoutScheduler.singleton()
    return AsyncIOThreadSafeScheduler(loop)


def throttle_latest(interval: float,
                    scheduler: abc.SchedulerBase) -> Callable[[Observable[_T]], Observable[_T]]:
    """Emit on ``scheduler`` the latest value at most once per ``interval`` seconds, never losing the last.

    The first value after a quiet spell goes out at once, later ones wait for the window to end;
    a steady stream is still drawn every ``interval`` (``throttle_with_timeout`` would wait for a
    pause that never comes) and no timer runs while nothing changes (``sample`` ticks forever).
    Timers are only ever created from the source's thread, never cancelled there: cancelling an
    ``AsyncIOThreadSafeScheduler`` action from a thread that runs another asyncio loop (the
    connection's I/O thread does) blocks until the target loop is free, so a notebook cell blocked
    in ``Request.result()`` would deadlock with it.

    ::

        source:  -a-b-c--------d-|
        result:  -a----c-------d-|     (interval: 5 ticks)
    """

    def _throttle_latest(source: Observable[_T]) -> Observable[_T]:
        def subscribe(observer: abc.ObserverBase[_T],
                      _: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            lock = threading.Lock()
            latest: list[_T] = []  # [] or [value]: a value waiting for its turn
            ended: list[Exception | None] = []  # [error or None] once the source stopped
            state = {"window": False, "finished": False}  # a window is open; the end was delivered
            timers: list[abc.DisposableBase] = []

            def keep(timer: abc.DisposableBase) -> None:
                with lock:
                    timers[:] = [timer]  # the previous one already ran: nothing to cancel

            def emit(_s: abc.SchedulerBase, _st: Any = None) -> None:
                with lock:
                    if state["finished"]:
                        return
                    value, stopped = latest[:], ended[:]
                    latest.clear()
                    state["finished"] = bool(stopped)
                    state["window"] = bool(value) and not stopped
                if value:
                    observer.on_next(value[0])
                if stopped:
                    if stopped[0] is None:
                        observer.on_completed()
                    else:
                        observer.on_error(stopped[0])
                elif value:
                    keep(scheduler.schedule_relative(interval, emit))

            def on_next(value: _T) -> None:
                with lock:
                    latest[:] = [value]
                    if state["window"]:
                        return
                    state["window"] = True
                keep(scheduler.schedule(emit))

            def on_stop(error: Exception | None) -> None:
                with lock:
                    ended[:] = [error]
                    if latest:
                        return  # the pending emission delivers the last value, then the end
                keep(scheduler.schedule(emit))

            subscription = source.subscribe(on_next, on_stop, lambda: on_stop(None))

            def dispose() -> None:
                subscription.dispose()
                with lock:
                    state["finished"] = True
                    pending = timers[:]
                    timers.clear()
                for timer in pending:
                    timer.dispose()

            return Disposable(dispose)

        return Observable(subscribe)

    return _throttle_latest


# -- live views --------------------------------------------------------------------------------


class LiveView:
    """A display that redraws itself from a stream; ``dispose()`` (or ``with``) stops the redraws.

    ``renders`` counts redraws, ``last`` is the latest object shown, ``error`` the error that ended
    the stream (shown in place of the output, never raised into the kernel).
    """

    def __init__(self, name: str, handle: DisplayHandle, first: Any,
                 redraw: Callable[[], Any] | None = None) -> None:
        self.name = name
        self.handle = handle
        self.last: Any = first
        self.renders = 1
        self.error: Exception | None = None
        self._redraw = redraw
        self._subscription: abc.DisposableBase = Disposable()
        self._changed = threading.Condition()

    def _start(self, updates: Observable[Any]) -> LiveView:
        self._subscription = updates.subscribe(self._show, self._fail)
        return self

    def _show(self, obj: Any) -> None:
        # Redraw outside any captured context: ipykernel tags output with the request of the
        # context it runs in, and a redraw scheduled from the I/O thread would carry the cell that
        # started the connection long ago. An empty context gets the current request, which every
        # front end (and nbclient) applies to the display id wherever it is.
        contextvars.Context().run(self.handle.update, obj)
        with self._changed:
            self.last = obj
            self.renders += 1
            self._changed.notify_all()

    def _fail(self, error: Exception) -> None:
        text = f"{self.name} stopped: {error}"
        with self._changed:
            self.error = error
            self._changed.notify_all()
        self.handle.update(HtmlView(f"<pre>{html.escape(text)}</pre>", text))

    def wait_until(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Block until the shown object satisfies ``predicate`` (scripts and tests; not on the loop)."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.last), timeout):
                raise TimeoutError(f"{self.name}: not shown within {timeout} s")
            return self.last

    def refresh(self) -> None:
        """Draw the latest rows now, without waiting for the redraw interval."""
        if self._redraw is not None and self.error is None:
            self._show(self._redraw())

    def dispose(self) -> None:
        """Stop following the stream, drawing the latest rows one last time (they stay on the page).

        The final drawing also lands in notebooks run headless, which keep only output sent while
        some cell runs, and it includes a change that was still waiting for its redraw interval.
        """
        self._subscription.dispose()
        self.refresh()

    close = dispose

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.dispose()

    def __repr__(self) -> str:
        state = "failed" if self.error is not None else f"{self.renders} renders"
        return f"<LiveView {self.name}: {state}>"


def _snapshots(source: Any, table: str | None) -> tuple[str, Observable[Sequence[Any]], Sequence[Any]]:
    """(name, snapshot stream, current rows) of a Connection + table name, a LiveTable or a stream."""
    if hasattr(source, "table") and callable(source.table) and table is not None:
        source = source.table(table)  # a Connection: its shared live table
    if hasattr(source, "snapshots") and hasattr(source, "rows"):
        rows: Sequence[Any] = source.rows()
        return str(getattr(source, "table", table or "rows")), source.snapshots, rows
    if isinstance(source, Observable):
        return table or "rows", source, ()
    raise TypeError("source: a Connection (with a table name), a LiveTable or an Observable of row "
                    f"sequences, not {type(source).__name__}")


def _sorted(rows: Iterable[Any], sort_by: str | Callable[[Any], Any] | None) -> list[Any]:
    if sort_by is None:
        return list(rows)
    key: Callable[[Any], Any] = sort_by if callable(sort_by) else (
        lambda row: dict(row_items(row)).get(sort_by))
    return sorted(rows, key=key)


def rows_html(rows: Sequence[Any], columns: Sequence[str] | None = None, *, title: str = "",
              max_rows: int = 50) -> str:
    """Rows as an HTML table (cells escaped, identities shortened), at most ``max_rows`` of them."""
    names = list(columns) if columns is not None else column_names(rows)
    shown = rows[:max_rows]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(dict(row_items(row)).get(name)))}</td>" for name in names)
        + "</tr>"
        for row in shown
    )
    count = len(rows)
    more = f", showing {len(shown)}" if len(shown) < count else ""
    caption = f"{html.escape(title)} " if title else ""
    return (f"<table><caption>{caption}({count} row{'' if count == 1 else 's'}{more})</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def live_table(source: Any, table: str | None = None, *, columns: Sequence[str] | None = None,
               sort_by: str | Callable[[Any], Any] | None = None, max_rows: int = 50,
               title: str | None = None, interval: float = 0.25,
               scheduler: abc.SchedulerBase | None = None,
               display: DisplayFactory | None = None) -> LiveView:
    """Show a table that redraws itself as rows change, at most once per ``interval`` seconds.

    Args:
        source: a ``Connection`` (with ``table``), a ``LiveTable``, or an Observable of row tuples.
        table: the table name when ``source`` is a connection.
        columns: columns to show, in order (default: all).
        sort_by: a column name or key function (default: the cache's order).
        max_rows: rows drawn at most (the caption still counts them all).
        title: caption text (default: the table name).
        interval: least seconds between two redraws.
        scheduler: where redraws run (default: ``kernel_scheduler()``).
        display: shows the first drawing and returns its handle (default: IPython's display).

    Returns:
        The ``LiveView``; keep it to ``dispose()`` it.
    """
    name, snapshots, current = _snapshots(source, table)
    caption = name if title is None else title

    def draw(rows: Sequence[Any]) -> HtmlView:
        ordered = _sorted(rows, sort_by)
        return HtmlView(rows_html(ordered, columns, title=caption, max_rows=max_rows),
                        f"{caption}\n{text_table(ordered[:max_rows], columns)}")

    latest = [current]  # the newest rows, for refresh(); redraws may lag behind them

    def keep(rows: Sequence[Any]) -> None:
        latest[0] = rows

    first = draw(current)
    view = LiveView(f"live_table({name})", (display or _ipython_display)(first), first,
                    redraw=lambda: draw(latest[0]))
    return view._start(snapshots.pipe(
        ops.do_action(keep),
        throttle_latest(interval, scheduler or kernel_scheduler()),
        ops.map(draw),
    ))


@dataclasses.dataclass
class _History:
    """Values over time per label, as recorded from each snapshot (thread-safe)."""

    start: float
    window: int | None
    series: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    present: set[str] = dataclasses.field(default_factory=set)

    def record(self, at: float, values: Mapping[str, float]) -> None:
        """Add a point where a label's value changed (or first appears)."""
        with self.lock:
            self.present = set(values)
            for label, value in values.items():
                points = self.series.setdefault(label, [])
                if points and points[-1][1] == value:
                    continue
                points.append((at - self.start, value))
                if self.window is not None and len(points) > self.window:
                    del points[: len(points) - self.window]

    def copy(self, now: float) -> dict[str, list[tuple[float, float]]]:
        """Every line, the ones still present drawn on to ``now`` at their current value."""
        with self.lock:
            series = {label: list(points) for label, points in self.series.items()}
            for label in self.present:
                points = series[label]
                if points and points[-1][0] < now - self.start:
                    points.append((now - self.start, points[-1][1]))
            return series


def chart_png(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str = "",
              ylabel: str = "", size: tuple[float, float] = (6.0, 3.0)) -> bytes:
    """Step lines of values over time as PNG bytes (matplotlib's Agg canvas, no pyplot state)."""
    figure_mod = _require("matplotlib.figure", "live_chart")
    fig = figure_mod.Figure(figsize=size, dpi=80)
    ax = fig.add_subplot()
    for label in sorted(series):
        points = series[label]
        if points:
            xs = [t for t, _ in points]
            ys = [v for _, v in points]
            ax.step(xs, ys, where="post", label=label, marker="o", markersize=3)
    ax.set_xlabel("seconds")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if series:
        ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data: bytes = buffer.getvalue()
    return data


def live_chart(source: Any, table: str | None = None, *, value: Callable[[Any], float],
               label: Callable[[Any], Any] = lambda row: "value", title: str | None = None,
               ylabel: str = "", window: int | None = 500, interval: float = 0.5,
               clock: Callable[[], float] = time.monotonic,
               scheduler: abc.SchedulerBase | None = None,
               display: DisplayFactory | None = None) -> LiveView:
    """Show a picture of ``value(row)`` over time, one line per ``label(row)``, redrawn as rows change.

    Every snapshot is recorded when it arrives (so no change is missed); the picture is redrawn at
    most once per ``interval`` seconds. Needs matplotlib.

    Args:
        source: a ``Connection`` (with ``table``), a ``LiveTable``, or an Observable of row tuples.
        table: the table name when ``source`` is a connection.
        value: the number to plot for a row (e.g. ``lambda p: p.score``).
        label: which line a row belongs to (e.g. ``lambda p: p.name``).
        title, ylabel: picture texts.
        window: points kept per line (None: all).
        interval: least seconds between two redraws.
        clock: seconds for the x axis (tests pass a virtual one).
        scheduler: where redraws run (default: ``kernel_scheduler()``).
        display: shows the first picture and returns its handle (default: IPython's display).
    """
    _require("matplotlib.figure", "live_chart")
    name, snapshots, current = _snapshots(source, table)
    caption = f"{name} over time" if title is None else title
    history = _History(clock(), window)

    def record(rows: Sequence[Any]) -> None:
        history.record(clock(), {str(label(row)): float(value(row)) for row in rows})

    def draw(_: object = None) -> PngView:
        series = history.copy(clock())
        return PngView(chart_png(series, title=caption, ylabel=ylabel),
                       f"<{caption}: {', '.join(sorted(series)) or 'no lines yet'}>")

    record(current)
    first = draw()
    view = LiveView(f"live_chart({name})", (display or _ipython_display)(first), first, redraw=draw)
    return view._start(snapshots.pipe(
        ops.do_action(record),
        throttle_latest(interval, scheduler or kernel_scheduler()),
        ops.map(draw),
    ))


# -- DataFrames --------------------------------------------------------------------------------


def _frame_value(value: Any) -> Any:
    """A cell value pandas handles well: datetimes for timestamps, hex text for identities."""
    if isinstance(value, Timestamp):
        try:
            return value.to_datetime()
        except OverflowError:
            return value.micros_since_epoch
    if isinstance(value, Identity | ConnectionId):
        return value.hex
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _frame_value(v) for name, v in row_items(value)}
    return value


def to_dataframe(rows: Any, columns: Sequence[str] | None = None) -> Any:
    """A pandas ``DataFrame`` of rows: a ``OneOffResult``, a ``LiveTable`` or any sequence of rows.

    Timestamps become timezone-aware datetimes and identities hex strings, so the frame sorts,
    filters and plots as users expect. Needs pandas.

    Raises:
        ImportError: pandas is not installed (the message says how to install it).
    """
    pandas = _require("pandas", "to_dataframe")
    if hasattr(rows, "rows"):
        rows = rows.rows() if callable(rows.rows) else rows.rows
    rows = list(rows)
    names = list(columns) if columns is not None else column_names(rows)
    records = [{name: _frame_value(v) for name, v in row_items(row) if name in names} for row in rows]
    return pandas.DataFrame.from_records(records, columns=names)
