"""gRPC sessions on the gRPC port (spec part 2, section 7), with real grpcio and grpclib
clients against the real sample instances: one function version served by two instances
(the grpcio one and the grpclib one, so each reply's `impl` names the instance that
answered), and clients that close their channel and come back with the session id."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pytest
from grpclib.client import Channel

from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.proxy.routing.snapshot import Endpoint, VersionRoute
from tests.proxy.grpc.conftest import running_gateway
from tests.proxy.grpc.gateway import F_IO, V_IO, grpc_route, grpcio_stub, grpclib_stub, metadata, publish_routes
from tests.proxy.grpc.gateway import grpcio_channel as shared_subchannel_channel
from tests.support.net import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

F_TWO = "30000000-0000-4000-8000-000000000001"  # one version, two instances (grpcio, grpclib)
V_TWO = "40000000-0000-4000-8000-000000000001"
F_SOLO = "30000000-0000-4000-8000-000000000002"  # one instance with one slot
V_SOLO = "40000000-0000-4000-8000-000000000002"


def grpcio_channel(port: int) -> grpc.aio.Channel:
    """A grpcio channel with a TCP connection of its own: grpcio otherwise shares a closed
    channel's connection with the next channel to the same address, and a channel closed
    and opened again would not be a new connection."""
    return shared_subchannel_channel(port, ("grpc.use_local_subchannel_pool", 1))


FAST = {"grpc_session_idle_timeout": 0.3, "grpc_session_reconnect_grace": 0.3, "grpc_session_start_timeout": 0.5}


def two_instances(instances, **kw) -> VersionRoute:
    kw.setdefault("max_concurrency", 1000)
    both = (Endpoint("two-io", "127.0.0.1", instances["grpcio"].port), Endpoint("two-lib", "127.0.0.1", instances["grpclib"].port))
    endpoints = kw.pop("endpoints", both)
    return VersionRoute(F_TWO, V_TWO, "two", "ACTIVE", inference_url="/grpc", grpc=True, endpoints=endpoints, **kw)


async def echo(channel, *extra: tuple[str, str], function_id: str = F_TWO, **request):
    """(reply, initial metadata, trailing metadata) of one unary call."""
    call = grpcio_stub(channel).Echo(pb.EchoRequest(**request), metadata=metadata(function_id) + list(extra), timeout=10)
    reply = await call
    return reply, dict(await call.initial_metadata()), list(await call.trailing_metadata() or ())


async def failure(channel, *extra: tuple[str, str], function_id: str = F_TWO, timeout: float = 10):
    """(code name, details, trailing metadata as a list) of a call that fails."""
    call = grpcio_stub(channel).Echo(pb.EchoRequest(), metadata=metadata(function_id) + list(extra), timeout=timeout)
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    return (await call.code()).name, await call.details(), list(await call.trailing_metadata() or ())


async def test_the_calls_of_one_channel_reach_one_instance_with_one_session_id(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    async with grpcio_channel(gateway.port) as ch:
        first, head, _ = await echo(ch)
        rest = [await echo(ch) for _ in range(20)]
    sid = head["nvcf-reqid"]
    assert str(uuid.UUID(sid)) == sid
    assert {r.impl for r, _, _ in rest} == {first.impl}  # one instance, though the version has two
    assert {h["nvcf-reqid"] for _, h, _ in rest} == {sid}  # on every response
    assert {r.metadata["nvcf-reqid"] for r, _, _ in [(first, head, None), *rest]} == {sid}  # and to the instance
    # the cookie on the first response of the connection only, no attributes
    assert head["set-cookie"] == f"nvcf-request-id={sid}"
    assert all("set-cookie" not in h for _, h, _ in rest)


async def test_each_channel_opens_its_own_session_and_per_call_routing_stays_on_the_http_port(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    ids, impls = set(), set()
    for _ in range(12):
        async with grpcio_channel(gateway.port) as ch:
            reply, head, _ = await echo(ch)
        ids.add(head["nvcf-reqid"])
        impls.add(reply.impl)
    assert len(ids) == 12
    assert impls == {"grpcio", "grpclib"}  # sessions spread over the instances (1 in 2048 to fail by chance)
    async with grpcio_channel(gateway.gw.http_port) as ch:  # no session where NVCF has none: calls spread
        replies = [await echo(ch) for _ in range(24)]
    assert {r.impl for r, _, _ in replies} == {"grpcio", "grpclib"}
    assert len({h["nvcf-reqid"] for _, h, _ in replies}) == 24


@pytest.mark.parametrize("presented_as", ["metadata", "cookie", "split-cookie", "websocket-protocol"])
async def test_a_client_that_reconnects_with_the_session_id_reaches_the_same_instance(gateway, instances, presented_as):
    publish_routes(gateway.holder, two_instances(instances))
    async with grpcio_channel(gateway.port) as ch:
        first, head, _ = await echo(ch)
    sid = head["nvcf-reqid"]
    presented = {
        "metadata": ("nvcf-reqid", sid),
        "cookie": ("cookie", f"other=1; nvcf-request-id={sid}"),
        "split-cookie": ("cookie", f"nvcf-request-id={sid}"),  # followed by another cookie field, below
        "websocket-protocol": ("sec-websocket-protocol", f"function-id.{F_TWO}, nvcf-reqid.{sid}"),
    }[presented_as]
    for _ in range(6):  # channel closed and opened again, six times: by chance 1 in 64
        async with grpcio_channel(gateway.port) as ch:
            extra = [("cookie", "a=1")] if presented_as == "split-cookie" else []
            reply, again, _ = await echo(ch, presented, *extra)  # the id in the first of two cookie fields
            later, later_head, _ = await echo(ch)  # later calls of the connection stay in the session
        assert (reply.impl, later.impl) == (first.impl, first.impl)
        assert again["nvcf-reqid"] == later_head["nvcf-reqid"] == sid
        assert again["set-cookie"] == f"nvcf-request-id={sid}"  # a new connection of the session: its first response


async def test_grpclib_client_keeps_its_session_and_reconnects(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    md = dict(metadata(F_TWO))
    async with Channel("127.0.0.1", gateway.port) as ch:
        async with grpclib_stub(ch).Echo.open(metadata=md) as st:
            await st.send_message(pb.EchoRequest(message="a"), end=True)
            first = await st.recv_message()
            await st.recv_trailing_metadata()
        sid = st.initial_metadata["nvcf-reqid"]
        impls = {(await grpclib_stub(ch).Echo(pb.EchoRequest(), metadata=md)).impl for _ in range(10)}
    assert impls == {first.impl}
    for _ in range(5):
        async with Channel("127.0.0.1", gateway.port) as ch, grpclib_stub(ch).Echo.open(metadata={**md, "nvcf-reqid": sid}) as st:
            await st.send_message(pb.EchoRequest(), end=True)
            reply = await st.recv_message()
            await st.recv_trailing_metadata()
        assert (reply.impl, st.initial_metadata["nvcf-reqid"]) == (first.impl, sid)


async def test_an_unknown_session_id_is_not_found_and_clears_the_cookie(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    stale = str(uuid.uuid4())
    async with grpcio_channel(gateway.port) as ch:
        code, details, trailers = await failure(ch, ("nvcf-reqid", stale))
        # a value that is not a UUID is ignored: a new session
        _, head, _ = await echo(ch, ("nvcf-reqid", "not-a-uuid"), function_id=F_IO)
    assert (code, details) == ("NOT_FOUND", f"no existing session found for request id {stale}")
    assert ("set-cookie", "nvcf-request-id=; Max-Age=0") in trailers
    assert head["nvcf-reqid"] != "not-a-uuid"


async def test_a_session_resumed_for_another_function_version_or_account_is_refused(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances), grpc_route(F_IO, V_IO, instances["grpcio"].port))
    async with grpcio_channel(gateway.port) as ch:
        _, head, _ = await echo(ch)
    sid = head["nvcf-reqid"]
    async with grpcio_channel(gateway.port) as ch:
        wrong_function = await failure(ch, ("nvcf-reqid", sid), function_id=F_IO)
    async with grpcio_channel(gateway.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=[*metadata(F_TWO, V_IO), ("nvcf-reqid", sid)], timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        wrong_version = ((await call.code()).name, await call.details())
    assert wrong_function[:2] == ("INTERNAL", f"existing session function ID mismatch for request id {sid}")
    assert wrong_version == ("INTERNAL", f"existing session function version ID mismatch for request id {sid}")
    async with grpcio_channel(gateway.port) as ch:  # the session is still there for its own function
        _, again, _ = await echo(ch, ("nvcf-reqid", sid))
    assert again["nvcf-reqid"] == sid


async def test_a_session_holds_one_slot_and_ends_after_the_reconnect_grace(instances):
    """One instance with one slot: the first channel's session holds it for any number of
    calls at once; a second channel's session waits, and gets DEADLINE_EXCEEDED
    `failed to establish link to worker` past the start timeout; once the first channel
    closed and the grace passed, the slot serves the second, and the first id is gone."""
    async with running_gateway(instances, **FAST) as gw:
        publish_routes(gw.holder, grpc_route(F_SOLO, V_SOLO, instances["grpcio"].port, max_concurrency=1))
        async with grpcio_channel(gw.port) as first:
            concurrent = await asyncio.gather(*(echo(first, function_id=F_SOLO, delay_s=0.2) for _ in range(5)))
            sid = concurrent[0][1]["nvcf-reqid"]
            assert {h["nvcf-reqid"] for _, h, _ in concurrent} == {sid}  # five calls at once on one slot
            async with grpcio_channel(gw.port) as second:
                code, details, _ = await failure(second, function_id=F_SOLO)
        assert (code, details) == ("DEADLINE_EXCEEDED", "failed to establish link to worker")
        await asyncio.sleep(FAST["grpc_session_idle_timeout"] + FAST["grpc_session_reconnect_grace"] + 0.3)
        async with grpcio_channel(gw.port) as second:
            _, head, _ = await echo(second, function_id=F_SOLO)
            assert head["nvcf-reqid"] != sid
        async with grpcio_channel(gw.port) as late:
            code, details, _ = await failure(late, ("nvcf-reqid", sid), function_id=F_SOLO)
        assert (code, details) == ("NOT_FOUND", f"no existing session found for request id {sid}")


async def test_an_idle_connection_leaves_its_session(instances):
    """No call for the idle timeout: the connection leaves its session (as NVCF's worker
    tunnel closes when idle), so its next call without the id opens a new session."""
    async with running_gateway(instances, **FAST) as gw:
        publish_routes(gw.holder, grpc_route(F_SOLO, V_SOLO, instances["grpcio"].port, max_concurrency=5))
        async with grpcio_channel(gw.port) as ch:
            _, head, _ = await echo(ch, function_id=F_SOLO)
            _, busy, _ = await echo(ch, function_id=F_SOLO)
            await asyncio.sleep(FAST["grpc_session_idle_timeout"] + FAST["grpc_session_reconnect_grace"] + 0.3)
            _, fresh, _ = await echo(ch, function_id=F_SOLO)
        assert busy["nvcf-reqid"] == head["nvcf-reqid"] != fresh["nvcf-reqid"]
        assert fresh["set-cookie"] == f"nvcf-request-id={fresh['nvcf-reqid']}"
        assert len(gw.gw.grpc_sessions.sessions) == 1  # the first one ended and let its slot go


async def test_a_session_whose_instance_leaves_opens_a_new_one_on_the_next_call(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    async with grpcio_channel(gateway.port) as ch:
        first, head, _ = await echo(ch)
        remaining = next(ep for ep in two_instances(instances).endpoints if not ep.id.endswith(first.impl[-2:]))
        publish_routes(gateway.holder, two_instances(instances, endpoints=(remaining,)))
        reply, again, _ = await echo(ch)
    assert reply.impl != first.impl
    assert again["nvcf-reqid"] != head["nvcf-reqid"]


async def test_the_rate_limit_is_checked_when_a_session_starts_only(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances, rate_limit='{"rateLimit":"2-M"}'))
    async with grpcio_channel(gateway.port) as ch:
        calls = [await echo(ch) for _ in range(5)]  # one session: one check
    sid = calls[0][1]["nvcf-reqid"]
    async with grpcio_channel(gateway.port) as ch:
        await echo(ch)  # a second session: the second token
    async with grpcio_channel(gateway.port) as ch:
        code, details, _ = await failure(ch)
    assert (code, details) == ("RESOURCE_EXHAUSTED", "exceeded rate limit")
    async with grpcio_channel(gateway.port) as ch:  # a reconnect is not checked
        _, again, _ = await echo(ch, ("nvcf-reqid", sid))
    assert again["nvcf-reqid"] == sid


async def test_function_request_total_counts_sessions_not_calls(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    for _ in range(2):
        async with grpcio_channel(gateway.port) as ch:
            for _ in range(4):
                await echo(ch)
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://127.0.0.1:{gateway.gw.admin_port}/metrics")).text
    line = f'function_request_total{{function_id="{F_TWO}",function_version_id="{V_TWO}",nca_id="fngate"}} 2'
    assert line in text.splitlines()


async def scrape(gw) -> dict[str, float]:
    """The admin /metrics as {series with labels: value}."""
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://127.0.0.1:{gw.gw.admin_port}/metrics")).text
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}


async def test_nvcf_session_and_connection_series(instances):
    """NVCF's gRPC proxy session series (spec part 2, 10.2): a session opened, its channel
    closed and a new channel reconnecting with the id, then the grace passing."""
    n = "nvcf_grpc_proxy_service_"
    timing = {**FAST, "grpc_session_idle_timeout": 2.0}  # the open channel stays attached while scraped
    async with running_gateway(instances, **timing) as gw:
        publish_routes(gw.holder, two_instances(instances))
        async with grpcio_channel(gw.port) as ch:
            _, head, _ = await echo(ch)
            await echo(ch)
        sid = head["nvcf-reqid"]
        async with grpcio_channel(gw.port) as ch:
            _, again, _ = await echo(ch, ("nvcf-reqid", sid))
            assert again["nvcf-reqid"] == sid
            during = await scrape(gw)
        await asyncio.sleep(timing["grpc_session_idle_timeout"] + timing["grpc_session_reconnect_grace"] + 0.5)
        after = await scrape(gw)
    assert during[f'{n}session_init_seconds_total_count{{is_reconnect="false"}}'] == 1
    assert during[f'{n}session_init_seconds_total_count{{is_reconnect="true"}}'] == 1
    assert during[f'{n}session_init_seconds_total_bucket{{is_reconnect="true",le="+Inf"}}'] == 1
    assert during[f"{n}worker_connection_opened_total"] == 1
    assert during[f"{n}worker_connections_active"] == 1
    assert during[f"{n}client_connection_opened_total"] == 2
    assert during[f"{n}active_connections_total"] in (1, 2)  # the open channel (the first one's detach may lag)
    assert after[f"{n}worker_connections_active"] == 0
    assert after[f"{n}active_connections_total"] == 0
    assert after[f'{n}worker_connection_closed_total{{reason="client_closed"}}'] == 1
    assert after[f'{n}worker_connection_closed_total{{reason="shutdown"}}'] == 0
    assert after[f"{n}worker_connection_duration_seconds_count"] == 1
    assert after[f"{n}client_connection_duration_seconds_count"] == 2
    assert not [k for k in after if sid in k]


async def test_sessions_off_routes_every_call_on_its_own(instances):
    async with running_gateway(instances, grpc_sessions=False) as gw:
        publish_routes(gw.holder, two_instances(instances))
        async with grpcio_channel(gw.port) as ch:
            replies = [await echo(ch) for _ in range(24)]
    assert {r.impl for r, _, _ in replies} == {"grpcio", "grpclib"}
    assert all("set-cookie" not in h for _, h, _ in replies)


# -- CORS on the gRPC port (spec part 2, section 9; NVCF's grpc-proxy middleware and director) --


async def test_a_preflight_on_the_grpc_port_is_answered_before_any_key_check(gateway):
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
        r = await c.options(
            f"http://127.0.0.1:{gateway.port}/fngate.echo.v1.Echo/Echo",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "post",
                "Access-Control-Request-Headers": "authorization,function-id, x-grpc-web",
            },
        )
        refused = await c.options(
            f"http://127.0.0.1:{gateway.port}/any/path",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "CONNECT"},
        )
    assert r.status_code == 200 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-allow-methods"] == "POST"
    assert r.headers["access-control-allow-headers"] == "Authorization, Function-Id, X-Grpc-Web"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-max-age"] == "3600"
    assert r.headers.get_list("vary") == ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]
    assert "access-control-expose-headers" not in r.headers
    # a method NVCF does not allow: 200 with the Vary fields only
    assert refused.status_code == 200 and "access-control-allow-origin" not in refused.headers
    assert len(refused.headers.get_list("vary")) == 3


async def test_a_browsers_http1_preflight_on_the_grpc_port_is_answered(gateway):
    """Browsers speak HTTP/1.1 to a cleartext port; NVCF's gRPC port takes HTTP/1.1 too."""
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.options(
            f"http://127.0.0.1:{gateway.port}/fngate.echo.v1.Echo/Echo",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
        )
    assert (r.http_version, r.status_code) == ("HTTP/1.1", 200)
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-max-age"] == "3600"


