"""The keyed work queue: a key waits once, runs once at a time, and a mark that lands
during its pass queues exactly one more pass."""

from __future__ import annotations

import asyncio

from fngate.control.workqueue import KeyedQueue


async def test_a_key_marked_twice_waits_once():
    q: KeyedQueue[str] = KeyedQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert [await q.take(), await q.take()] == ["a", "b"]
    assert len(q) == 0


async def test_a_mark_during_a_pass_runs_one_more_pass_after_it():
    q: KeyedQueue[str] = KeyedQueue()
    q.add("a")
    key = await q.take()
    assert q.active("a")
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a running key is not handed out again while its pass runs"
    q.done(key)
    assert not q.active("a") and len(q) == 1
    assert await q.take() == "a"
    q.done("a")
    assert len(q) == 0


async def test_take_waits_for_a_key():
    q: KeyedQueue[str] = KeyedQueue()
    taker = asyncio.ensure_future(q.take())
    await asyncio.sleep(0.01)
    assert not taker.done()
    q.add("x")
    assert await asyncio.wait_for(taker, 1) == "x"
