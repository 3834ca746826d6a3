"""HTTP/1.1 connection handling: pipelining, HTTP/1.0, Connection: close, and
backpressure from a slow reader to the instance."""

from __future__ import annotations

import asyncio

import psutil

from .conftest import KEY, route

MB = 1024 * 1024


def req(env, path: str, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET %s HTTP/%s\r\nHost: %s\r\nAuthorization: Bearer %s\r\n%s\r\n" % (
        path.encode(),
        version,
        env.host().encode(),
        KEY.encode(),
        extra,
    )


async def read_response(reader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


async def test_pipelined_requests_are_answered_in_order(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(req(env, "/a?delay=0.2") + req(env, "/b") + req(env, "/c"))
    paths = []
    for _ in range(3):
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
        paths.append(body.split(b'"path": "')[1].split(b'"')[0])
    writer.close()
    assert paths == [b"/a", b"/b", b"/c"]


async def test_http10_and_connection_close(env, echo_up):
    env.publish([route(echo_up.port)])
    for data in (req(env, "/old", version=b"1.0"), req(env, "/close", b"Connection: close\r\n")):
        reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
        writer.write(data)
        reply = await asyncio.wait_for(reader.read(), 5)  # the gateway closes after the answer
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply.lower()


async def test_slow_reader_backpressures_the_instance(env, echo_up):
    """The client stops reading: the gateway stops reading from the instance instead of
    buffering the rest of a 300 MB response."""
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port, limit=64 * 1024)
    writer.write(req(env, f"/?size={300 * MB}"))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await reader.read(64 * 1024)
    before = psutil.Process().memory_info().rss
    await asyncio.sleep(1.0)  # not reading
    grown = psutil.Process().memory_info().rss - before
    got = 0
    while got < 8 * MB:  # reading again resumes the flow
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert chunk
        got += len(chunk)
    writer.close()
    assert grown < 20 * MB, grown


async def test_early_answer_before_the_body_is_read_does_not_poison_the_pool(env):
    """An instance that answers 413 without reading a large chunked upload: that
    connection must not be reused for the next request."""
    from aiohttp import web

    from .conftest import Upstream

    async def reject(request: web.Request) -> web.Response:
        if request.path == "/reject":
            return web.Response(status=413, text="too big")
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", reject)
    up = await Upstream(app).start()
    try:
        env.publish([route(up.port, max_concurrency=1)])
        import httpx

        # a raw client, so that a write failing once the gateway has answered cannot hide the answer
        reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
        writer.write(
            b"POST /reject HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
            % (env.host().encode(), KEY.encode())
        )

        async def slow_body() -> None:
            try:
                for _ in range(20):
                    writer.write(b"%x\r\n%s\r\n" % (65536, b"z" * 65536))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            except OSError:
                pass  # the gateway may stop reading and close the connection after the early answer

        sending = asyncio.create_task(slow_body())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            assert head.startswith(b"HTTP/1.1 413 "), head  # the instance's early answer reaches the client
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            writer.close()
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"{env.url}/next", headers=env.headers())
            assert r.status_code == 200 and r.json() == {"path": "/next"}
    finally:
        await up.stop()


async def test_client_that_stops_reading_is_cut_after_the_idle_timeout(echo_up):
    """A stalled reader cannot hold an instance slot forever."""
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.routing.snapshot import SnapshotHolder
    from fngate.proxy.server import Gateway

    from .conftest import Env

    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None, idle_timeout=0.5), holder, "gw-idle")
    await gw.start()
    try:
        env = Env(gw, holder)
        env.publish([route(echo_up.port)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.http_port, limit=64 * 1024)
        writer.write(req(env, f"/?size={300 * MB}"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        for _ in range(60):
            await asyncio.sleep(0.1)
            if not gw.limiter.in_flight:
                break
        assert not gw.limiter.in_flight  # the slot was freed
        writer.close()
    finally:
        await gw.stop(1)
