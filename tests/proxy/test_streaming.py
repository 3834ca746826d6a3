"""Streaming both ways with flat gateway memory, SSE events passed on one by one,
client-disconnect cancellation (the instance sees its connection close, the slot is freed)."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from fngate.bench.fngate import GatewayProcess, invoke_headers
from fngate.bench.fngate import Upstream as BenchUpstream

from .conftest import route

MB = 1024 * 1024


class PeakRss:
    """The largest RSS of a process, sampled every few milliseconds while a transfer runs."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.peak = 0
        self._task: asyncio.Task | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.rss())
            await asyncio.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.peak = self.proc.rss()
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.proc.rss())


async def test_large_upload_and_download_with_bounded_memory(echo_up, tmp_path):
    """The gateway in its own process (so only its memory is counted, not this process's
    client and instance): 64 MB each way leave its RSS flat while they pass, and where it
    was once they are done. Holding a body would cost it 64 MB."""
    gateway = await asyncio.to_thread(GatewayProcess, [BenchUpstream("echo", "127.0.0.1", echo_up.port)], None, tmp_path, tmp_path)
    url, headers = f"http://127.0.0.1:{gateway.port}", invoke_headers("echo")
    total = 64 * MB
    chunk = b"u" * MB

    async def body(size: int):
        for _ in range(size // MB):
            yield chunk

    async def upload(c: httpx.AsyncClient, size: int) -> None:
        r = await c.post(f"{url}/upload", content=body(size), headers=headers)
        assert r.status_code == 200 and r.json()["bodySize"] == size

    async def download(c: httpx.AsyncClient, size: int) -> int:
        got = 0
        async with c.stream("GET", f"{url}/download?size={size}", headers=headers) as resp:
            assert resp.headers["content-length"] == str(size)
            async for part in resp.aiter_raw():
                got += len(part)
        return got

    try:
        async with httpx.AsyncClient(timeout=120) as c:
            await upload(c, 8 * MB)  # warm up: connections, buffers, lazily imported code
            assert await download(c, 8 * MB) == 8 * MB
            before = gateway.proc.rss()
            with PeakRss(gateway.proc) as up:
                await upload(c, total)
            with PeakRss(gateway.proc) as down:
                assert await download(c, total) == total
            after = gateway.proc.rss()
    finally:
        await asyncio.to_thread(gateway.stop)
    growth = {"peak up": up.peak - before, "peak down": down.peak - before, "end": after - before}
    # the gateway holds at most a few buffers per exchange, never the body, and keeps none of it
    assert growth["peak up"] < 32 * MB and growth["peak down"] < 32 * MB, growth
    assert growth["end"] < 8 * MB, growth


async def test_chunked_upload_and_content_length_upload(env, echo_up):
    env.publish([route(echo_up.port)])

    async def gen():
        yield b"a" * 1000
        await asyncio.sleep(0.05)
        yield b"b" * 2000

    async with httpx.AsyncClient() as c:
        r = await c.put(f"{env.url}/chunked", content=gen(), headers=env.headers())
        assert r.json()["bodySize"] == 3000 and r.json()["method"] == "PUT"
        r = await c.post(f"{env.url}/cl", content=b"x" * 70000, headers=env.headers())
        assert r.json()["bodySize"] == 70000


async def test_sse_events_arrive_as_written(env, sse_up):
    env.publish([route(sse_up.port)])
    events = []
    async with (
        httpx.AsyncClient(timeout=30) as c,
        c.stream(
            "POST",
            f"{env.url}/v1/chat/completions",
            json={"stream": True, "tokens": 12, "interval": 0.05},
            headers=env.headers(Accept="text/event-stream"),
        ) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["nvcf-status"] == "fulfilled"
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                events.append("DONE")
                continue
            events.append(orjson.loads(line[6:])["seq"])
    assert events == list(range(12)) + ["DONE"]


async def test_sse_event_reaches_the_client_before_the_next_is_written(env, lockstep_up):
    """Nothing is held back or batched: the instance writes each event only after the
    client has read the one before (LockstepSse)."""
    env.publish([route(lockstep_up.port)])
    lines = []
    async with (
        httpx.AsyncClient(timeout=60) as c,
        c.stream("POST", f"{env.url}/v1/chat/completions", headers=env.headers(Accept="text/event-stream")) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
                lockstep_up.lockstep.client_saw(line)
    assert lines == [f"data: {n}" for n in range(5)] + ["data: [DONE]"]


async def test_client_disconnect_cancels_the_upstream_and_frees_the_slot(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    async with httpx.AsyncClient() as c:
        task = asyncio.create_task(c.get(f"{env.url}/slow?delay=5", headers=env.headers()))
        await asyncio.sleep(0.3)
        assert env.gw.limiter.in_flight  # the request holds a slot
        task.cancel()
    stats = None
    async with httpx.AsyncClient() as c:
        for _ in range(40):
            await asyncio.sleep(0.05)
            stats = (await c.get(f"http://127.0.0.1:{echo_up.port}/stats")).json()
            if stats["cancelled"] >= 1:
                break
        assert stats["cancelled"] == 1 and stats["active"] == 0
        assert not env.gw.limiter.in_flight
        # the slot is free again: a new request is served at once
        r = await c.get(f"{env.url}/", headers=env.headers())
        assert r.status_code == 200


async def test_sse_client_disconnect_mid_stream(env, sse_up):
    env.publish([route(sse_up.port)])
    async with (
        httpx.AsyncClient() as c,
        c.stream(
            "POST", f"{env.url}/v1/chat/completions", json={"stream": True, "tokens": 1000, "interval": 0.02}, headers=env.headers()
        ) as r,
    ):
        seen = 0
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 3:
                    break
    async with httpx.AsyncClient() as c:
        for _ in range(40):
            await asyncio.sleep(0.05)
            stats = (await c.get(f"http://127.0.0.1:{sse_up.port}/stats")).json()
            if stats["cancelled"]:
                break
    assert stats["cancelled"] == 1 and stats["finished"] == 0
    assert env.gw.metrics.sse_open == 0
