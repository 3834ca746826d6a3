"""Shared fixtures: a real redis-server on a free loopback port, and `fngate serve`
as a real subprocess on free ports.

    redis_server      session-wide RedisServer (host, port, url); skips with a clear
                      message when no redis-server binary is installed
    redis_url         a redis:// URL to a database flushed before the test
    fngate_serve      factory: await fngate_serve(*extra_args, env=..., data_dir=...)
                      -> ServeProcess (api_url, admin_key, ready dict, data_dir, proc);
                      every process it started is stopped after the test
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.redis import find_redis_server, redis_answers

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RedisServer:
    host: str
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; `make test` does this as root)")
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(5):  # a free port can be taken between probing and binding
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None and not redis_answers(port):
            time.sleep(0.02)
        if redis_answers(port):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("could not start redis-server on a free port")
    yield RedisServer("127.0.0.1", port, proc)
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def redis_url(redis_server):
    import redis

    with redis.Redis(host=redis_server.host, port=redis_server.port) as client:
        client.flushdb()
    return redis_server.url


@dataclass
class ServeProcess:
    proc: subprocess.Popen
    data_dir: Path
    ready: dict[str, Any]
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return self.ready["api_url"]

    @property
    def admin_key(self) -> str:
        return self.ready["admin_key"]

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int | None = None) -> int:
        """SIGTERM (or `sig`), wait, and return the exit code."""
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_serve(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 30.0, samples: bool = False
) -> ServeProcess:
    """Start `fngate serve` on free ports (0) and wait until its --ready-file appears.
    The sample functions are left out (--no-samples) unless `samples=True`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ready_file = data_dir / f"ready-{time.monotonic_ns()}.json"
    log_path = data_dir / f"serve-{time.monotonic_ns()}.log"
    args = [
        sys.executable,
        "-m",
        "fngate",
        "serve",
        "--data-dir",
        str(data_dir),
        "--ready-file",
        str(ready_file),
        "--api-port",
        "0",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--admin-port",
        "0",
        *(() if samples else ("--no-samples",)),
        *extra,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if env is None or "FNGATE_ADMIN_KEY" not in env:
        full_env.pop("FNGATE_ADMIN_KEY", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO))
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"fngate serve exited with {proc.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"fngate serve not ready after {timeout}s:\n{log_path.read_text()}")
        time.sleep(0.05)
    return ServeProcess(proc, data_dir, json.loads(ready_file.read_text()), log_path, args)


@pytest.fixture
def fngate_serve(tmp_path):
    started: list[ServeProcess] = []

    def start(*extra: str, env: dict[str, str] | None = None, data_dir: Path | None = None, samples: bool = False) -> ServeProcess:
        sp = start_serve(data_dir or tmp_path / "fngate", *extra, env=env, samples=samples)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()
