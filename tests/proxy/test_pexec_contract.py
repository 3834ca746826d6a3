"""pexec and exec as NVCF answers them (spec part 2, section 1), against a real gateway
and a real instance process (the `progress` sample: progress files, a 10 MiB result,
artifacts), over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import zipfile

import httpx
import pytest

from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.support.net import free_port

from .conftest import FID, KEY, Env, route

AUTH = {"Authorization": f"Bearer {KEY}"}
TEN_MIB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def progress_port():
    """The progress sample as its own process (what the local backend runs)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fngate.backends.samples.progress", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert b"listening" in line, line
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def penv(tmp_path, progress_port, echo_up):
    cfg = GatewayConfig(
        http_port=0,
        grpc_port=None,
        admin_port=None,
        output_dir=str(tmp_path / "response"),
        asset_dir=str(tmp_path / "inputAssets"),
        large_results_dir=str(tmp_path / "large"),
    )
    holder = SnapshotHolder()
    gw = Gateway(cfg, holder, "gw-pexec")
    await gw.start()
    env = Env(gw, holder)
    env.publish([route(progress_port, inference_url="/run"), route(echo_up.port, fid=ECHO_FID, vid=ECHO_VID, inference_url="/infer")])
    env.tmp = tmp_path
    yield env
    await gw.stop(grace=1)


ECHO_FID = "00000000-0000-0000-0000-0000000000e1"
ECHO_VID = "00000000-0000-0000-0000-0000000000e2"


@pytest.fixture(params=["http1", "http2"])
async def client(request):
    h2 = request.param == "http2"
    async with httpx.AsyncClient(http1=not h2, http2=h2, timeout=60, follow_redirects=False) as c:
        c.h2 = h2
        yield c


def pexec(env: Env, fid: str = FID) -> str:
    return f"{env.url}/v2/nvcf/pexec/functions/{fid}"


async def test_result_within_the_window_is_200_and_the_worker_gets_the_inference_url(penv, client):
    r = await client.post(pexec(penv, ECHO_FID) + "?secret=1", content=b"{}", headers=AUTH)
    assert r.status_code == 200 and r.headers["nvcf-status"] == "fulfilled"
    assert r.http_version == ("HTTP/2" if client.h2 else "HTTP/1.1")
    doc = r.json()
    assert doc["path"] == "/infer" and doc["query"] == ""  # the client's query string stays at the gateway
    # the instance has its per-request output directory while it runs
    assert doc["headers"]["NVCF-LARGE-OUTPUT-DIR"] == str(penv.tmp / "response" / r.headers["nvcf-reqid"])
    assert doc["headers"]["NVCF-ASSET-DIR"] == str(penv.tmp / "inputAssets" / r.headers["nvcf-reqid"])
    assert "nvcf-percent-complete" not in r.headers
    # ... and it is gone after the request
    assert not os.path.exists(doc["headers"]["NVCF-LARGE-OUTPUT-DIR"])


async def test_progress_ends_the_window_with_a_202_and_the_percentage(penv, client):
    job = {"steps": 4, "stepSeconds": 0.6}
    started = time.monotonic()
    r = await client.post(pexec(penv), json=job, headers={**AUTH, "NVCF-POLL-SECONDS": "20"})
    # the first progress update answers at once, long before the 20 s window
    assert r.status_code == 202 and time.monotonic() - started < 5
    assert r.headers["nvcf-status"] == "in-progress" and r.headers["content-type"] == "application/json"
    assert r.headers["nvcf-percent-complete"] == "25"
    rid = r.headers["nvcf-reqid"]
    assert r.json() == {"step": 1, "of": 4}
    seen = [25]
    while True:
        r = await client.get(f"{penv.url}/v2/nvcf/pexec/status/{rid}", headers={**AUTH, "NVCF-POLL-SECONDS": "20"})
        if r.status_code != 202:
            break
        seen.append(int(r.headers["nvcf-percent-complete"]))
        assert r.json()["step"] == seen[-1] // 25
    assert r.status_code == 200 and r.json()["done"] is True and r.json()["path"] == "/run"
    assert "nvcf-percent-complete" not in r.headers  # never on the final answer
    assert seen == sorted(seen) and seen[-1] <= 100 and len(seen) >= 2
    # delivered: NVCF purges the mapping, a poll again is 404 without a detail
    again = await client.get(f"{penv.url}/v2/nvcf/pexec/status/{rid}", headers=AUTH)
    assert again.status_code == 404 and again.json() == {"status": 404, "title": "Not Found"}


