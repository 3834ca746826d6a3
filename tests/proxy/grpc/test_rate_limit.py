"""A function's rate limit on the gRPC path (spec part 2, 2.3-2.4): RESOURCE_EXHAUSTED
`exceeded rate limit`, the account tier only (NVCF's gRPC proxy names no caller), and one
set of buckets with the HTTP side."""

from __future__ import annotations

import grpc
import httpx
import pytest

from fngate.backends.samples import grpc_echo_pb2 as pb
from tests.proxy.grpc.gateway import F_IO, V_IO, grpc_route, grpcio_channel, grpcio_stub, metadata, publish_routes

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _codes(port: int, n: int) -> list[str]:
    out = []
    async with grpcio_channel(port) as ch:
        for _ in range(n):
            call = grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=metadata(F_IO, V_IO))
            try:
                await call
            except grpc.aio.AioRpcError:
                pass
            out.append(((await call.code()).name, await call.details()))
    return out


@pytest.mark.grpc_per_call  # each call is checked (a session is checked at its start: test_sessions.py)
async def test_grpc_calls_past_the_limit_get_resource_exhausted(gateway, instances):
    publish_routes(gateway.holder, grpc_route(F_IO, V_IO, instances["grpcio"].port, rate_limit='{"rateLimit":"2-M","perUserRate":"1-M"}'))
    codes = await _codes(gateway.port, 4)
    # perUserRate does not apply to gRPC: two calls pass on the account's 2 a minute
    assert [c for c, _ in codes] == ["OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    assert codes[2][1] == "exceeded rate limit"
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://127.0.0.1:{gateway.gw.admin_port}/metrics")).text
    assert f'fngate_rate_limited_total{{function_id="{F_IO}"}} 2' in text.splitlines()
