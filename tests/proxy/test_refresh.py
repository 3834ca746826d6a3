"""The routing refresh on a miss: misses share fetches, and a miss never settles for a
fetch that started before it (that one may have missed the write it is looking for)."""

from __future__ import annotations

import asyncio

from fngate.proxy.routing.refresh import Refresher


async def test_concurrent_misses_share_one_fetch_and_later_ones_wait_for_the_next():
    started: list[int] = []
    gate = asyncio.Event()

    async def fetch() -> None:
        started.append(len(started))
        await gate.wait()

    refresh = Refresher(fetch)
    first = [asyncio.create_task(refresh()) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert started == [0]  # one fetch for fifty misses
    late = asyncio.create_task(refresh())  # while the first round runs
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*first)
    assert not late.done() or len(started) == 2
    await late
    assert started == [0, 1]  # the late miss got a round of its own, started after it


async def test_a_failing_or_hanging_fetch_does_not_hold_the_miss():
    async def hang() -> None:
        await asyncio.sleep(60)

    refresh = Refresher(hang, timeout=0.1)
    await asyncio.wait_for(refresh(), 2)

    async def broken() -> None:
        raise OSError("unreachable")

    await asyncio.wait_for(Refresher(broken)(), 2)
