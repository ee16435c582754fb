"""The public surface, pinned: adding or removing a name is a deliberate change of this file."""

from __future__ import annotations

import rx_spacetimedb
import rx_spacetimedb.operators
import rx_spacetimedb.types


def test_top_level_names() -> None:
    assert sorted(rx_spacetimedb.__all__) == sorted([
        "FULL_UPDATE", "NO_SUCCESS_NOTIFY", "AuthenticationFailed", "BadRequest", "Connection",
        "ConnectionClosed", "ConnectionClosedByUser", "ConnectionRejected", "ConnectionState",
        "CredentialStore", "DatabaseNotFound", "HandshakeError", "ModuleSchema", "OneOffResult",
        "OutOfEnergy", "ProcedureFailed", "ProtocolError", "QueryFailed", "ReducerFailed", "Request",
        "RequestAborted", "RequestError", "RequestTimeout", "SchemaError", "SpacetimeDBError",
        "SubscriptionFailed", "TransportError", "__version__", "connect", "ClientCache", "TableDiff",
        "TransactionDiff", "LiveTable", "ReducerResult", "ConnectTimeout", "CredentialsError",
        "ConnectOptions",
    ])
    for name in rx_spacetimedb.__all__:
        assert hasattr(rx_spacetimedb, name), name


def test_operator_names() -> None:
    assert sorted(rx_spacetimedb.operators.__all__) == sorted([
        "ExponentialBackoff", "RetryAttempt", "exponential_backoff", "retry_when", "LiveTable",
        "ReducerResult", "ReducerStatus", "cache_diffs", "identity_tokens", "live_table", "of_type",
        "one_off_results", "reducer_results", "subscription_errors", "table_diffs", "transactions",
        "SlowConsumer", "observe_on_bounded",
    ])


def test_seed_type_names_are_importable_from_types() -> None:
    for name in ("IdentityToken", "InitialSubscription", "SubscribeApplied", "UnsubscribeApplied",
                 "SubscriptionError", "TransactionUpdate", "OneOffQueryResponse", "TableUpdate",
                 "ReducerCallInfo", "Timestamp"):
        assert name in rx_spacetimedb.types.__all__
        assert getattr(rx_spacetimedb.types, name).__name__ == name


def test_every_error_derives_from_the_root() -> None:
    for name in rx_spacetimedb.__all__:
        value = getattr(rx_spacetimedb, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, rx_spacetimedb.SpacetimeDBError), name
