"""Read-your-writes on the gRPC port (issue 16): a gRPC function the management API
reports ACTIVE is invokable at once over grpcio. The gateway's routing snapshot may not
have the deploy yet; on a miss (NOT_FOUND, or UNAVAILABLE for a version still listed as
deploying) the gRPC route fetches the newest snapshot once, as HTTP does, before it
answers. Over the in-process, long-poll (--workers 2) and Redis routing sources; on the
gRPC port (a session per connection and function) and on the invocation port (every call
routed on its own)."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

from fngate.backends.samples import grpc_echo_pb2, grpc_echo_pb2_grpc
from tests.e2e.read_your_writes import SOURCES, deployments, serve_on
from tests.support.net import free_port
from tests.support.serve_api import ServeApi

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


PORTS = {"grpc port (sessions)": "grpc_port", "invocation port (per call)": "http_port"}


def _deploy_and_invoke(api: ServeApi, instance_port: int, rounds: int, port: str) -> list[str]:
    fid, vid = api.create_function(
        {"name": "ryw-grpc", "containerImage": "fngate/grpc-echo", "inferenceUrl": "/grpc", "inferencePort": 8001, "health": GRPC_HEALTH}
    )
    outcomes = []
    meta = [("function-id", fid), ("authorization", api.headers["Authorization"])]
    with deployments(api, fid, vid, instance_port) as deployed, grpc.insecure_channel(f"127.0.0.1:{api.sp.ready[port]}") as channel:
        stub = grpc_echo_pb2_grpc.EchoStub(channel)
        for i in range(rounds):
            deployed()
            try:
                reply = stub.Echo(grpc_echo_pb2.EchoRequest(message=f"hi {i}"), metadata=meta, timeout=30)
                outcomes.append("OK" if reply.message == f"hi {i}" else f"wrong reply {reply.message!r}")
            except grpc.RpcError as err:
                outcomes.append(f"{err.code().name}: {err.details()}")
    return outcomes


@pytest.mark.parametrize("port", list(PORTS))
@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_over_grpc_short(fngate_serve, tmp_path, source, port, request, external_grpc_echo):
    api = serve_on(source, fngate_serve, tmp_path, request)
    outcomes = _deploy_and_invoke(api, external_grpc_echo, 10, PORTS[port])
    assert set(outcomes) == {"OK"}, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("port", list(PORTS))
@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_over_grpc_100_times(fngate_serve, tmp_path, source, port, request, external_grpc_echo):
    api = serve_on(source, fngate_serve, tmp_path, request)
    outcomes = _deploy_and_invoke(api, external_grpc_echo, 100, PORTS[port])
    assert set(outcomes) == {"OK"}, outcomes
