"""A Qt (PySide6) window listing SpacetimeDB players live, with buttons that call reducers.

Run it with no setup (it starts the embedded emulator with the example module)::

    pip install 'rx_spacetimedb[qt]'
    python examples/qt_players.py
    python examples/qt_players.py --host localhost --port 3000 --database quickstart

The connection emits on its own I/O thread; Qt widgets may only be touched on the GUI thread, so
every stream the window shows goes through ``observe_on(QtThreadScheduler())``. (reactivex's own
``QtScheduler`` would drop that work: it starts its timers on the I/O thread, which has no Qt loop.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable

import rx_spacetimedb
from rx_spacetimedb.qt import QtThreadScheduler

TABLE = "Player"
QUERY = "SELECT * FROM Player"
COLUMNS = ("id", "name", "score")


def player_rows(conn: rx_spacetimedb.Connection) -> Observable[tuple[Any, ...]]:
    """The Player rows now, then after every change (emitted on the connection's I/O thread).

    ``conn.table`` needs the schema, which the connection has fetched by the time it is connected,
    so the live table is opened on the I/O thread then, never blocking the GUI thread.
    """
    return conn.identity.pipe(
        ops.take(1),
        ops.flat_map(lambda _: conn.table(TABLE).snapshots),
    )


class PlayersWindow(QWidget):
    """A live table of players, a name field and buttons calling ``CreatePlayer``/``SetScore``.

    Args:
        conn: a connection; the window subscribes to ``Player`` on it and calls its reducers.
        scheduler: where emissions are moved to (default: a new ``QtThreadScheduler``).
    """

    def __init__(self, conn: rx_spacetimedb.Connection, scheduler: QtThreadScheduler | None = None) -> None:
        super().__init__()
        self.conn = conn
        self.scheduler = scheduler or QtThreadScheduler()
        self._added = 0
        self.setWindowTitle(f"Players: {conn.database}")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name")
        self.add_button = QPushButton("Add player")
        self.add_button.clicked.connect(self.add_player)
        self.score_button = QPushButton("Score +1")
        self.score_button.clicked.connect(self.bump_score)
        self.status = QLabel("connecting…")
        bar = QHBoxLayout()
        for widget in (self.name_edit, self.add_button, self.score_button):
            bar.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(bar)
        layout.addWidget(self.status)

        on_gui = ops.observe_on(self.scheduler)
        self._subscriptions = CompositeDisposable(
            player_rows(conn).pipe(on_gui).subscribe(self.show_rows, self._show_error),
            conn.states.pipe(on_gui).subscribe(self._show_state),
        )
        # After subscribing to the messages, so the snapshot it brings cannot be missed.
        conn.subscribe_multi([QUERY])

    # -- what the window shows (GUI thread only) ------------------------------------------

    def show_rows(self, rows: Sequence[Any]) -> None:
        """Make the table show ``rows`` (a few hundred rows: redrawing them all is simplest)."""
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, value in enumerate((row.id, row.name, row.score)):
                self.table.setItem(index, column, QTableWidgetItem(str(value)))

    def shown_rows(self) -> list[tuple[str, ...]]:
        """The rows the table shows, as the strings on screen (for tests and scripts)."""
        return [
            tuple(self._cell(index, column) for column in range(len(COLUMNS)))
            for index in range(self.table.rowCount())
        ]

    def _cell(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def _show_state(self, state: rx_spacetimedb.ConnectionState) -> None:
        text: str = state.status
        if state.error is not None:
            text += f": {state.error}"
        self.status.setText(text)

    def _show_error(self, error: Exception) -> None:
        self.status.setText(f"error: {error}")

    # -- buttons -----------------------------------------------------------------------------

    def add_player(self) -> None:
        """Call ``CreatePlayer`` with the field's name (or a made-up one); the row arrives by itself."""
        name = self.name_edit.text().strip()
        if not name:
            self._added += 1
            name = f"player-{self._added}"
        self.name_edit.clear()
        self._call("CreatePlayer", [name])

    def bump_score(self) -> None:
        """Call ``SetScore`` to add one to the selected player's score (or the first player's)."""
        selected = self.table.selectionModel().selectedRows()
        index = selected[0].row() if selected else 0
        if index >= self.table.rowCount():
            self.status.setText("no player to score")
            return
        self._call("SetScore", [int(self._cell(index, 0)), int(self._cell(index, 2)) + 1])

    def _call(self, reducer: str, args: list[Any]) -> None:
        """Call a reducer without blocking the GUI thread; a failure shows in the status line."""
        try:
            request = self.conn.call_reducer(reducer, args)
        except (rx_spacetimedb.SpacetimeDBError, ValueError, TypeError) as err:
            self.status.setText(f"{reducer} failed: {err}")
            return
        self.status.setText(f"{reducer}{tuple(args)} sent")

        def failed(error: Exception) -> None:
            self.status.setText(f"{reducer} failed: {error}")

        self._subscriptions.add(request.outcome.pipe(ops.observe_on(self.scheduler)).subscribe(
            on_error=failed))

    # -- shutdown ----------------------------------------------------------------------------

    def dispose(self) -> None:
        """Stop updating the window."""
        self._subscriptions.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, start the emulator if no host is given, and run the window."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", help="server host or URL (default: start the embedded emulator)")
    parser.add_argument("--port", type=int, default=3000, help="server port (default: 3000)")
    parser.add_argument("--database", default="quickstart", help="database name (default: quickstart)")
    args, qt_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)

    server = None
    host, port = args.host, args.port
    if host is None:
        from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module

        server = SpacetimeDBEmulator(example_module(), database=args.database).start()
        host, port = server.host, server.port
        print(f"emulator serving {args.database!r} at {server.url}")
    app = QApplication([sys.argv[0], *qt_args])
    conn = rx_spacetimedb.connect(host, args.database, port=port)
    try:
        window = PlayersWindow(conn)
        window.resize(420, 360)
        window.show()
        app.exec()
        window.dispose()
    finally:
        conn.close()  # fine on the GUI thread: the scheduler never makes the I/O thread wait for Qt
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
