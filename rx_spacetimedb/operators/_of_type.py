"""The ``of_type`` operator: keep the messages of one class, typed as that class.

A message stream carries a union of message classes; filtering with ``isinstance`` loses the type,
so this narrows it for the type checker too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc

__all__ = ["of_type"]

_T = TypeVar("_T")


def of_type(cls: type[_T]) -> Callable[[Observable[Any]], Observable[_T]]:
    """Keep only the values that are instances of ``cls``.

    ::

        source:                      --I--T--S--T--|
        of_type(TransactionUpdate):  -----T-----T--|

    Args:
        cls: the message class to keep (subclasses count).

    Returns:
        An operator function ``Observable[Any] -> Observable[cls]``.
    """

    def _of_type(source: Observable[Any]) -> Observable[_T]:
        def subscribe(observer: abc.ObserverBase[_T],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(value: Any) -> None:
                if isinstance(value, cls):
                    observer.on_next(value)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _of_type
