"""``python -m rx_spacetimedb`` and the ``rx-spacetimedb`` console script; the commands live in ``cli``."""

from __future__ import annotations

import sys

from rx_spacetimedb.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
