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

Public API, in short:

* ``SpacetimeDBEmulator(module, database=, port=, ping_interval=, idle_timeout=, clock=, owner=,
  hide_reducer_details=, queue_limit=, data_dir=, ...)``: ``start()``/``stop()``/``restart()``, ``with``,
  ``async with``; ``recovery`` (what ``data_dir`` held);
  ``url``, ``http_url``, ``subscribe_url``, ``host``, ``port``, ``database``, ``identity``.
* Direct access: ``call_reducer``, ``with_tx``, ``table_rows``, ``sql``, ``mint_token``,
  ``wait_for_clients`` / ``wait_for_clients_async``, ``clients``, ``history`` (``EmulatedClient``:
  ``identity``, ``connection_id``, ``received``, ``sent``, ``messages()``).
* Faults: ``drop_all``, ``drop_client``, ``close_all``, ``close_client``, ``refuse_connections``,
  ``set_delay``, ``inject``, ``pause``/``resume``, ``break_subscriptions``.
* Modules: ``Module`` (``table``, ``add_type``, ``reducer``, ``procedure``, ``init``,
  ``client_connected``, ``client_disconnected``), ``Column``, ``ReducerContext``, ``ProcedureContext``,
  ``ReducerError``, ``OutOfEnergyError``; ``example_module()`` (the spec's module, ``minimal=True`` for
  exactly the spec's schema).
* ``python -m rx_spacetimedb.testing serve [--port N] [--data-dir DIR]`` runs the example module.
* pytest: ``pytest_plugins = ["rx_spacetimedb.testing.pytest_plugin"]`` gives the ``spacetimedb`` fixture.

See ``server.py`` (and the private parts it lists) for the emulator, ``_socket.py`` for fault
injection, ``module.py`` for declaring modules.
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
