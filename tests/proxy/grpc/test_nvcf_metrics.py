"""NVCF's gRPC proxy names (spec part 2, 10.2) on the admin /metrics, ids only for
authenticated, routed calls."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest

from fngate.backends.samples import grpc_echo_pb2 as pb
from tests.proxy.grpc.gateway import F_IO, grpcio_channel, grpcio_stub, metadata

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.grpc_per_call  # each call counts (a session counts once: test_sessions.py)
async def test_function_request_total_and_active_requests(gateway):
    invented = str(uuid.uuid4())
    async with grpcio_channel(gateway.port) as ch:
        stub = grpcio_stub(ch)
        await stub.Echo(pb.EchoRequest(), metadata=metadata(F_IO))
        await stub.Echo(pb.EchoRequest(), metadata=metadata(F_IO))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Echo(pb.EchoRequest(), metadata=metadata(invented, key="nvapi-invented"))
    async with httpx.AsyncClient() as c:
        lines = (await c.get(f"http://127.0.0.1:{gateway.gw.admin_port}/metrics")).text.splitlines()
    assert [line for line in lines if line.startswith("function_request_total{")] == [
        f'function_request_total{{function_id="{F_IO}",function_version_id="20000000-0000-4000-8000-000000000001",nca_id="fngate"}} 2'
    ]
    assert "nvcf_grpc_proxy_service_active_http_requests_total 0" in lines
    assert not [line for line in lines if invented in line]
