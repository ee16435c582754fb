"""Pickling and copying rows of the classes made at run time from a schema.

Those classes live in no module a pickle could import them from, so a row pickles as its class's
name, field names and a process-unique class id, with its values. Unpickled in the same process (or
a forked child) it gets the very same class back; elsewhere, a frozen dataclass of that name and
those fields, made once per shape, so rows can cross a process pool or a cache.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import weakref
from typing import Any

__all__ = ["rebuild_row", "register_row_class"]

_PROCESS = os.urandom(8).hex()  # a class id from another process never names a class of ours
_ids = itertools.count()
_by_id: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()
_by_shape: dict[tuple[str, tuple[str, ...]], type] = {}  # classes made here to unpickle into
_ID = "_rx_class_id_"


def register_row_class(cls: type) -> None:
    """Make rows of a run-time dataclass picklable and copyable (``copy``/``pickle`` use ``__reduce__``)."""
    class_id = f"{_PROCESS}-{next(_ids)}"
    setattr(cls, _ID, class_id)
    cls.__reduce__ = _reduce  # type: ignore[assignment,method-assign]
    _by_id[class_id] = cls


def _reduce(row: Any) -> tuple[Any, ...]:
    cls = type(row)
    names = tuple(f.name for f in dataclasses.fields(cls))
    return rebuild_row, (cls.__name__, names, getattr(cls, _ID), tuple(getattr(row, n) for n in names))


def rebuild_row(name: str, fields: tuple[str, ...], class_id: str, values: tuple[Any, ...]) -> Any:
    """A pickled row again: of its own class when this process has it, else of one of that shape."""
    cls = _by_id.get(class_id)
    if cls is None:
        cls = _by_shape.get((name, fields))
        if cls is None:
            cls = dataclasses.make_dataclass(name, fields, frozen=True, slots=True)
            cls.__module__ = "rx_spacetimedb.rows"
            register_row_class(cls)
            _by_shape[name, fields] = cls
        _by_id[class_id] = cls
    return cls(*values)
