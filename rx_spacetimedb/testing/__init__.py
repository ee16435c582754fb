"""An embedded, protocol-faithful SpacetimeDB emulator for tests, demos and users' own tests.

``SpacetimeDBEmulator`` serves a ``Module`` (tables, reducers, procedures written in Python) over
``v1.json.spacetimedb`` on loopback, exactly as spec ``v1-json-protocol.md`` describes the real server::

    from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module

    with SpacetimeDBEmulator(example_module()) as server:    # sync: background thread
        ... connect to server.url / server.database ...
        server.call_reducer("CreatePlayer", ["alice"])       # a system transaction
        assert server.table_rows("Player")[0].name == "alice"
        server.drop_all()                                    # fault injection

    async with SpacetimeDBEmulator() as server:              # async: on the running loop
        ...

See ``server.py`` for fault injection and inspection, ``module.py`` for declaring modules.
"""

from rx_spacetimedb.testing.auth import TokenError, TokenIssuer, identity_from_claims
from rx_spacetimedb.testing.example import example_module
from rx_spacetimedb.testing.module import (
    Column,
    Database,
    DbView,
    Module,
    OutOfEnergyError,
    ProcedureContext,
    ReducerContext,
    ReducerError,
    TableHandle,
    TableSchema,
)
from rx_spacetimedb.testing.server import SUBPROTOCOL, EmulatedClient, SpacetimeDBEmulator
from rx_spacetimedb.testing.sql import Query, SqlError, compile_query

__all__ = [
    "SUBPROTOCOL",
    "Column",
    "Database",
    "DbView",
    "EmulatedClient",
    "Module",
    "OutOfEnergyError",
    "ProcedureContext",
    "Query",
    "ReducerContext",
    "ReducerError",
    "SpacetimeDBEmulator",
    "SqlError",
    "TableHandle",
    "TableSchema",
    "TokenError",
    "TokenIssuer",
    "compile_query",
    "example_module",
    "identity_from_claims",
]
