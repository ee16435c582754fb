"""A Tk window listing SpacetimeDB players live, with buttons that call reducers.

Run it with no setup (it starts the embedded emulator with the example module)::

    python examples/tk_players.py
    python examples/tk_players.py --host localhost --port 3000 --database quickstart

The connection emits on its own I/O thread; Tk widgets may only be touched on the Tk thread, so
every stream the window shows goes through ``observe_on(TkinterScheduler(root))`` first.
"""

from __future__ import annotations

import argparse
import logging
import threading
import tkinter as tk
from collections.abc import Callable, Sequence
from tkinter import ttk
from typing import Any

from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.scheduler.mainloop import TkinterScheduler

import rx_spacetimedb

TABLE = "Player"
QUERY = "SELECT * FROM Player"
COLUMNS = ("id", "name", "score")

_log = logging.getLogger("tk_players")


def player_rows(conn: rx_spacetimedb.Connection) -> Observable[tuple[Any, ...]]:
    """The Player rows now, then after every change (emitted on the connection's I/O thread).

    ``conn.table`` needs the schema, which the connection has fetched by the time it is connected,
    so the live table is opened on the I/O thread then, never blocking the GUI thread.
    """
    return conn.identity.pipe(
        ops.take(1),
        ops.flat_map(lambda _: conn.table(TABLE).snapshots),
    )


class PlayersApp:
    """The window's content: a live ``ttk.Treeview`` of players, a name entry and reducer buttons.

    Args:
        root: the Tk root (or any container) to build the widgets in.
        conn: a connection; the app subscribes to ``Player`` on it and calls its reducers.
    """

    def __init__(self, root: tk.Tk, conn: rx_spacetimedb.Connection) -> None:
        self.root = root
        self.conn = conn
        self._added = 0
        self.scheduler = TkinterScheduler(root)
        root.title(f"Players: {conn.database}")

        self.tree = ttk.Treeview(root, columns=COLUMNS, show="headings", height=12)
        for column in COLUMNS:
            self.tree.heading(column, text=column)
        self.tree.pack(fill="both", expand=True, padx=6, pady=6)
        bar = ttk.Frame(root)
        bar.pack(fill="x", padx=6)
        self.name_entry = ttk.Entry(bar, width=20)
        self.name_entry.pack(side="left")
        self.add_button = ttk.Button(bar, text="Add player", command=self.add_player)
        self.add_button.pack(side="left", padx=4)
        self.score_button = ttk.Button(bar, text="Score +1", command=self.bump_score)
        self.score_button.pack(side="left")
        # Plain widgets, no tk.StringVar: a Variable freed by the garbage collector on the I/O
        # thread would call into Tk from there.
        self.status_label = ttk.Label(root, text="connecting…", anchor="w")
        self.status_label.pack(fill="x", padx=6, pady=(4, 6))

        on_tk = ops.observe_on(self.scheduler)
        self._subscriptions = CompositeDisposable(
            player_rows(conn).pipe(on_tk).subscribe(self.show_rows, self._show_error),
            conn.states.pipe(on_tk).subscribe(self._show_state),
        )
        # After subscribing to the messages, so the snapshot it brings cannot be missed.
        conn.subscribe_multi([QUERY])

    # -- what the window shows (Tk thread only) -------------------------------------------

    def show_rows(self, rows: Sequence[Any]) -> None:
        """Make the tree show ``rows``: update kept rows in place, add new ones, drop the rest."""
        wanted = {str(row.id): (row.id, row.name, row.score) for row in rows}
        for iid in self.tree.get_children():
            if iid not in wanted:
                self.tree.delete(iid)
        for index, (iid, values) in enumerate(wanted.items()):
            if self.tree.exists(iid):
                self.tree.item(iid, values=values)
                self.tree.move(iid, "", index)
            else:
                self.tree.insert("", index, iid=iid, values=values)

    def shown_rows(self) -> list[tuple[str, ...]]:
        """The rows the tree shows, as the strings on screen (for tests and scripts)."""
        return [tuple(str(v) for v in self.tree.item(iid, "values")) for iid in self.tree.get_children()]

    @property
    def status(self) -> str:
        """The status line's text."""
        return str(self.status_label.cget("text"))

    def set_status(self, text: str) -> None:
        """Show ``text`` in the status line."""
        self.status_label.configure(text=text)

    def _show_state(self, state: rx_spacetimedb.ConnectionState) -> None:
        text: str = state.status
        if state.error is not None:
            text += f": {state.error}"
        self.set_status(text)

    def _show_error(self, error: Exception) -> None:
        self.set_status(f"error: {error}")

    # -- buttons -----------------------------------------------------------------------------

    def add_player(self) -> None:
        """Call ``CreatePlayer`` with the entry's name (or a made-up one); the row arrives by itself."""
        name = self.name_entry.get().strip()
        if not name:
            self._added += 1
            name = f"player-{self._added}"
        self.name_entry.delete(0, "end")
        self._call("CreatePlayer", [name])

    def bump_score(self) -> None:
        """Call ``SetScore`` to add one to the selected player's score (or the first player's)."""
        selected = self.tree.selection() or self.tree.get_children()[:1]
        if not selected:
            self.set_status("no player to score")
            return
        player_id, _name, score = tuple(self.tree.item(selected[0], "values"))
        self._call("SetScore", [int(player_id), int(score) + 1])

    def _call(self, reducer: str, args: list[Any]) -> None:
        """Call a reducer without blocking the Tk thread; a failure shows in the status line."""
        try:
            request = self.conn.call_reducer(reducer, args)
        except (rx_spacetimedb.SpacetimeDBError, ValueError, TypeError) as err:
            self.set_status(f"{reducer} failed: {err}")
            return
        self.set_status(f"{reducer}{tuple(args)} sent")

        def failed(error: Exception) -> None:
            self.set_status(f"{reducer} failed: {error}")

        self._subscriptions.add(request.outcome.pipe(ops.observe_on(self.scheduler)).subscribe(
            on_error=failed))

    # -- shutdown ----------------------------------------------------------------------------

    def dispose(self) -> None:
        """Stop updating the window (no more calls from the I/O thread into Tk)."""
        self._subscriptions.dispose()


