"""Small typed views of a message stream: subscription errors, identity tokens, one-off answers.

Each is ``of_type`` plus, where useful, a filter on an id, so users need not know the classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable
from reactivex import operators as ops

from rx_spacetimedb.operators._of_type import of_type
from rx_spacetimedb.protocol.messages import IdentityToken, OneOffQueryResponse, SubscriptionError

__all__ = ["identity_tokens", "one_off_results", "subscription_errors"]


def subscription_errors(
    *, fatal_only: bool = False
) -> Callable[[Observable[Any]], Observable[SubscriptionError]]:
    """The ``SubscriptionError`` messages of a stream.

    ``fatal_only`` keeps the ones without ``request_id``: a query failed during a transaction and the
    server ended every subscription of the connection (spec §7.3).

    ::

        source:                 --I--E1--T--E0--|      (E0: request_id is None)
        subscription_errors():  -----E1-----E0--|
        ...(fatal_only=True):   ------------E0--|
    """
    pick = of_type(SubscriptionError)
    if not fatal_only:
        return pick

    def fatal(error: SubscriptionError) -> bool:
        return error.request_id is None

    def _fatal(source: Observable[Any]) -> Observable[SubscriptionError]:
        return pick(source).pipe(ops.filter(fatal))

    return _fatal


def identity_tokens() -> Callable[[Observable[Any]], Observable[IdentityToken]]:
    """The ``IdentityToken`` messages: one per (re)connection, the first message of each.

    ::

        source:             --I--T--T--I'--T--|
        identity_tokens():  --I--------I'-----|
    """
    return of_type(IdentityToken)


def one_off_results(
    message_id: bytes | None = None,
) -> Callable[[Observable[Any]], Observable[OneOffQueryResponse]]:
    """The ``OneOffQueryResponse`` messages, optionally only the answer to one ``message_id``.

    The id is compared as bytes, because the server always answers in lowercase hex (spec §5.7).

    ::

        source:                    --I--R(a)--T--R(b)--|
        one_off_results():         -----R(a)-----R(b)--|
        one_off_results(b"b"):     --------------R(b)--|
    """
    pick = of_type(OneOffQueryResponse)
    if message_id is None:
        return pick
    wanted = bytes(message_id)

    def answers(response: OneOffQueryResponse) -> bool:
        return response.message_id == wanted

    def _one(source: Observable[Any]) -> Observable[OneOffQueryResponse]:
        return pick(source).pipe(ops.filter(answers))

    return _one
