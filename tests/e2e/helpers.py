"""End-to-end helpers: a config file for `fngate serve`, and finding the process behind an
instance's port (to kill it like a crash would). The API client is tests/support/serve_api.py."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import httpx
import yaml

from tests.support.serve_api import ServeApi


def write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def serve_replicas(fngate_serve, tmp_path: Path, redis_url: str, **sections) -> list:
    """Two `fngate serve` replicas ("a", "b") on one store, sharing the admin key and the
    secrets key as an operator runs them (FNGATE_ADMIN_KEY / FNGATE_SECRETS_KEY from the
    environment), with one local backend; `sections` add to the config file."""
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}], **sections)
    env = {"FNGATE_ADMIN_KEY": "nvapi-replicas-admin", "FNGATE_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    return [fngate_serve("--config", str(config), "--store", redis_url, env=env, data_dir=tmp_path / name) for name in ("a", "b")]


def instance_port(data_dir: Path, version_id: str, instance_id: str) -> int:
    """The port a local instance was started on, as its log says."""
    log = (data_dir / "instances" / version_id / f"{instance_id}.log").read_text()
    return int([ln for ln in log.splitlines() if ln.startswith("--- fngate: starting")][-1].split(" on port ")[1].split(":")[0])


def instance_pid(data_dir: Path, version_id: str, instance_id: str) -> int:
    """The pid of a local instance, from the port its log says it was started on."""
    port = instance_port(data_dir, version_id, instance_id)
    pid = pid_listening_on(port)
    assert pid, f"nothing listens on port {port} for instance {instance_id}"
    return pid


def pid_listening_on(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(parts[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}:
                    return int(pid)
        except OSError:
            continue
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def gather_load(api: ServeApi, fid: str, seconds: float, concurrency: int, path: str) -> list[int]:
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:

        async def worker():
            while time.monotonic() < deadline:
                statuses.append((await api.ainvoke(client, fid, path)).status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses
