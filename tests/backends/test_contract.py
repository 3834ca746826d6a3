"""One contract suite over every backend: local processes, static endpoints, the fake.

What the reconciler relies on: apply converges (up, down, idempotent), stop_instances
stops exactly the chosen instances, remove stops everything (idempotent), events report READY with a reachable address and LOST when
an instance goes, a new subscription replays the ready instances, and capacity
accounts for what is placed.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from fngate.backends.base import Backend
from fngate.backends.base import InstanceEventKind as K
from fngate.backends.fake import FakeBackend
from fngate.backends.local import LocalBackend
from fngate.backends.static import StaticBackend
from tests.support.toys import TOY, Tracker, toy_catalog, toy_spec


@pytest.fixture
async def toy_servers():
    """Three real toy HTTP servers (for the static backend and the fake's address), each on
    the port the system gives it (a port probed free first can be taken by then)."""
    procs, ports = [], []
    try:
        for _ in range(3):
            proc = await asyncio.create_subprocess_exec(sys.executable, TOY, "--port", "0", stdout=asyncio.subprocess.PIPE)
            procs.append(proc)
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.startswith(b"toy worker listening on "), line
            ports.append(int(line.rsplit(b":", 1)[1]))
        yield ports
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
            await p.wait()


@pytest.fixture(params=["local", "static", "fake"])
async def subject(request, tmp_path, toy_servers):
    kind = request.param
    if kind == "local":
        backend = LocalBackend("local", data_dir=tmp_path, catalog=toy_catalog(), probe_interval=0.2, startup_timeout=15)
        spec = toy_spec()
    elif kind == "static":
        backend = StaticBackend("static", probe_interval=0.2, startup_timeout=5)
        spec = toy_spec(configuration={"endpoints": [f"http://127.0.0.1:{p}" for p in toy_servers]})
    else:
        backend = FakeBackend("fake", address=("127.0.0.1", toy_servers[0]))
        spec = toy_spec()
    tracker = Tracker(backend)
    yield kind, backend, spec, tracker
    await backend.aclose()
    await tracker.close()


async def test_is_a_backend(subject):
    _, backend, _, _ = subject
    assert isinstance(backend, Backend)


async def test_apply_converges_up_down_and_is_idempotent(subject):
    _kind, backend, spec, t = subject
    await backend.apply(spec, 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    async with httpx.AsyncClient() as client:
        for e in t.ready_of("v1"):
            assert (await client.get(f"http://{e.host}:{e.port}/")).status_code == 200
    before = len(t.events)
    await backend.apply(spec, 2)
    await asyncio.sleep(0.5)
    assert len(t.events) == before, "re-applying the same count must change nothing"
    await backend.apply(spec, 3)
    await t.until(lambda: len(t.ready_of("v1")) == 3)
    await backend.apply(spec, 1)
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    assert len(t.of_kind(K.LOST, "v1")) == 2


async def test_stop_instances_stops_exactly_the_chosen_ones(subject):
    _, backend, spec, t = subject
    await backend.apply(spec, 3)
    await t.until(lambda: len(t.ready_of("v1")) == 3)
    chosen, *kept = sorted(e.instance_id for e in t.ready_of("v1"))
    await backend.stop_instances("v1", [chosen], graceful=False)
    await t.until(lambda: chosen not in t.ready)
    assert sorted(e.instance_id for e in t.ready_of("v1")) == kept
    assert [e.instance_id for e in t.of_kind(K.LOST, "v1")] == [chosen]
    # stopping it again, ids of another version and unknown ids change nothing
    await backend.stop_instances("v1", [chosen])
    await backend.stop_instances("v2", kept)
    await backend.stop_instances("v1", ["no-such-instance"])
    await asyncio.sleep(0.5)
    assert sorted(e.instance_id for e in t.ready_of("v1")) == kept
    assert [e.instance_id for e in t.of_kind(K.LOST, "v1")] == [chosen]


async def test_remove_stops_everything_and_is_idempotent(subject):
    kind, backend, spec, t = subject
    await backend.apply(spec, 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    await backend.remove("v1", graceful=False)
    await t.until(lambda: not t.ready_of("v1"))
    await backend.remove("v1")
    if kind == "local":
        assert backend.instances("v1") == []


async def test_new_subscription_replays_ready_instances(subject):
    _, backend, spec, t = subject
    await backend.apply(spec, 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    late = Tracker(backend)
    try:
        await late.until(lambda: len(late.ready_of("v1")) == 2, timeout=2)
        assert set(late.ready) == set(t.ready)
    finally:
        await late.close()


async def test_capacity_accounts_for_placed_instances(subject):
    kind, backend, spec, t = subject
    if kind == "static":
        assert backend.capacity() == []  # places nothing
        return

    def free() -> int:
        return next(c["free"] for c in backend.capacity() if c["name"] == spec.instance_type)

    start = free()
    await backend.apply(spec, 2)
    assert free() == start - 2
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    await backend.remove("v1")
    assert free() == start
