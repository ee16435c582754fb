"""``conn.subscribe_all()`` against the emulator: every public table's rows reach the cache."""

from __future__ import annotations

import pytest

import rx_spacetimedb
from rx_spacetimedb.cache import UniqueIndex
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol import ModuleSchema
from rx_spacetimedb.testing import SpacetimeDBEmulator


def test_subscribe_all_brings_every_public_table(server: SpacetimeDBEmulator) -> None:
    server.call_reducer("CreatePlayer", ["alice"])
    server.call_reducer("AddNote", ["hello"])
    server.call_reducer("Deposit", ["other", 1])
    with rx_spacetimedb.connect(server.url, server.database) as conn:
        applied = conn.subscribe_all().result(10)
        assert len(applied.update.tables) == 3
        assert conn.cache.tables() == {"Player": 1, "Note": 1, "Account": 1}
        conn.call_reducer("Deposit", ["rich", 2**100]).result(10)
        account = UniqueIndex(conn.cache, "Account", "nickname").find("rich")
        assert account is not None and account.balance == 2**100
        conn.call_reducer("Deposit", ["richer", 1]).result(10)  # kept current as rows change
        assert UniqueIndex(conn.cache, "Account", "nickname").find("rich") is None
        assert UniqueIndex(conn.cache, "Account", "nickname").find("richer") is not None


def test_subscribe_all_refuses_a_module_without_public_tables(server: SpacetimeDBEmulator) -> None:
    data = server.module.build().to_json()
    for table in data["tables"]:
        table["table_access"] = {"Private": []}
    schema = ModuleSchema.from_json(data)
    with rx_spacetimedb.connect(server.url, server.database, schema=schema) as conn, \
            pytest.raises(SchemaError, match="no public table"):
        conn.subscribe_all()
