"""Bad input and misbehaving workers on the local backend: each ends in a clear
FAILED/LOST fact (or a refusal), and nothing else running is disturbed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from fngate.backends.base import BackendError, HealthCheck
from fngate.backends.base import InstanceEventKind as K
from fngate.backends.inventory import Inventory
from fngate.backends.local import LocalBackend, free_port
from fngate.backends.static import StaticBackend
from tests.support.toys import TOY, Tracker, toy_catalog, toy_spec


@pytest.fixture
async def local(tmp_path):
    backend = LocalBackend(
        "local",
        data_dir=tmp_path,
        catalog=toy_catalog(),
        inventory=Inventory({"L40S": 2, "H100": 1, "A100": 0}),
        probe_interval=0.2,
        startup_timeout=3,
        unhealthy_after=2,
        restart_backoff=0.1,
    )
    tracker = Tracker(backend)
    yield backend, tracker
    await backend.aclose()
    await tracker.close()


async def test_unknown_image_is_refused_and_starts_nothing(local):
    backend, _ = local
    with pytest.raises(BackendError, match=r"unknown container image 'nvcr.io/acme/nope:1'"):
        await backend.apply(toy_spec(image="nvcr.io/acme/nope:1"), 1)
    assert backend.instances() == []


async def test_inventory_exhausted_places_what_fits_and_says_why(local):
    backend, t = local
    with pytest.raises(BackendError, match=r"insufficient capacity: NCP.GPU.L40S_1x needs 1 L40S GPU\(s\), 0 of 2 free \(placed 2 of 3"):
        await backend.apply(toy_spec(), 3)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    await backend.remove("v1")
    assert next(c for c in backend.capacity() if c["name"] == "NCP.GPU.L40S_1x")["free"] == 2


async def test_unknown_instance_type_is_refused(local):
    backend, _ = local
    with pytest.raises(BackendError, match=r"unknown instance type 'NCP.GPU.B200_8x'"):
        await backend.apply(toy_spec(instance_type="NCP.GPU.B200_8x", gpu="B200"), 1)


async def test_command_that_exits_at_once_fails_with_its_output(local):
    backend, t = local
    await backend.apply(toy_spec(image="test/exits"), 1)
    await t.until(lambda: t.of_kind(K.FAILED))
    detail = t.of_kind(K.FAILED)[0].detail
    assert "exited with code 3 during startup" in detail and "cannot load model weights" in detail
    assert backend.instances() == []  # slot released, nothing left running


async def test_health_that_never_passes_fails_after_the_startup_timeout(local):
    backend, t = local
    await backend.apply(toy_spec(image="test/unhealthy"), 1)
    await t.until(lambda: t.of_kind(K.FAILED), timeout=10)
    detail = t.of_kind(K.FAILED)[0].detail
    assert "did not become healthy within 3s" in detail and "answered 503, expected 200" in detail


async def test_port_taken_fails_clearly_and_other_versions_keep_running(local, tmp_path):
    backend, t = local
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        backend.catalog = toy_catalog({"test/fixed": [sys.executable, TOY, "--port", str(port)]})
        await backend.apply(toy_spec("good"), 1)
        await t.until(lambda: len(t.ready_of("good")) == 1)
        await backend.apply(toy_spec("bad", image="test/fixed"), 1)
        await t.until(lambda: t.of_kind(K.FAILED, "bad"))
    assert "Address already in use" in t.of_kind(K.FAILED, "bad")[0].detail
    assert len(t.ready_of("good")) == 1


async def test_crashed_instance_is_restarted(local):
    backend, t = local
    await backend.apply(toy_spec(), 1)
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    [inst] = backend.instances("v1")
    os.kill(inst["pid"], signal.SIGKILL)
    await t.until(lambda: t.of_kind(K.LOST, "v1"))
    assert "exited with code -9" in t.of_kind(K.LOST, "v1")[0].detail
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    [again] = backend.instances("v1")
    assert again["instanceId"] == inst["instanceId"] and again["pid"] != inst["pid"]
    assert "starting instance" in Path(again["log"]).read_text()


async def test_hung_instance_is_detected_and_replaced(local):
    backend, t = local
    await backend.apply(toy_spec(health=HealthCheck(uri="/health", timeout_s=0.3)), 1)
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    [inst] = backend.instances("v1")
    os.kill(inst["pid"], signal.SIGSTOP)  # alive but answering nothing: hung
    await t.until(lambda: t.of_kind(K.LOST, "v1"), timeout=10)
    assert "unhealthy (health check timed out" in t.of_kind(K.LOST, "v1")[0].detail
    await t.until(lambda: len(t.ready_of("v1")) == 1, timeout=10)
    assert backend.instances("v1")[0]["pid"] != inst["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(inst["pid"], 0)  # the hung process was killed, not left behind


async def test_instances_get_the_nvcf_environment(local, tmp_path):
    backend, t = local
    dump = tmp_path / "env.txt"
    backend.catalog = toy_catalog(
        {
            "test/env": [
                sys.executable,
                "-c",
                f"import os; open({str(dump)!r}, 'w').write(repr({{k: v for k, v in os.environ.items() if k.startswith(('NVCF_', 'PORT'))}}))",
            ]
        }
    )
    await backend.apply(toy_spec(image="test/env"), 1)
    await t.until(lambda: t.of_kind(K.FAILED))
    env = eval(dump.read_text())
    assert env["NVCF_FUNCTION_ID"] == "f-v1" and env["NVCF_FUNCTION_VERSION_ID"] == "v1"
    assert env["NVCF_INSTANCETYPE"] == "NCP.GPU.L40S_1x" and env["NVCF_BACKEND"] == "local"
    assert {"NVCF_ENV", "NVCF_FUNCTION_NAME", "NVCF_NCA_ID", "NVCF_REGION", "PORT"} <= set(env)


async def test_aclose_leaves_no_process_behind(tmp_path):
    backend = LocalBackend("local", data_dir=tmp_path, catalog=toy_catalog(), probe_interval=0.2)
    t = Tracker(backend)
    await backend.apply(toy_spec(), 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    pids = [i["pid"] for i in backend.instances()]
    await backend.aclose()
    await t.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_static_endpoint_that_never_answers_fails_and_is_retried_by_the_next_apply():
    port = free_port("127.0.0.1")
    backend = StaticBackend("static", probe_interval=0.1, startup_timeout=0.5)
    t = Tracker(backend)
    spec = toy_spec(configuration={"endpoints": [f"http://127.0.0.1:{port}"]})
    try:
        await backend.apply(spec, 1)
        await t.until(lambda: t.of_kind(K.FAILED))
        assert f"endpoint 127.0.0.1:{port} did not become healthy within 0.5s" in t.of_kind(K.FAILED)[0].detail
        proc = await asyncio.create_subprocess_exec(sys.executable, TOY, "--port", str(port))
        try:
            await backend.apply(spec, 1)
            await t.until(lambda: len(t.ready_of("v1")) == 1, timeout=10)
        finally:
            proc.terminate()
            await proc.wait()
    finally:
        await backend.aclose()
        await t.close()


async def test_static_backend_refuses_bad_configuration():
    backend = StaticBackend("static")
    with pytest.raises(BackendError, match=r'needs configuration {"endpoints"'):
        await backend.apply(toy_spec(), 1)
    with pytest.raises(BackendError, match="needs a host and a port"):
        await backend.apply(toy_spec(configuration={"endpoints": ["http://no-port"]}), 1)
    await backend.aclose()


async def test_command_that_cannot_be_started_fails_clearly(local):
    backend, t = local
    backend.catalog = toy_catalog({"test/missing": ["/nonexistent/bin/model-server", "--port", "{port}"]})
    await backend.apply(toy_spec(image="test/missing"), 1)
    await t.until(lambda: t.of_kind(K.FAILED))
    detail = t.of_kind(K.FAILED)[0].detail
    assert detail == "cannot start 'test/missing': No such file or directory (/nonexistent/bin/model-server)"
    assert backend.instances() == []


async def test_unparseable_container_args_are_refused(local):
    backend, _ = local
    with pytest.raises(BackendError, match="containerArgs cannot be parsed: No closing quotation"):
        await backend.apply(toy_spec(container_args='--model "unterminated'), 1)
    assert backend.instances() == []
