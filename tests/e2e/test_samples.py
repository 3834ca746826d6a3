"""What `make run` gives a user: the four samples deployed and ACTIVE, and the
printed commands work when pasted (curl for echo and SSE, fngate invoke for gRPC)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_printed_commands_invoke_each_sample(fngate_serve):
    sp = fngate_serve(samples=True)
    if "http_port" not in sp.ready:
        pytest.skip("the gateway is not wired into fngate serve yet")
    deadline = time.monotonic() + 60
    while "fngate: sample functions:" not in sp.output():
        assert time.monotonic() < deadline, sp.output()
        time.sleep(0.2)
    time.sleep(0.3)
    out = sp.output()
    summary = re.search(r"fngate: sample functions: (.*)", out).group(1)
    assert summary.count("ACTIVE") == 4, summary
    block = out[out.index("fngate: sample functions:") :]
    commands = [ln.strip() for ln in block.splitlines()[1:] if ln.startswith("  ") and not ln.strip().startswith("#")]
    export, echo, sse, grpc, llm = commands[:5]
    env = {**os.environ, "FNGATE_KEY": sp.admin_key, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert export.startswith("export FNGATE_KEY=")

    def sh(cmd: str) -> str:
        done = subprocess.run(["bash", "-c", cmd], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    assert '"bodySize": 5' in sh(echo).replace('"bodySize":5', '"bodySize": 5')
    events = sh(sse)
    assert events.count("data: ") > 2 and "data: [DONE]" in events
    assert "hello" in sh(grpc)
    assert '"object":"chat.completion"' in sh(llm).replace(" ", "")

    # fngate invoke over HTTP and SSE, and the instance logs of a version
    gateway = f"--gateway http://127.0.0.1:{sp.ready['http_port']}"
    ids = dict(re.findall(r"(echo|sse|grpc-echo|llm) ([0-9a-f-]{36}) ACTIVE", summary))
    assert '"method": "POST"' in sh(f"fngate invoke {ids['echo']} {gateway} --path /echo -d hi").replace(
        '"method":"POST"', '"method": "POST"'
    )
    streamed = sh(
        f"fngate invoke {ids['sse']} {gateway} --path /v1/chat/completions --sse "
        """-d '{"messages":[{"role":"user","content":"hi"}],"stream":true,"tokens":3}'"""
    )
    assert streamed.count("data: ") == 4 and streamed.rstrip().endswith("data: [DONE]")
    failed = subprocess.run(
        ["bash", "-c", f"fngate invoke 00000000-0000-0000-0000-000000000000 {gateway} -d x"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode == 1 and "HTTP 404" in failed.stderr
    headers = {"Authorization": f"Bearer {sp.admin_key}"}
    echo_vid = httpx.get(f"{sp.api_url}/v2/nvcf/functions/{ids['echo']}/versions", headers=headers).json()["functions"][0]["versionId"]
    assert "echo listening on" in sh(f"fngate instance logs {echo_vid} --data-dir {sp.data_dir}")

    # a second start on the same data dir reuses the samples instead of registering them again
    assert sp.stop() == 0
    again = fngate_serve(samples=True, data_dir=sp.data_dir)
    deadline = time.monotonic() + 60
    while "fngate: sample functions:" not in again.output():
        assert time.monotonic() < deadline, again.output()
        time.sleep(0.2)
    listed = httpx.get(again.api_url + "/v2/nvcf/functions", headers={"Authorization": f"Bearer {again.admin_key}"}).json()
    assert sorted(f["name"] for f in listed["functions"]) == ["echo", "grpc-echo", "llm", "sse"]