async def test_a_10_mib_result_is_a_302_to_a_zip_served_by_the_gateway(penv, client):
    job = {"resultBytes": TEN_MIB, "artifacts": {"images/out.txt": "artifact"}}
    r = await client.post(pexec(penv), json=job, headers=AUTH)
    assert r.status_code == 302 and r.headers["nvcf-status"] == "fulfilled"
    assert r.content == b"" and "nvcf-reqid" in r.headers
    rid = r.headers["nvcf-reqid"]
    location = r.headers["location"]
    assert location.startswith(f"{penv.url}/v2/nvcf/pexec/results/{rid}-")
    z = await client.get(location)  # no key: the Location is the capability, as a presigned URL
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert sorted(zf.namelist()) == sorted([f"{rid}.response", "images/out.txt"])
        body = zf.read(f"{rid}.response")
        assert len(body) == TEN_MIB and body[:3] == b"rrr"
        assert zf.read("images/out.txt") == b"artifact"
    # a guessed name is not served
    bad = await client.get(location[:-12] + "0" * 8 + ".zip")
    assert bad.status_code == 404


async def test_exactly_5_mib_is_sent_directly_and_artifacts_alone_go_large(penv, client):
    r = await client.post(pexec(penv), json={"resultBytes": 5 * 1024 * 1024}, headers=AUTH)
    assert r.status_code == 200 and len(r.content) == 5 * 1024 * 1024
    r = await client.post(pexec(penv), json={"artifacts": {"a.txt": "x"}}, headers=AUTH)
    assert r.status_code == 302


async def test_the_large_result_expires_after_35_minutes(penv, client):
    r = await client.post(pexec(penv), json={"resultBytes": 6 * 1024 * 1024}, headers=AUTH)
    name = r.headers["location"].rsplit("/", 1)[1]
    path = penv.tmp / "large" / name
    old = time.time() - 35 * 60 - 1
    os.utime(path, (old, old))
    assert (await client.get(r.headers["location"])).status_code == 404


