from __future__ import annotations

import pytest

from rx_spacetimedb.protocol import ModuleSchema
from tests.protocol._examples import example


@pytest.fixture(scope="session")
def schema() -> ModuleSchema:
    """The example module (Player, Location, CreatePlayer, SetScore, FindPlayer)."""
    return ModuleSchema.from_json(example("http-schema-v9-response.json"))