async def test_the_gateways_grpc_errors_carry_cors_fields_and_instance_answers_none(gateway, instances):
    publish_routes(gateway.holder, two_instances(instances))
    origin = ("origin", "https://app.example.com")
    async with grpcio_channel(gateway.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=[("function-id", F_TWO), ("authorization", "Bearer wrong"), origin])
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        trailers = list(await call.trailing_metadata())
        _, head, tail = await echo(ch, origin)
        call = grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=[("function-id", F_TWO), ("authorization", "Bearer wrong")])
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        without_origin = list(await call.trailing_metadata())
    assert (await call.code()).name == "UNAUTHENTICATED"
    assert ("access-control-allow-origin", "https://app.example.com") in trailers
    assert ("access-control-allow-credentials", "true") in trailers
    assert ("vary", "Origin") in trailers and ("vary", "Origin") in without_origin
    assert not any(k.startswith("access-control-") for k, _ in without_origin)
    # NVCF exposes no header on this port, and adds none to what the instance answers
    assert "access-control-expose-headers" not in dict(trailers)
    assert not any(k.startswith("access-control-") for k, _ in [*head.items(), *tail])


async def test_a_new_session_whose_instance_refuses_takes_another_once(gateway, instances):
    dead = Endpoint("dead-1", "127.0.0.1", free_port())
    publish_routes(gateway.holder, two_instances(instances, endpoints=(dead, Endpoint("live-1", "127.0.0.1", instances["grpclib"].port))))
    before = gateway.gw.metrics.retries
    for _ in range(8):  # eight sessions, eight picks of two: by chance none on the dead one 1 in 256
        async with grpcio_channel(gateway.port) as ch:
            replies = [await echo(ch) for _ in range(3)]
        assert {r.impl for r, _, _ in replies} == {"grpclib"}
        assert len({h["nvcf-reqid"] for _, h, _ in replies}) == 1  # the session went on on the live instance
    assert gateway.gw.metrics.retries > before
