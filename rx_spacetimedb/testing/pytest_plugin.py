"""pytest fixtures to test an app against the emulator: ``spacetimedb`` and ``spacetimedb_module``.

Enable them with ``pytest_plugins = ["rx_spacetimedb.testing.pytest_plugin"]`` in a ``conftest.py``;
override ``spacetimedb_module`` there to serve your own module instead of the example one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rx_spacetimedb.testing.example import example_module
from rx_spacetimedb.testing.module import Module
from rx_spacetimedb.testing.server import SpacetimeDBEmulator

__all__ = ["spacetimedb", "spacetimedb_module"]


@pytest.fixture
def spacetimedb_module() -> Module:
    """The module the ``spacetimedb`` fixture serves (the example module unless overridden).

    Each test gets a fresh module, so declarations made by one test never leak into another.
    """
    return example_module()


@pytest.fixture
def spacetimedb(spacetimedb_module: Module) -> Iterator[SpacetimeDBEmulator]:
    """A running emulator (background thread, ephemeral port), stopped after the test.

    Connect your app to ``spacetimedb.url`` and ``spacetimedb.database``; every test starts empty.
    """
    with SpacetimeDBEmulator(spacetimedb_module) as server:
        yield server
