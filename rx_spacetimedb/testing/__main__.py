"""``python -m rx_spacetimedb.testing serve [--port N] [--database NAME]``: run the example module.

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


async def _serve(port: int, database: str, host: str) -> None:
    """Serve until interrupted."""
    async with SpacetimeDBEmulator(example_module(), database=database, host=host, port=port) as server:
        print(
            f"SpacetimeDB emulator: database {server.database!r} at {server.url} "
            f"(subscribe: {server.subscribe_url})",
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
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.database, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
