"""The routing table and clients the relay tests share."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpclib.client import Channel

from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.backends.samples import grpc_echo_pb2_grpc as pb_grpc
from fngate.backends.samples.grpc_echo_grpc import EchoStub
from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, VersionRoute, key_digest

F_IO = "10000000-0000-4000-8000-000000000001"  # served by the grpcio instance
F_LIB = "10000000-0000-4000-8000-000000000002"  # served by the grpclib instance
F_BOTH = "10000000-0000-4000-8000-000000000003"  # V_IO on grpcio, V_LIB on grpclib
F_DEPLOYING = "10000000-0000-4000-8000-000000000004"
F_INACTIVE = "10000000-0000-4000-8000-000000000005"
F_HTTP = "10000000-0000-4000-8000-000000000006"  # an HTTP function
F_DOWN = "10000000-0000-4000-8000-000000000007"  # its instance does not listen
F_ONE = "10000000-0000-4000-8000-000000000008"  # one slot, queue of one
V_IO = "20000000-0000-4000-8000-000000000001"
V_LIB = "20000000-0000-4000-8000-000000000002"
V_OTHER = "20000000-0000-4000-8000-000000000009"

KEY = "good-key"
SCOPED_KEY = "key-for-f-io-only"
NO_INVOKE_KEY = "key-without-invoke"
EXPIRED_KEY = "expired-key"

FUNCTION_OF = {"grpcio": F_IO, "grpclib": F_LIB}
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def build_table(version: int, io_port: int, lib_port: int, closed_port: int) -> RoutingTable:
    io = (Endpoint("io-1", "127.0.0.1", io_port),)
    lib = (Endpoint("lib-1", "127.0.0.1", lib_port),)

    def route(fid, vid, endpoints, status="ACTIVE", **kw):
        kw.setdefault("max_concurrency", 1000)
        return VersionRoute(fid, vid, "echo", status, inference_url="/grpc", grpc=True, endpoints=endpoints, **kw)

    routes = [
        route(F_IO, V_IO, io),
        route(F_LIB, V_LIB, lib),
        route(F_BOTH, V_IO, io),
        route(F_BOTH, V_LIB, lib),
        route(F_DEPLOYING, V_OTHER, (), status="DEPLOYING"),
        route(F_INACTIVE, V_OTHER, (), status="INACTIVE"),
        VersionRoute(F_HTTP, V_OTHER, "http", "ACTIVE", endpoints=(Endpoint("h-1", "127.0.0.1", closed_port),)),
        route(F_DOWN, V_OTHER, (Endpoint("down-1", "127.0.0.1", closed_port),)),
        route(F_ONE, V_LIB, (Endpoint("one-1", "127.0.0.1", lib_port),), max_concurrency=1, queue_limit=1),
    ]
    invoke = frozenset({"invoke_function"})
    keys = [
        (key_digest(KEY), KeyGrant("k1", invoke)),
        (key_digest(SCOPED_KEY), KeyGrant("k2", invoke, function_ids=frozenset({F_IO}))),
        (key_digest(NO_INVOKE_KEY), KeyGrant("k3", frozenset({"list_functions"}))),
        (key_digest(EXPIRED_KEY), KeyGrant("k4", invoke, expires_at=time.time() - 60)),
    ]
    return RoutingTable.build(version, routes, keys)


def metadata(function_id: str, version_id: str | None = None, key: str | None = KEY) -> list[tuple[str, str]]:
    md = [("function-id", function_id)]
    if version_id:
        md.append(("function-version-id", version_id))
    if key:
        md.append(("authorization", f"Bearer {key}"))
    return md


def grpcio_channel(port: int, *options) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=UNLIMITED + list(options))


def grpcio_stub(channel) -> pb_grpc.EchoStub:
    return pb_grpc.EchoStub(channel)


def grpclib_stub(channel: Channel) -> EchoStub:
    return EchoStub(channel)


def publish_routes(holder, *routes: VersionRoute) -> None:
    """Publish the current table plus (or replacing) `routes`, as the control plane would."""
    table = holder.table
    current = {(r.function_id, r.version_id): r for vs in table.functions.values() for r in vs.values()}
    current.update({(r.function_id, r.version_id): r for r in routes})
    holder.publish(RoutingTable.build(table.version + 1, list(current.values()), list(table.keys.items())))


def grpc_route(function_id: str, version_id: str, port: int, **kw) -> VersionRoute:
    kw.setdefault("max_concurrency", 1000)
    endpoint = Endpoint(f"ep-{port}", "127.0.0.1", port)
    return VersionRoute(function_id, version_id, "raw", "ACTIVE", inference_url="/grpc", grpc=True, endpoints=(endpoint,), **kw)


async def instance_stats(port: int) -> pb.StatsReply:
    """The grpcio sample instance's own counters, asked straight, not through the gateway."""
    async with grpcio_channel(port) as ch:
        return await grpcio_stub(ch).Stats(pb.StatsRequest())


async def wait_for_stats(port: int, predicate, timeout: float = 5.0) -> pb.StatsReply:
    """The instance's counters once `predicate` holds for them (TimeoutError after `timeout`)."""
    async with asyncio.timeout(timeout):
        while not predicate(stats := await instance_stats(port)):
            await asyncio.sleep(0.05)
    return stats
