"""HTTP/2 cleartext (prior knowledge) on the same port, and on the gRPC port."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import h2.config
import h2.connection
import h2.events
import httpx
import orjson
import pytest

from .conftest import KEY, route

MB = 1024 * 1024


def h2_client(**kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=30, **kw)


async def test_h2c_request_is_forwarded(env, echo_up):
    env.publish([route(echo_up.port)])
    async with h2_client() as c:
        r = await c.post(f"{env.url}/h2/path?z=1", content=b"hello", headers=env.headers())
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200 and r.headers["nvcf-status"] == "fulfilled"
        doc = r.json()
        assert doc["path"] == "/h2/path" and doc["query"] == "z=1" and doc["bodySize"] == 5
        got = {k.lower(): v for k, v in doc["headers"].items()}
        assert got["nvcf-reqid"] == r.headers["nvcf-reqid"] and "authorization" not in got
        # errors are the same problem+json
        r = await c.get(f"{env.url}/", headers=env.headers(key="wrong"))
        assert r.status_code == 401 and r.json()["status"] == 401


async def test_h2c_many_streams_and_large_bodies(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=64)])
    async with h2_client() as c:
        rs = await asyncio.gather(*(c.get(f"{env.url}/?n={i}", headers=env.headers()) for i in range(50)))
        assert sorted(r.json()["query"] for r in rs) == sorted(f"n={i}" for i in range(50))
        body = b"b" * (8 * MB)
        r = await c.put(f"{env.url}/big", content=body, headers=env.headers())
        assert r.json()["bodySize"] == len(body)
        got = 0
        async with c.stream("GET", f"{env.url}/?size={20 * MB}", headers=env.headers()) as resp:
            async for part in resp.aiter_raw():
                got += len(part)
        assert got == 20 * MB


async def test_h2c_sse_streams_event_by_event(env, sse_up, lockstep_up):
    env.publish([route(sse_up.port)])
    seqs = []
    async with (
        h2_client() as c,
        c.stream(
            "POST", f"{env.url}/v1/chat/completions", json={"stream": True, "tokens": 8, "interval": 0.05}, headers=env.headers()
        ) as r,
    ):
        assert r.http_version == "HTTP/2"
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                seqs.append(orjson.loads(line[6:])["seq"])
    assert seqs == list(range(8))
    # event by event: the instance writes each event only after the client read the one before
    env.publish([route(lockstep_up.port)])
    lines = []
    async with h2_client() as c, c.stream("POST", f"{env.url}/v1/chat/completions", headers=env.headers()) as r:
        assert r.http_version == "HTTP/2"
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
                lockstep_up.lockstep.client_saw(line)
    assert lines == [f"data: {n}" for n in range(5)] + ["data: [DONE]"]


async def test_h2_stream_reset_cancels_the_upstream(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":path", "/?delay=5"), (":scheme", "http"), (":authority", env.host()), ("authorization", f"Bearer {KEY}")],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    await asyncio.sleep(0.3)
    conn.reset_stream(1)
    # a second stream on the same connection still works
    conn.send_headers(
        3,
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", env.host()), ("authorization", f"Bearer {KEY}")],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    status = None
    while status is None:
        for ev in conn.receive_data(await asyncio.wait_for(reader.read(65536), 5)):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 3:
                status = dict(ev.headers)[b":status"]
        writer.write(conn.data_to_send())
    writer.close()
    assert status == b"200"
    async with httpx.AsyncClient() as c:
        for _ in range(40):
            stats = (await c.get(f"http://127.0.0.1:{echo_up.port}/stats")).json()
            if stats["cancelled"]:
                break
            await asyncio.sleep(0.05)
    assert stats["cancelled"] == 1


async def test_grpc_port_speaks_http2_only(env, echo_up):
    env.publish([route(echo_up.port)])
    async with h2_client() as c:
        r = await c.get(f"http://127.0.0.1:{env.gw.grpc_port}/", headers=env.headers())
    assert r.status_code == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_http1_and_http2_prior_knowledge(env, echo_up):
    env.publish([route(echo_up.port)])
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-s",
            flag,
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
            "-H",
            f"Host: {env.host()}",
            "-H",
            f"Authorization: Bearer {KEY}",
            "--data-binary",
            "payload",
            f"{env.url}/curl",
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        body, _, meta = out.decode().rpartition("\n")
        assert meta == ("1.1 200" if flag == "--http1.1" else "2 200")
        assert orjson.loads(body)["bodySize"] == 7
