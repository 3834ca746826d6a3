"""The reconciler's failure paths: a store watch that fails or whose history was
compacted, a real Redis restart, and a status write that loses a compare-and-set race."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from fngate.backends.fake import FakeBackend
from fngate.control import records as R
from fngate.control.reconciler import Reconciler
from fngate.control.store.base import Compacted, Put, StoreUnavailable
from fngate.control.store.memory import MemoryStore
from tests.support.helpers import deploy, status_of, wait_status
from tests.support.net import free_port
from tests.support.redis import find_redis_server, redis_answers
from tests.support.waiting import wait_for, wait_until


class WatchFailsOnce(MemoryStore):
    """The first watch raises `exc` once `armed` is set, having delivered nothing: every
    change written before then is missed by that watch."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc
        self.armed = asyncio.Event()
        self.failed = False

    async def watch(self, since):
        if not self.failed:
            await self.armed.wait()
            self.failed = True
            raise self.exc
        async for change in super().watch(since):
            yield change


@pytest.mark.parametrize(
    "exc", [ConnectionError("Connection reset by peer"), Compacted("history through revision 7 was dropped")], ids=["failed", "compacted"]
)
async def test_versions_written_while_the_watch_was_down_are_reconciled(exc):
    store = WatchFailsOnce(exc)
    backend = FakeBackend("fake")
    rec = Reconciler(store, {"fake": backend}, resync_interval=3600)  # no resync to fall back on
    await rec.start()
    try:
        fid, vid = await deploy(store)  # the watch never delivers this
        store.armed.set()
        await wait_for(lambda: store.failed, what="the watch to fail")
        await wait_status(store, fid, vid, "ACTIVE", timeout=5)
        # and the watch follows new changes again afterwards
        fid2, vid2 = await deploy(store)
        await wait_status(store, fid2, vid2, "ACTIVE", timeout=5)
    finally:
        await rec.aclose()
        await backend.aclose()


class StatusWriteRaces(MemoryStore):
    """Before the reconciler's first status write lands, the API edits the same function
    (a tag): the write's compare-and-set fails with Conflict."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = 0

    async def commit(self, ops):
        for op in ops:
            if isinstance(op, Put) and op.kind == R.FUNCTIONS and op.expect and not self.raced:
                current = await self.get(op.kind, op.key)
                if current is not None and current.value["status"] != op.value.get("status"):
                    self.raced += 1
                    await super().commit([Put(op.kind, op.key, {**current.value, "tags": ["edited"]})])
        return await super().commit(ops)


async def test_a_status_write_that_loses_a_compare_and_set_race_is_retried_on_fresh_state():
    store = StatusWriteRaces()
    backend = FakeBackend("fake")
    rec = Reconciler(store, {"fake": backend}, resync_interval=3600)
    await rec.start()
    try:
        fid, vid = await deploy(store)
        await wait_status(store, fid, vid, "ACTIVE", timeout=5)
        assert store.raced == 1
        doc = (await store.get(R.FUNCTIONS, R.version_key(fid, vid))).value
        assert doc["tags"] == ["edited"], "the retry wrote over the concurrent edit"
    finally:
        await rec.aclose()
        await backend.aclose()


def _start_redis(port: int, workdir) -> subprocess.Popen:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
    proc = subprocess.Popen([*args, "--appendfsync", "always", "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: redis_answers(port), 10, "redis-server to answer")
    return proc


async def _deploy_when_back(store) -> tuple[str, str]:
    """The API's write right after the restart: its pooled connection to the old server
    fails once (StoreUnavailable, a 503 to the API's client), and the client tries again."""
    for _attempt in range(20):
        try:
            return await deploy(store)
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("Redis did not come back")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def test_the_reconciler_keeps_reconciling_across_a_redis_restart(tmp_path):
    from fngate.control.store.redis import RedisStore

    port = free_port()
    redis = _start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    store, api_store = await RedisStore.open(url), await RedisStore.open(url)  # the reconciler's, and "the API's"
    backend = FakeBackend("fake")
    rec = Reconciler(store, {"fake": backend}, resync_interval=3600)
    try:
        await rec.start()
        fid, vid = await deploy(api_store)
        await wait_status(api_store, fid, vid, "ACTIVE", timeout=5)
        _stop(redis)  # the watch's connection breaks; the data is on disk (appendonly)
        await asyncio.sleep(0.5)
        redis = _start_redis(port, tmp_path)
        fid2, vid2 = await _deploy_when_back(api_store)  # written as soon as Redis is back
        await wait_status(api_store, fid2, vid2, "ACTIVE", timeout=10)
        assert await status_of(api_store, fid, vid) == "ACTIVE"
        assert len(backend.instance_ids(vid)) == 1 and len(backend.instance_ids(vid2)) == 1
    finally:
        await rec.aclose()
        await backend.aclose()
        await store.aclose()
        await api_store.aclose()
        _stop(redis)
