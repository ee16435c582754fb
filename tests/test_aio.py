"""``aio.iterate``: ``async for`` over an Observable, bounded, cleaned up on break and cancel."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
import reactivex
from reactivex.subject import Subject

from rx_spacetimedb import aio
from rx_spacetimedb.errors import SlowConsumer
from rx_spacetimedb.testing import SpacetimeDBEmulator
from tests.conftest import WAIT
from tests.test_connection import open_conn


class Watched(Subject[int]):
    """A subject that counts its subscribers."""

    @property
    def subscribers(self) -> int:
        return len(self.observers)


async def drain(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


def test_it_yields_every_item_then_stops_on_completion() -> None:
    assert asyncio.run(drain(aio.iterate(reactivex.of(1, 2, 3)))) == [1, 2, 3]


def test_it_raises_the_streams_error_after_the_items_before_it() -> None:
    seen: list[int] = []

    async def main() -> None:
        async for item in aio.iterate(reactivex.concat(reactivex.of(1, 2), reactivex.throw(KeyError("x")))):
            seen.append(item)

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert seen == [1, 2]


def test_break_unsubscribes_at_once_inside_aclosing() -> None:
    source = Watched()

    async def main() -> list[int]:
        got: list[int] = []
        async with contextlib.aclosing(aio.iterate(source)) as items:
            asyncio.get_running_loop().call_soon(lambda: [source.on_next(i) for i in range(5)])
            async for item in items:
                got.append(item)
                if item == 2:
                    break
            assert source.subscribers == 1
        assert source.subscribers == 0
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_cancelling_the_task_unsubscribes() -> None:
    source = Watched()

    async def main() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in aio.iterate(source):
                started.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        source.on_next(1)
        await started.wait()
        assert source.subscribers == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert source.subscribers == 0

    asyncio.run(main())


@pytest.mark.parametrize(("overflow", "expected"), [
    ("drop_oldest", [7, 8, 9]),
    ("drop_newest", [0, 1, 2]),
])
def test_a_slow_loop_holds_at_most_max_pending_items(overflow: Any, expected: list[int]) -> None:
    source = Watched()

    async def main() -> list[int]:
        items = aio.iterate(source, max_pending=3, overflow=overflow)
        first = asyncio.ensure_future(anext(items))  # subscribes; the loop is then busy elsewhere
        await asyncio.sleep(0)
        producer = threading.Thread(target=lambda: [source.on_next(i) for i in range(10)])
        producer.start()
        producer.join()
        got = [await first]
        source.on_completed()
        got += [item async for item in items]
        return got

    assert asyncio.run(main()) == expected


def test_overflow_error_raises_slow_consumer_after_the_queued_items() -> None:
    source = Watched()
    got: list[int] = []

    async def main() -> None:
        items = aio.iterate(source, max_pending=2, overflow="error")
        first = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0)
        for i in range(5):  # the loop is busy here: the third item does not fit
            source.on_next(i)
        got.append(await first)
        async for item in items:
            got.append(item)

    with pytest.raises(SlowConsumer):
        asyncio.run(main())
    assert got == [0, 1]
    assert source.subscribers == 0


def test_bad_arguments_raise_at_the_call_naming_them() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        aio.iterate(reactivex.of(1), max_pending=0)
    with pytest.raises(ValueError, match="overflow"):
        aio.iterate(reactivex.of(1), overflow="block")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="observable"):
        aio.iterate([1, 2])  # type: ignore[arg-type]


def test_async_for_over_a_connections_table_diffs(server: SpacetimeDBEmulator) -> None:
    async def main() -> list[str]:
        async with open_conn(server) as conn:
            await conn.connected(WAIT)
            await conn.subscribe_single("SELECT * FROM Player")
            names: list[str] = []
            async with contextlib.aclosing(aio.iterate(conn.table_diffs("Player"))) as diffs:
                for name in ("ann", "bob"):
                    conn.call_reducer("CreatePlayer", [name])
                async for diff in diffs:
                    names += [p.name for p in diff.inserts]
                    if len(names) == 2:
                        break
            return names

    assert asyncio.run(asyncio.wait_for(main(), WAIT)) == ["ann", "bob"]
