"""Fixtures for the load-test suites: real sample function servers on free loopback ports.

Locust never runs inside this pytest process (gevent's monkey-patching, and an import
clash with kubernetes_asyncio): every run is a `python -m locust` or
`python -m fngate loadtest` subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(rb"listening on ([\d.]+):(\d+)")


@dataclass
class Sample:
    url: str
    hostport: str
    proc: subprocess.Popen


def _start(module: str, tmp: Path) -> Sample:
    log = tmp / f"{module.rsplit('.', 1)[-1]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = _LISTENING.search(log.read_bytes())
        if m:
            host, port = m.group(1).decode(), m.group(2).decode()
            return Sample(f"http://{host}:{port}", f"{host}:{port}", proc)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{module} did not start: {log.read_text(errors='replace')}")


@pytest.fixture(scope="package")
def samples(tmp_path_factory):
    """The echo, SSE and gRPC Echo sample functions, each a real server on its own free port."""
    tmp = tmp_path_factory.mktemp("samples")
    started: dict[str, Sample] = {}
    try:
        for name, module in (("echo", "fngate.backends.samples.echo"), ("sse", "fngate.backends.samples.sse"),
                             ("grpc", "fngate.backends.samples.grpc_echo")):  # fmt: skip
            started[name] = _start(module, tmp)
        yield started
    finally:
        for sample in started.values():
            sample.proc.terminate()
        for sample in started.values():
            try:
                sample.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sample.proc.kill()
                sample.proc.wait()
