"""Streaming both ways with flat memory, SSE event timing, client-disconnect
cancellation (the instance sees its connection close, the slot is freed)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import psutil

from .conftest import route

MB = 1024 * 1024


def rss() -> int:
    return psutil.Process().memory_info().rss


async def test_large_upload_and_download_with_bounded_memory(env, echo_up):
    env.publish([route(echo_up.port)])
    total = 200 * MB
    chunk = b"u" * MB

    async def body():
        for _ in range(total // MB):
            yield chunk

    async with httpx.AsyncClient(timeout=60) as c:
        before = rss()
        r = await c.post(f"{env.url}/upload", content=body(), headers=env.headers())
        assert r.status_code == 200 and r.json()["bodySize"] == total
        peak_up = rss() - before
        got = 0
        async with c.stream("GET", f"{env.url}/download?size={total}", headers=env.headers()) as resp:
            assert resp.headers["content-length"] == str(total)
            async for part in resp.aiter_raw():
                got += len(part)
        peak_down = rss() - before
    assert got == total
    # the gateway holds at most a few buffers per exchange, never the body
    assert peak_up < 60 * MB and peak_down < 60 * MB, (peak_up, peak_down)


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