def close_then(root: tk.Misc, conn: rx_spacetimedb.Connection, then: Callable[[], None]) -> None:
    """Close ``conn`` on a helper thread while Tk keeps running, then call ``then`` on the Tk thread.

    Why: a Tk call from the I/O thread (``after``) waits until the Tk thread serves it, so closing
    the connection on the Tk thread, or after the main loop ended, could wait for the I/O thread
    while it waits for Tk.
    """
    closer = threading.Thread(target=conn.close, name="tk_players-close", daemon=True)
    closer.start()

    def poll() -> None:
        if closer.is_alive():
            root.after(10, poll)
        else:
            then()

    root.after(10, poll)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, start the emulator if no host is given, and run the window."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", help="server host or URL (default: start the embedded emulator)")
    parser.add_argument("--port", type=int, default=3000, help="server port (default: 3000)")
    parser.add_argument("--database", default="quickstart", help="database name (default: quickstart)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    server = None
    host, port = args.host, args.port
    if host is None:
        from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module

        server = SpacetimeDBEmulator(example_module(), database=args.database).start()
        host, port = server.host, server.port
        print(f"emulator serving {args.database!r} at {server.url}")
    conn = rx_spacetimedb.connect(host, args.database, port=port)
    try:
        root = tk.Tk()
        app = PlayersApp(root, conn)

        def on_close() -> None:
            app.dispose()
            close_then(root, conn, root.destroy)

        root.protocol("WM_DELETE_WINDOW", on_close)
        root.mainloop()
    finally:
        conn.close()  # idempotent: already closed when the window was closed
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
