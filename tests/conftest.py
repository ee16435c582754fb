"""Shared fixtures: an embedded emulator per test and waiting helpers (no sleeps)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import settings
from reactivex import Observable

from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module

_T = TypeVar("_T")

# The property and fuzz tests draw the same examples on every run (a red CI is then a real, repeatable
# failure); HYPOTHESIS_PROFILE=explore draws new ones, with FUZZ_EXAMPLES/PROPERTY_EXAMPLES for more.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

WAIT = 10.0
"""Upper bound of every wait in the network tests; they normally finish in milliseconds."""


@pytest.fixture
def server() -> Iterator[SpacetimeDBEmulator]:
    """A fresh emulator serving the example module on an ephemeral loopback port."""
    with SpacetimeDBEmulator(example_module()) as emulator:
        yield emulator


def wait_for(source: Observable[_T], predicate: Callable[[_T], bool], timeout: float = WAIT) -> _T:
    """Block until ``source`` emits a value matching ``predicate``; return it (TimeoutError if not)."""
    found: list[_T] = []
    event = threading.Event()

    def on_next(value: _T) -> None:
        if not event.is_set() and predicate(value):
            found.append(value)
            event.set()

    subscription = source.subscribe(on_next, lambda err: None)
    try:
        if not event.wait(timeout):
            raise TimeoutError(f"no matching value within {timeout} s")
    finally:
        subscription.dispose()
    return found[0]



def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the long soak tests (marked slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long soak test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
