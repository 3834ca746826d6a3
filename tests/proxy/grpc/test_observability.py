"""Traces and the access log for gRPC calls: a real gateway, the sample Echo instance as a
real process (it echoes the metadata it got), a grpcio client, a real OTLP/HTTP receiver."""

from __future__ import annotations

import json

import grpc
import pytest

from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.proxy.grpc.conftest import start_echo
from tests.proxy.grpc.gateway import F_LIB, V_LIB, build_table, grpcio_channel, grpcio_stub, metadata
from tests.support.net import free_port
from tests.support.otlp import OtlpReceiver, tree

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture
async def receiver():
    r = await OtlpReceiver().start()
    yield r
    await r.stop()


async def test_a_grpc_call_s_spans_traceparent_and_access_log_line(tmp_path, receiver) -> None:
    instance = await start_echo("grpclib")
    log = tmp_path / "access.log"
    holder = SnapshotHolder()
    holder.publish(build_table(1, free_port(), instance.port, free_port()))
    cfg = GatewayConfig(http_port=0, grpc_port=0, admin_port=None, otlp_endpoint=receiver.url, access_log=str(log))
    gw = Gateway(cfg, holder, "gw-grpc-trace")
    await gw.start()
    try:
        md = metadata(F_LIB) + [("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), ("tracestate", "k=v")]
        async with grpcio_channel(gw.grpc_port) as ch:
            call = grpcio_stub(ch).Echo(pb.EchoRequest(message="hi"), metadata=md)
            reply = await call
            reqid = dict(await call.initial_metadata())["nvcf-reqid"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=metadata(F_LIB, key="wrong"))
            with pytest.raises(grpc.aio.AioRpcError) as failed:  # the instance ends the call with an error
                await grpcio_stub(ch).Echo(pb.EchoRequest(error=pb.ErrorSpec(code=14, message="busy")), metadata=metadata(F_LIB))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gw.stop(grace=1)
        await instance.stop()
    spans = await receiver.wait_for(15)
    calls = {}
    for s in spans:
        calls.setdefault(s.trace_id, []).append(s)
    served = calls.pop(CLIENT_TRACE)
    [refused_spans] = [c for c in calls.values() if len(c) == 2]
    assert tree(served) == {
        "": ["fngate.invoke"],
        "fngate.invoke": ["connect", "instance", "queue_wait", "route_and_auth"],
        "instance": ["streaming", "time_to_first_byte"],
    }
    by_name = {s.name: s for s in served}
    assert by_name["fngate.invoke"].parent_id == CLIENT_SPAN
    assert by_name["fngate.invoke"].attributes["fngate.protocol"] == "grpc"
    root = by_name["fngate.invoke"].attributes
    assert (root["rpc.system"], root["rpc.service"], root["rpc.method"]) == ("grpc", "fngate.echo.v1.Echo", "Echo")
    assert (root["rpc.grpc.status_code"], root["http.request.method"], root["url.path"]) == (0, "POST", "/fngate.echo.v1.Echo/Echo")
    assert root["server.port"] == gw.grpc_port and root["network.protocol.version"] == "2"
    assert (by_name["instance"].attributes["server.address"], by_name["instance"].attributes["server.port"]) == ("127.0.0.1", instance.port)
    assert by_name["instance"].attributes["rpc.system"] == "grpc"
    # the instance's UNAVAILABLE: the code on the root span, which is an error
    [failed_root] = [s for c in calls.values() if len(c) > 2 for s in c if s.name == "fngate.invoke"]
    assert failed_root.attributes["rpc.grpc.status_code"] == 14 and failed_root.status_code == 2
    assert tree(refused_spans) == {"": ["fngate.invoke"], "fngate.invoke": ["route_and_auth"]}
    # what the instance got: the gateway's instance span as parent, the client's tracestate
    assert reply.metadata["traceparent"] == f"00-{CLIENT_TRACE}-{by_name['instance'].span_id}-01"
    assert reply.metadata["tracestate"] == "k=v"
    ok, bad, failed_line = (json.loads(line) for line in log.read_text().splitlines())
    # on a gRPC line `status` is the grpc-status; `http_status` what the metrics count it under
    assert (ok["protocol"], ok["status"], ok["grpc_code"], ok["http_status"]) == ("grpc", 0, "OK", 200)
    assert (ok["function_id"], ok["version_id"], ok["key_id"]) == (F_LIB, V_LIB, "k1")
    assert ok["request_id"] == reqid and ok["bytes_in"] > 0 and ok["bytes_out"] > 0
    assert ok["client"] == "127.0.0.1"
    assert (bad["status"], bad["grpc_code"], bad["http_status"], bad["function_id"], bad["key_id"]) == (16, "UNAUTHENTICATED", 401, "", "")
    # answered 200 by HTTP/2, failed by the instance's grpc-status: the line says UNAVAILABLE
    assert (failed_line["status"], failed_line["grpc_code"], failed_line["http_status"]) == (14, "UNAVAILABLE", 200)
    assert failed_line["function_id"] == F_LIB
