"""The ``transactions`` operator: one emission per committed transaction, all its tables together.

Consumers that keep derived state across tables (totals, joins) must never see half a transaction;
per-table streams cannot promise that, this one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable
from reactivex import operators as ops

from rx_spacetimedb.cache import SchemaSource, TransactionDiff
from rx_spacetimedb.operators._cache_diffs import cache_diffs
from rx_spacetimedb.protocol.messages import Committed, TransactionUpdate, TransactionUpdateLight

__all__ = ["transactions"]


def _committed(diff: TransactionDiff) -> bool:
    if diff.cause != "transaction":
        return False
    message = diff.message
    if isinstance(message, TransactionUpdate):
        return isinstance(message.status, Committed)
    return isinstance(message, TransactionUpdateLight) or message is None


def transactions(
    schema: SchemaSource | None = None,
) -> Callable[[Observable[Any]], Observable[TransactionDiff]]:
    """Every committed transaction as one ``TransactionDiff`` holding each changed table's diff.

    Emits for every ``TransactionUpdate`` (Committed) and ``TransactionUpdateLight``, also when
    none of the subscribed rows changed (``bool(diff)`` is then False); failed reducers and
    subscription snapshots do not emit (see ``reducer_results`` and ``cache_diffs``).

    ::

        source:          --S--T1(Player,Score)--F--L2(Player)--|   (F: failed, L: light)
        transactions():  -----X1----------------------X2-------|   (X1 holds both tables)

    On a connection's stream it needs no argument (the connection's cache folded each message).

    Args:
        schema: the module schema (or a function returning it), for a stream with no connection.

    Returns:
        An operator function ``Observable[ServerMessage | TransactionDiff] -> Observable[TransactionDiff]``.
    """

    def _transactions(source: Observable[Any]) -> Observable[TransactionDiff]:
        return cache_diffs(schema, include_empty=True)(source).pipe(ops.filter(_committed))

    return _transactions
