"""Attack 7 of issue 13: slow clients must not hold a function's instance slots.

A request body that trickles in below the minimum rate is cut with 408 and its slot
freed; the requests of one HTTP/2 connection hold at most `max_slots_per_connection`
slots, the rest wait for their connection's earlier ones."""

from __future__ import annotations

import asyncio
import time

import h2.exceptions
import httpx
import pytest

from fngate.proxy.config import GatewayConfig

from .conftest import KEY, route
from .h2client import RawH2Client


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(
        http_port=0,
        grpc_port=0,
        admin_port=0,
        header_grace=0.5,
        client_body_idle_timeout=2,  # a byte every 0.5 s never trips it
        client_body_min_rate=100,
        client_body_rate_window=1,
        client_body_rate_grace=1,
        max_slots_per_connection=3,
    )


async def trickle(env, chunks: int) -> bytes:
    """A chunked POST that sends one byte every 0.5 s; what came back meanwhile."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    got = bytearray()

    async def read() -> None:  # read as it arrives: the close after the 408 may reset the socket
        try:
            while chunk := await reader.read(65536):
                got.extend(chunk)
        except ConnectionError:
            pass

    reading = asyncio.create_task(read())
    writer.write(
        b"POST /slow HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        % (env.host().encode(), KEY.encode())
    )
    try:
        for _ in range(chunks):
            await asyncio.sleep(0.5)
            if reading.done():
                break
            writer.write(b"1\r\na\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    await asyncio.wait_for(reading, 5)
    writer.close()
    return bytes(got)


async def test_a_trickling_body_is_cut_and_its_slot_freed(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    slow = asyncio.create_task(trickle(env, 16))  # 2 bytes/s, for 8 s
    await asyncio.sleep(0.3)  # it holds the function's only slot now
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{env.url}/after", headers=env.headers(**{"NVCF-POLL-SECONDS": "4"}))
    waited = time.monotonic() - started
    assert r.status_code == 200, r.status_code  # was 504: the slow POST kept the slot
    assert waited < 4
    reply = await slow
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:100]
    assert b"slower than 100 bytes/s" in reply


async def test_a_body_the_instance_reads_slowly_is_not_cut(env):
    """The rate is the client's: when the gateway's buffer is full, the instance sets the pace."""
    from aiohttp import web

    from .conftest import Upstream

    async def sip(request: web.Request) -> web.Response:
        await asyncio.sleep(3)  # takes nothing for three rate windows: the gateway's buffer fills
        size = 0
        while chunk := await request.content.read(65536):
            size += len(chunk)
        return web.json_response({"size": size})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/sip", sip)
    up = await Upstream(app).start()
    try:
        env.publish([route(up.port, max_concurrency=1)])
        body = b"x" * (1024 * 1024)
        async with httpx.AsyncClient(timeout=60) as c:
            r = await c.post(f"{env.url}/sip", content=body, headers=env.headers(**{"NVCF-POLL-SECONDS": "60"}))
        assert r.status_code == 200 and r.json() == {"size": len(body)}
    finally:
        await up.stop()


async def test_one_http2_connection_holds_at_most_its_cap_of_slots(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=4)])  # 4 slots; the cap is 3 per connection
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as hog, httpx.AsyncClient(timeout=30) as other:
        assert (await hog.get(f"{env.url}/warm", headers=env.headers())).status_code == 200  # one connection, known to be h2
        hogging = [asyncio.create_task(hog.get(f"{env.url}/x?delay=2", headers=env.headers())) for _ in range(8)]
        await asyncio.sleep(0.5)
        assert len(env.gw.connections) == 1
        started = time.monotonic()
        r = await other.get(f"{env.url}/y", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
        assert r.status_code == 200, r.status_code  # was 504: the 8 streams took all 4 slots and queued the rest first
        assert time.monotonic() - started < 1.5
        answers = await asyncio.gather(*hogging)
    assert [a.status_code for a in answers] == [200] * 8  # the ones past the cap waited their turn
    assert all(a.http_version == "HTTP/2" for a in answers)
    assert env.gw.limiter.capped_connections() == 0


async def test_a_trickling_http2_body_is_cut_and_its_slot_freed(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    client = RawH2Client(reader, writer)
    head = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/slow"), (b":authority", env.host().encode())]
    client.h2.send_headers(1, [*head, (b"authorization", b"Bearer " + KEY.encode())])
    client.flush()

    async def drip() -> None:
        for _ in range(16):
            await asyncio.sleep(0.5)
            try:
                client.h2.send_data(1, b"a")
            except h2.exceptions.ProtocolError:  # the stream was ended or reset
                return
            client.flush()

    dripping = asyncio.create_task(drip())
    try:
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"{env.url}/after", headers=env.headers(**{"NVCF-POLL-SECONDS": "4"}))
        assert r.status_code == 200, r.status_code  # was 504
        outcome = await client.outcome(1)
        assert outcome == ("response", b"408") or outcome[0] == "reset", outcome
    finally:
        dripping.cancel()
        writer.close()
