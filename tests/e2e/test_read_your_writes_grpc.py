"""Read-your-writes on the gRPC port (issue 16): a gRPC function the management API
reports ACTIVE is invokable at once over grpcio. The gateway's routing snapshot may not
have the deploy yet; on a miss (NOT_FOUND, or UNAVAILABLE for a version still listed as
deploying) the gRPC route fetches the newest snapshot once, as HTTP does, before it
answers. Over the in-process, long-poll (--workers 2) and Redis routing sources; with
sessions on (the gRPC port's default) and off (per-call routing)."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import httpx
import pytest

from fngate.backends.samples import grpc_echo_pb2, grpc_echo_pb2_grpc
from tests.e2e.helpers import write_config
from tests.support.net import free_port
from tests.support.serve_api import ServeApi

SOURCES = {
    "in-process": ["--workers", "1"],
    "long-poll": ["--workers", "2"],
    "redis": ["--workers", "1", "--store", "REDIS"],
}
GRPC_HEALTH = {"protocol": "gRPC", "uri": "/", "port": 8001, "timeout": "PT1S", "expectedStatusCode": 200}


@pytest.fixture
def external_grpc_echo():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fngate.backends.samples.grpc_echo", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                grpc.channel_ready_future(ch).result(timeout=0.5)
            break
        except grpc.FutureTimeoutError:
            assert time.monotonic() < deadline and proc.poll() is None, "the gRPC echo server did not start"
    yield port
    proc.terminate()
    proc.wait(10)


def _serve(fngate_serve, tmp_path, source, request):
    args = list(SOURCES[source])
    if "REDIS" in args:
        args[args.index("REDIS")] = request.getfixturevalue("redis_url")
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static", "probeInterval": 0.1}],
        autoscaler={"interval": 0.2, "window": 1},
    )
    return ServeApi(fngate_serve("--config", str(config), *args))


def _deploy_and_invoke(api: ServeApi, port: int, rounds: int) -> list[str]:
    fid, vid = api.create_function(
        {"name": "ryw-grpc", "containerImage": "fngate/grpc-echo", "inferenceUrl": "/grpc", "inferencePort": 8001, "health": GRPC_HEALTH}
    )
    spec = {
        "gpu": "L40S",
        "instanceType": "NCP.GPU.L40S_1x",
        "minInstances": 0,
        "maxInstances": 1,
        "backend": "edge",
        "configuration": {"endpoints": [f"http://127.0.0.1:{port}"]},
    }
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    outcomes = []
    meta = [("function-id", fid), ("authorization", api.headers["Authorization"])]
    with httpx.Client(timeout=60) as client, grpc.insecure_channel(f"127.0.0.1:{api.sp.ready['grpc_port']}") as channel:
        stub = grpc_echo_pb2_grpc.EchoStub(channel)
        for i in range(rounds):
            r = client.post(api.sp.api_url + path, json={"deploymentSpecifications": [spec]}, headers=api.headers)
            assert r.status_code == 200 and r.json()["deployment"]["functionStatus"] == "ACTIVE", r.text
            try:
                reply = stub.Echo(grpc_echo_pb2.EchoRequest(message=f"hi {i}"), metadata=meta, timeout=30)
                outcomes.append("OK" if reply.message == f"hi {i}" else f"wrong reply {reply.message!r}")
            except grpc.RpcError as err:
                outcomes.append(f"{err.code().name}: {err.details()}")
            r = client.delete(api.sp.api_url + path, headers=api.headers)
            assert r.status_code == 200, r.text
    return outcomes


@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_over_grpc_short(fngate_serve, tmp_path, source, request, external_grpc_echo):
    api = _serve(fngate_serve, tmp_path, source, request)
    outcomes = _deploy_and_invoke(api, external_grpc_echo, 10)
    assert set(outcomes) == {"OK"}, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_over_grpc_100_times(fngate_serve, tmp_path, source, request, external_grpc_echo):
    api = _serve(fngate_serve, tmp_path, source, request)
    outcomes = _deploy_and_invoke(api, external_grpc_echo, 100)
    assert set(outcomes) == {"OK"}, outcomes
