"""The pytest plugin's fixtures: a fresh running emulator per test, module overridable."""

from __future__ import annotations

import pytest

from rx_spacetimedb.protocol.types import STRING
from rx_spacetimedb.testing import Column, Module, SpacetimeDBEmulator
from rx_spacetimedb.testing.pytest_plugin import spacetimedb, spacetimedb_module

__all__ = ["spacetimedb", "spacetimedb_module"]  # the fixtures, imported so pytest finds them


def test_default_fixture_serves_the_example_module(spacetimedb: SpacetimeDBEmulator) -> None:
    assert spacetimedb.port > 0 and "Player" in spacetimedb.module.tables
    spacetimedb.call_reducer("CreatePlayer", ["fixture"])
    assert [p.name for p in spacetimedb.table_rows("Player")] == ["fixture"]


class TestOwnModule:
    """Overriding ``spacetimedb_module`` serves another module."""

    @pytest.fixture
    def spacetimedb_module(self) -> Module:
        module = Module("mine")
        module.table("Thing", [Column("name", STRING)])
        return module

    def test_it_is_served(self, spacetimedb: SpacetimeDBEmulator) -> None:
        assert list(spacetimedb.module.tables) == ["Thing"]
