"""Random rows of the example ``Player`` table, shared by the benchmarks (same seed, same rows)."""

from __future__ import annotations

import random
from typing import Any

from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.types import RefType, SumType
from rx_spacetimedb.protocol.values import Identity, Timestamp


def player_rows(schema: ModuleSchema, n: int, rng: random.Random) -> list[Any]:
    """``n`` Player rows; two in three have a location."""
    player = schema.row_class("Player")
    option = schema.row_product("Player").elements[5].type
    assert isinstance(option, SumType) and isinstance(option.variants[0].type, RefType)
    location = schema.codec.class_for(option.variants[0].type)
    return [
        player(i + 1, Identity(rng.getrandbits(256)), f"player-{i}-{rng.getrandbits(20):x}",
               rng.randrange(-5000, 5000), Timestamp(1787217300123456 + i * 1_000_003),
               location(rng.uniform(-500, 500), rng.uniform(-500, 500)) if i % 3 else None)
        for i in range(n)
    ]