async def test_a_result_not_polled_in_time_is_given_up_and_polls_get_504(penv, client, monkeypatch):
    from fngate.proxy.calls import pexec as pexec_mod

    monkeypatch.setattr(pexec_mod, "next_poll_within", lambda poll: 0.5)  # NVCF: max(2 x poll, 10 s)
    r = await client.post(pexec(penv), json={"steps": 1, "stepSeconds": 3}, headers={**AUTH, "NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 202
    rid = r.headers["nvcf-reqid"]
    await asyncio.sleep(1.0)
    r = await client.get(f"{penv.url}/v2/nvcf/pexec/status/{rid}", headers=AUTH)
    assert r.status_code == 504 and r.json()["detail"] == "worker did not acknowledge the status request."


async def test_a_non_uuid_request_id_is_400(penv, client):
    r = await client.get(f"{penv.url}/v2/nvcf/pexec/status/not-a-uuid", headers=AUTH)
    assert r.status_code == 400 and r.text.startswith("Invalid URL")
    r = await client.get(f"{penv.url}/v2/nvcf/pexec/status/{'a' * 32}", headers=AUTH)  # the simple form is a UUID
    assert r.status_code == 404


async def test_queued_past_the_window_gets_504_after_the_2s_grace(penv, client):
    penv.publish([route(status="ACTIVE", inference_url="/run")])  # no instance at all
    started = time.monotonic()
    r = await client.post(pexec(penv), headers={**AUTH, "NVCF-POLL-SECONDS": "1"})
    took = time.monotonic() - started
    assert r.status_code == 504 and r.headers["nvcf-status"] == "errored" and r.content == b""
    assert 2.9 <= took < 6  # the window (1 s) plus NVCF's 2 s


async def test_exec_wraps_the_answer_in_nvcfs_envelope(penv, client):
    url = f"{penv.url}/v2/nvcf/exec/functions/{FID}"
    r = await client.post(url, json={"requestBody": {"steps": 0}}, headers=AUTH)
    assert r.status_code == 200 and "nvcf-reqid" not in r.headers
    doc = r.json()
    assert doc["status"] == "fulfilled" and doc["percentComplete"] == 100 and doc["response"]["done"] is True
    assert set(doc) == {"reqId", "status", "percentComplete", "response"}
    # in progress: no percentage, no partial response; then poll exec/status
    r = await client.post(
        url, json={"requestHeader": {"pollDurationSeconds": 1}, "requestBody": {"steps": 2, "stepSeconds": 1}}, headers=AUTH
    )
    assert r.status_code == 202 and r.json() == {"reqId": r.json()["reqId"], "status": "in-progress"}
    rid = r.json()["reqId"]
    for _ in range(10):
        r = await client.get(f"{penv.url}/v2/nvcf/exec/status/{rid}", headers=AUTH)
        if r.status_code != 202:
            break
    assert r.status_code == 200 and r.json()["status"] == "fulfilled"
    # large: 200 with the Location as responseReference
    r = await client.post(url, json={"requestBody": {"resultBytes": 6 * 1024 * 1024}}, headers=AUTH)
    assert r.status_code == 200 and r.json()["responseReference"].startswith(f"{penv.url}/v2/nvcf/pexec/results/")
    # a body that is not JSON: 500 with NVCF's detail
    r = await client.post(url, json={"requestBody": {"resultBytes": 10}}, headers=AUTH)
    assert r.status_code == 500 and r.json()["detail"].startswith("invalid json in response body for request_id: ")


async def test_exec_bad_requests(penv, client):
    url = f"{penv.url}/v2/nvcf/exec/functions/{FID}"
    r = await client.post(url, content=b"{nope", headers=AUTH)
    assert r.status_code == 400
    r = await client.post(url, json={"requestHeader": {}}, headers=AUTH)
    assert r.status_code == 400 and "requestBody" in r.json()["detail"]
    r = await client.post(url, json={"requestHeader": {"pollDurationSeconds": -1}, "requestBody": {}}, headers=AUTH)
    assert r.status_code == 400 and r.json()["detail"] == "failed to parse poll duration"
    r = await client.post(url, json={"requestHeader": {"inputAssetReferences": ["x"]}, "requestBody": {}}, headers=AUTH)
    assert r.status_code == 500
    r = await client.post(url, content=b'{"requestBody": "' + b"a" * (2 * 1024 * 1024) + b'"}', headers=AUTH)
    assert r.status_code == 400 and r.json()["detail"].startswith("failed to collect request body")


def test_the_request_directories_default_to_nvcfs_paths():
    cfg = GatewayConfig()
    assert (cfg.output_dir, cfg.asset_dir) == ("/var/inf/response", "/var/inf/inputAssets")


async def test_a_client_cannot_set_the_workers_asset_ids_header(penv, client):
    spoof = {**AUTH, "function-id": ECHO_FID, "NVCF-FUNCTION-ASSET-IDS": "x", "NVCF_FUNCTION_ASSET_IDS": "y"}
    r = await client.post(f"{penv.url}/infer", content=b"{}", headers=spoof)
    assert r.status_code == 200
    assert not {k.lower().replace("_", "-") for k in r.json()["headers"]} & {"nvcf-function-asset-ids"}
    r = await client.post(pexec(penv, ECHO_FID), content=b"{}", headers={**AUTH, "NVCF-FUNCTION-ASSET-IDS": "x"})
    assert "nvcf-function-asset-ids" not in {k.lower() for k in r.json()["headers"]}
