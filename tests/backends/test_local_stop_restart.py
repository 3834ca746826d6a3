"""The local backend's stop and restart paths: SIGTERM escalates to SIGKILL for an
instance that ignores it, and an instance whose restart fails is restarted again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from fngate.backends.base import InstanceEventKind as K
from fngate.backends.inventory import Inventory
from fngate.backends.local import LocalBackend
from tests.support.toys import TOY, Tracker, toy_catalog, toy_spec


def _backend(tmp_path, **kw) -> LocalBackend:
    return LocalBackend(
        "local",
        data_dir=tmp_path,
        catalog=toy_catalog(kw.pop("images", None)),
        inventory=Inventory({"L40S": 4, "H100": 1, "A100": 0}),
        probe_interval=0.2,
        startup_timeout=5,
        restart_backoff=0.1,
        restart_backoff_max=0.3,
        **kw,
    )


async def _stop_one(backend: LocalBackend, t: Tracker, version: str) -> tuple[float, int]:
    [inst] = backend.instances(version)
    started = time.monotonic()
    await backend.stop_instances(version, [inst["instanceId"]], graceful=True)
    return time.monotonic() - started, inst["pid"]


async def test_an_instance_that_ignores_sigterm_is_killed_after_the_stop_grace(tmp_path):
    backend = _backend(tmp_path, stop_grace=1.0)
    t = Tracker(backend)
    try:
        await backend.apply(toy_spec("stubborn", image="test/ignores-sigterm"), 1)
        await backend.apply(toy_spec("polite"), 1)
        await t.until(lambda: len(t.ready_of("stubborn")) == 1 and len(t.ready_of("polite")) == 1)

        took, pid = await _stop_one(backend, t, "polite")
        assert took < 1.0, f"a worker that exits on SIGTERM took {took:.2f}s to stop"
        took, pid = await _stop_one(backend, t, "stubborn")
        assert 1.0 <= took < 4.0, f"stopping a worker that ignores SIGTERM took {took:.2f}s (grace 1 s, then SIGKILL)"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert backend.instances() == []
        await t.until(lambda: len(t.of_kind(K.LOST)) == 2)
        assert next(c for c in backend.capacity() if c["name"] == "NCP.GPU.L40S_1x")["free"] == 4
    finally:
        await backend.aclose()
        await t.close()


async def test_an_instance_whose_restart_fails_is_restarted_until_it_comes_back(tmp_path):
    broken = tmp_path / "broken"  # while this file exists, the worker exits at once
    script = f"import os, runpy, sys; os.path.exists({str(broken)!r}) and sys.exit(4); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    images = {"test/flaky": [sys.executable, "-c", script, TOY, "--host", "{host}", "--port", "{port}"]}
    backend = _backend(tmp_path, images=images)
    t = Tracker(backend)
    try:
        await backend.apply(toy_spec("flaky", image="test/flaky"), 1)
        await t.until(lambda: len(t.ready_of("flaky")) == 1)
        [inst] = backend.instances("flaky")
        broken.touch()
        os.kill(inst["pid"], signal.SIGKILL)
        await t.until(lambda: t.of_kind(K.LOST, "flaky"))
        await asyncio.sleep(1.5)  # several restarts fail meanwhile (backoff 0.1 .. 0.3 s)
        assert not t.ready_of("flaky") and not t.of_kind(K.FAILED, "flaky"), "a failed restart gave the instance up"
        starts = (tmp_path / "instances" / "flaky" / f"{inst['instanceId']}.log").read_text().count("starting instance")
        assert starts >= 3, f"only {starts} starts: the failed restart was not retried"
        broken.unlink()
        await t.until(lambda: len(t.ready_of("flaky")) == 1, timeout=10)
        [again] = backend.instances("flaky")
        assert again["instanceId"] == inst["instanceId"] and again["pid"] != inst["pid"]
    finally:
        await backend.aclose()
        await t.close()
