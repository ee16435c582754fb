"""``python -m rx_spacetimedb.testing serve [--port N] [--database NAME] [--data-dir DIR]``.

Runs the example module; with ``--data-dir`` its data and signing key survive restarts.
Lets people try a client (or the README demo) against a local emulator without writing code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from rx_spacetimedb.testing.example import example_module
from rx_spacetimedb.testing.server import SpacetimeDBEmulator


async def _serve(port: int, database: str, host: str, data_dir: str | None) -> None:
    """Serve until interrupted."""
    emulator = SpacetimeDBEmulator(
        example_module(), database=database, host=host, port=port, data_dir=data_dir
    )
    async with emulator as server:
        recovery = server.recovery
        if recovery is None:
            kept = "in memory (nothing is kept after exit; --data-dir DIR keeps it)"
        elif recovery.new:
            kept = f"new data dir {recovery.path}"
        else:
            kept = f"data dir {recovery.path}: {recovery.commits} commits replayed"
            if recovery.ignored_bytes:
                kept += f", a torn last record ({recovery.ignored_bytes} bytes) ignored"
        print(
            f"SpacetimeDB emulator: database {server.database!r} at {server.url} "
            f"(subscribe: {server.subscribe_url})\nData: {kept}",
            flush=True,
        )
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command.

    Lets people try a client against a local database without writing code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m rx_spacetimedb.testing",
        description="Embedded SpacetimeDB emulator (v1.json.spacetimedb).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the example module")
    serve.add_argument("--port", type=int, default=3000, help="port to listen on (default 3000, 0: any)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--database", default="quickstart", help="database name (default quickstart)")
    serve.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep the database and the signing key in DIR across restarts (default: in memory)",
    )
    args = parser.parse_args(argv)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.port, args.database, args.host, args.data_dir))
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
