"""One contract, every StateStore: MemoryStore, SqliteStore, RedisStore (real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from fngate.control.store.base import Compacted, Conflict, Delete, Put
from fngate.control.store.memory import MemoryStore
from fngate.control.store.redis import RedisStore
from fngate.control.store.sqlite import SqliteStore


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request, tmp_path):
    """A factory so tests can pick the history size; every store it opened is closed."""
    opened = []

    async def make(history: int = 10_000):
        if request.param == "memory":
            store = MemoryStore(history=history)
        elif request.param == "sqlite":
            store = await SqliteStore.open(tmp_path / f"db{len(opened)}.sqlite", history=history, poll_interval=0.05)
        else:
            url = request.getfixturevalue("redis_url")
            store = await RedisStore.open(url, prefix=f"t{len(opened)}:", history=history, block_ms=50)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


@pytest.fixture
async def store(make_store):
    return await make_store()


async def test_empty_store(store):
    assert await store.revision() == 0
    assert await store.get("functions", "a") is None
    assert await store.list("functions") == []


async def test_put_get_list_with_revisions(store):
    r1 = await store.put("functions", "f1/v1", {"name": "a", "nested": {"x": [1, 2]}, "empty": []})
    r2 = await store.put("functions", "f1/v2", {"name": "b"})
    await store.put("keys", "k", {"scopes": []})
    assert (r1.revision, r2.revision) == (1, 2)
    got = await store.get("functions", "f1/v1")
    assert got.revision == 1 and got.value == {"name": "a", "nested": {"x": [1, 2]}, "empty": []}
    assert [r.key for r in await store.list("functions")] == ["f1/v1", "f1/v2"]
    assert [r.key for r in await store.list("functions", "f1/v2")] == ["f1/v2"]
    assert await store.list("functions", "f2/") == []
    assert await store.revision() == 3


async def test_returned_values_are_copies(store):
    await store.put("functions", "a", {"tags": ["x"]})
    got = await store.get("functions", "a")
    got.value["tags"].append("y")
    assert (await store.get("functions", "a")).value == {"tags": ["x"]}


async def test_compare_and_set(store):
    rec = await store.put("functions", "a", {"v": 1}, expect=0)
    with pytest.raises(Conflict) as info:
        await store.put("functions", "a", {"v": 2}, expect=0)
    assert (info.value.expected, info.value.actual) == (0, rec.revision)
    with pytest.raises(Conflict):
        await store.put("functions", "a", {"v": 2}, expect=rec.revision + 5)
    rec2 = await store.put("functions", "a", {"v": 2}, expect=rec.revision)
    assert (await store.get("functions", "a")).value == {"v": 2}
    with pytest.raises(Conflict):
        await store.delete("functions", "a", expect=rec.revision)
    assert await store.delete("functions", "a", expect=rec2.revision) is True
    assert await store.delete("functions", "a") is False
    with pytest.raises(Conflict):
        await store.put("functions", "missing", {}, expect=3)


async def test_commit_is_atomic(store):
    a = await store.put("functions", "a", {"v": 1})
    rev_before = await store.revision()
    with pytest.raises(Conflict):
        await store.commit([Put("functions", "b", {"v": 1}), Delete("functions", "a"), Put("functions", "c", {}, expect=7)])
    assert await store.get("functions", "b") is None
    assert (await store.get("functions", "a")).revision == a.revision
    assert await store.revision() == rev_before
    rev = await store.commit(
        [Put("functions", "b", {"v": 1}, expect=0), Delete("functions", "a", expect=a.revision), Put("deployments", "b", {})]
    )
    assert rev == rev_before + 1
    assert (await store.get("functions", "b")).revision == rev
    assert (await store.get("deployments", "b")).revision == rev
    assert await store.get("functions", "a") is None


async def _take(agen, n: int, timeout: float = 5.0) -> list:
    out = []

    async def run():
        async for change in agen:
            out.append(change)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_watch_replays_history_then_follows(store):
    await store.put("functions", "a", {"v": 1})
    await store.commit([Put("functions", "b", {"v": 2}), Delete("functions", "a")])
    feed = store.watch(0)
    first = await _take(feed, 3)
    assert [(c.revision, c.kind, c.key, c.value) for c in first] == [
        (1, "functions", "a", {"v": 1}),
        (2, "functions", "b", {"v": 2}),
        (2, "functions", "a", None),
    ]

    async def later():
        await asyncio.sleep(0.05)
        await store.put("keys", "k", {"x": True})

    task = asyncio.create_task(later())
    (change,) = await _take(feed, 1)
    await task
    assert (change.revision, change.kind, change.key, change.value) == (3, "keys", "k", {"x": True})
    await feed.aclose()


async def test_watch_from_a_revision_skips_older_changes(store):
    for i in range(4):
        await store.put("functions", f"k{i}", {"i": i})
    feed = store.watch(2)
    changes = await _take(feed, 2)
    assert [c.key for c in changes] == ["k2", "k3"]
    await feed.aclose()


async def test_two_watchers_both_see_a_change(store):
    feeds = [store.watch(0), store.watch(0)]
    tasks = [asyncio.create_task(_take(f, 1)) for f in feeds]
    await asyncio.sleep(0.05)
    await store.put("functions", "a", {})
    results = await asyncio.gather(*tasks)
    assert [r[0].key for r in results] == ["a", "a"]
    for f in feeds:
        await f.aclose()


async def test_watch_raises_compacted_when_history_was_dropped(make_store):
    store = await make_store(history=3)
    for i in range(6):
        await store.put("functions", f"k{i}", {"i": i})
    with pytest.raises(Compacted):
        await _take(store.watch(0), 1)
    recent = store.watch(3)
    assert [c.key for c in await _take(recent, 3)] == ["k3", "k4", "k5"]
    await recent.aclose()


async def test_one_commit_larger_than_a_watch_page_arrives_whole(store):
    n = 1200  # above the SQLite store's 1000-row page
    await store.commit([Put("instances", f"v/{i:05d}", {"i": i}) for i in range(n)])
    await store.put("functions", "after", {})
    feed = store.watch(0)
    changes = await _take(feed, n + 1, timeout=20)
    assert [c.key for c in changes[:n]] == [f"v/{i:05d}" for i in range(n)]
    assert changes[-1].key == "after" and changes[-1].revision == 2
    await feed.aclose()
