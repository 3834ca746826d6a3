"""The limiter's per-connection cap (issue 13, attack 7) on its own: turns in order, the
deadline, a cancel at any point, and nothing left behind once a connection is done."""

from __future__ import annotations

import asyncio
import time

import pytest

from fngate.proxy.errors import PollTimeout
from fngate.proxy.routing.limiter import Limiter
from fngate.proxy.routing.snapshot import RoutingTable, SnapshotHolder

from .conftest import route


def limiter(slots: int, cap: int) -> tuple[Limiter, object]:
    holder = SnapshotHolder()
    r = route(1, max_concurrency=slots)
    holder.publish(RoutingTable.build(1, [r], []))
    return Limiter(holder, per_connection=cap), r


async def test_turns_past_the_cap_come_in_order_and_others_pass():
    lim, r = limiter(slots=10, cap=2)
    conn, other = object(), object()
    held = [lim.try_acquire(r, None, conn), lim.try_acquire(r, None, conn)]
    assert None not in held and lim.try_acquire(r, None, conn) is None  # at its cap
    assert lim.try_acquire(r, None, other) is not None  # another connection is not held up
    waiting = [asyncio.create_task(lim.admit(r, time.monotonic() + 5, owner=conn)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)
    held.pop(0).release()
    await asyncio.sleep(0.01)
    assert [w.done() for w in waiting] == [True, False, False]  # FIFO within the connection
    assert lim.try_acquire(r, None, conn) is None  # nobody overtakes the waiters
    held.pop(0).release()
    (await waiting[0]).release()
    for w in waiting[1:]:
        (await w).release()
    assert lim.capped_connections() == 1  # only `other`: conn is done, its entry is gone


async def test_a_turn_waits_no_longer_than_the_deadline_and_a_cancel_leaks_nothing():
    lim, r = limiter(slots=10, cap=1)
    conn = object()
    first = lim.try_acquire(r, None, conn)
    with pytest.raises(PollTimeout):
        await lim.admit(r, time.monotonic() + 0.05, owner=conn)
    cancelled = asyncio.create_task(lim.admit(r, time.monotonic() + 5, owner=conn))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    first.release()  # the turn is granted in the same tick as the cancel
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert lim.capped_connections() == 0 and lim.in_flight == {}
    again = await lim.admit(r, time.monotonic() + 1, owner=conn)  # the connection is not stuck
    again.release()
    assert lim.capped_connections() == 0


async def test_a_turn_then_a_full_version_queue_gives_the_turn_back():
    lim, r = limiter(slots=1, cap=1)
    conn, other = object(), object()
    busy = lim.try_acquire(r, None, other)  # the only slot
    with pytest.raises(PollTimeout):  # passes the connection's cap, then times out in the version FIFO
        await lim.admit(r, time.monotonic() + 0.05, owner=conn)
    busy.release()
    assert lim.capped_connections() == 0
