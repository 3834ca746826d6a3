"""Retries, cancellation while queued, 100-continue, SSE keep-alive comments while queued."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.support.net import free_port
from tests.support.waiting import wait_for

from .conftest import FID, VID, Env, route


async def test_refused_instance_is_retried_once_on_another(env, echo_up):
    dead = free_port()  # nothing listens there
    env.publish([route(dead, echo_up.port)])
    async with httpx.AsyncClient(timeout=30) as c:
        # whichever instance is picked, every request is answered by the live one
        for _ in range(8):
            r = await c.post(f"{env.url}/", content=b"body", headers=env.headers())
            assert r.status_code == 200 and r.json()["bodySize"] == 4
        # drive the choice: with a request holding a slot of the live instance, the less
        # loaded one, the dead one, is picked; refused, the request is retried once, on the live one
        holding = asyncio.create_task(c.get(f"{env.url}/?delay=1", headers=env.headers()))
        await wait_for(lambda: env.gw.limiter.in_flight.get(f"{VID}-1") == 1, what="a slot held on the live instance")
        retries = env.gw.metrics.retries  # (the holding request may have been retried itself)
        r = await c.post(f"{env.url}/", content=b"body", headers=env.headers())
        assert r.status_code == 200 and r.json()["bodySize"] == 4
        assert env.gw.metrics.retries == retries + 1
        assert (await holding).status_code == 200
    env.publish([route(dead)])
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/", headers=env.headers())
    assert r.status_code == 502 and r.json()["status"] == 502


async def test_reset_before_response_is_retried(env, echo_up):
    """An instance that accepts and closes at once (before any response byte)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setblocking(False)
    loop = asyncio.get_running_loop()

    async def slam():
        while True:
            conn, _ = await loop.sock_accept(srv)
            conn.close()

    task = asyncio.create_task(slam())
    try:
        env.publish([route(srv.getsockname()[1])])
        async with httpx.AsyncClient() as c:
            r = await c.get(f"{env.url}/", headers=env.headers())
        assert r.status_code == 502  # retried once (same instance: the only one), then given up
        assert env.gw.metrics.retries == 1
    finally:
        task.cancel()
        srv.close()


async def test_disconnect_while_queued_leaves_the_queue(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        busy = asyncio.create_task(c.get(f"{env.url}/?delay=3", headers=env.headers()))
        await wait_for(lambda: sum(env.gw.limiter.in_flight.values()) == 1, what="the busy request on the instance")
        queued = asyncio.create_task(c.get(f"{env.url}/", headers=env.headers()))
        await wait_for(lambda: env.gw.load_report().versions[VID].queue_depth == 1, what="the second request in the queue")
        queued.cancel()
        await wait_for(lambda: env.gw.load_report().versions[VID].queue_depth == 0, what="the cancelled request out of the queue")
        assert not busy.done()  # it left the queue because it was cancelled, not because the slot came free
        assert (await busy).status_code == 200
    stats = (await httpx.AsyncClient().get(f"http://127.0.0.1:{echo_up.port}/stats")).json()
    assert stats["started"] == 1  # the cancelled request never reached the instance


async def test_expect_100_continue(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer nvapi-test-key\r\n"
        b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n" % env.host().encode()
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")).split(b":")[1])
    body = await reader.readexactly(length)
    writer.close()
    assert b'"bodySize": 5' in body


async def test_endpoint_in_flight_in_load_reports(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        t = asyncio.create_task(c.get(f"{env.url}/?delay=0.4", headers=env.headers()))
        await wait_for(lambda: env.gw.load_report().versions.get(VID), what="the request on the instance")
        assert env.gw.load_report().versions[VID].endpoint_in_flight == {f"{VID}-0": 1}
        await t
    assert env.gw.load_report().versions[VID].endpoint_in_flight == {f"{VID}-0": 0}


async def test_a_busy_instance_the_table_dropped_is_still_reported_until_its_request_ends(env, echo_up):
    """A stream runs on an instance when a new routing table leaves it out (a leader's
    hand-over rewrites the instance docs): the load report must still count it, or the
    control plane reads it as drained and stops it under the stream (the replica
    hand-over test cut streams so, now and then). Once the request ended it is gone."""
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        t = asyncio.create_task(c.get(f"{env.url}/?delay=0.6", headers=env.headers()))
        await wait_for(lambda: env.gw.load_report().versions.get(VID), what="the request on the instance")
        env.publish([route(fid=FID, vid=VID)])  # the version stays, its instance is no longer listed
        assert env.gw.load_report().versions[VID].endpoint_in_flight == {f"{VID}-0": 1}
        assert (await t).status_code == 200
    assert env.gw.load_report().versions[VID].endpoint_in_flight == {}


@pytest.fixture
async def keepalive_env():
    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None, sse_queue_keepalive=0.1), holder, "gw-ka")
    await gw.start()
    yield Env(gw, holder)
    await gw.stop(1)


async def test_sse_keepalive_comments_while_queued(keepalive_env, sse_up):
    env = keepalive_env
    env.publish([route(status="ACTIVE")])  # cold: no instance yet
    lines = []
    async with (
        httpx.AsyncClient(timeout=30) as c,
        c.stream(
            "POST",
            f"{env.url}/v1/chat/completions",
            json={"stream": True, "tokens": 3, "interval": 0},
            headers=env.headers(Accept="text/event-stream"),
        ) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        it = r.aiter_lines()
        async for line in it:
            lines.append(line)
            if line == ": keep-alive" and lines.count(": keep-alive") == 2:
                env.publish([route(sse_up.port)])  # the instance comes up
            if line == "data: [DONE]":
                break
    data = [ln for ln in lines if ln.startswith("data: {")]
    assert lines.count(": keep-alive") >= 2 and len(data) == 3


class RawUpstream:
    """An instance that answers every request with fixed bytes, then closes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.reply)
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()


@pytest.mark.parametrize(
    "reply,status,body",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end", 200, b"until the end"),
        (b"HTTP/1.0 201 Created\r\n\r\nold style", 201, b"old style"),
        (b"NOT HTTP AT ALL\r\n\r\n", 502, None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntruncated", None, None),
    ],
)
async def test_unusual_instance_responses(env, reply, status, body):
    up = RawUpstream(reply)
    port = await up.start()
    try:
        env.publish([route(port)])
        async with httpx.AsyncClient() as c:
            if status is None:  # cut mid-body: the client must see an incomplete response, not a short success
                with pytest.raises(httpx.HTTPError):
                    await c.get(f"{env.url}/", headers=env.headers())
                return
            r = await c.get(f"{env.url}/", headers=env.headers())
        assert r.status_code == status
        if body is not None:
            assert r.content == body
        else:
            assert r.json()["status"] == 502
    finally:
        await up.stop()
