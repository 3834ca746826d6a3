"""End-to-end helpers: a management API client for a `fngate serve` subprocess,
and finding the process behind an instance's port (to kill it like a crash would)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import yaml


def write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


class Api:
    def __init__(self, sp) -> None:
        self.sp = sp
        self.headers = {"Authorization": f"Bearer {sp.admin_key}"}
        self.gateway = f"http://127.0.0.1:{sp.ready['http_port']}"

    def call(self, method: str, path: str, body=None) -> dict:
        r = httpx.request(method, self.sp.api_url + path, json=body, headers=self.headers, timeout=30)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def create(self, name: str, image: str = "fngate/echo", **extra) -> tuple[str, str]:
        body = {
            "name": name,
            "containerImage": image,
            "inferenceUrl": "/echo",
            "inferencePort": 8000,
            "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT1S", "expectedStatusCode": 200},
            **extra,
        }
        fn = self.call("POST", "/v2/nvcf/functions", body)["function"]
        return fn["id"], fn["versionId"]

    def deploy(self, fid: str, vid: str, *, min_i: int = 1, max_i: int = 1, concurrency: int = 1) -> dict:
        spec = {
            "gpu": "L40S",
            "instanceType": "NCP.GPU.L40S_1x",
            "minInstances": min_i,
            "maxInstances": max_i,
            "maxRequestConcurrency": concurrency,
        }
        return self.call("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", {"deploymentSpecifications": [spec]})

    def function(self, fid: str, vid: str) -> dict:
        return self.call("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]

    def status(self, fid: str, vid: str) -> str:
        return self.function(fid, vid)["status"]

    def ready_instances(self, fid: str, vid: str) -> list[dict]:
        return [i for i in self.function(fid, vid).get("activeInstances", []) if i["instanceStatus"] == "ACTIVE"]

    def wait(self, predicate, what: str, timeout: float = 30.0, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}\n--- serve output ---\n{self.sp.output()[-3000:]}")

    def wait_status(self, fid: str, vid: str, wanted: str, timeout: float = 30.0) -> None:
        seen: list[str] = []

        def check():
            s = self.status(fid, vid)
            if not seen or seen[-1] != s:
                seen.append(s)
            return s == wanted

        self.wait(check, f"{wanted} (seen {seen})", timeout)

    def invoke(self, fid: str, path: str = "/echo", timeout: float = 60.0, **kw) -> httpx.Response:
        headers = {**self.headers, "function-id": fid, **kw.pop("headers", {})}
        return httpx.post(self.gateway + path, headers=headers, timeout=timeout, **kw)

    async def ainvoke(self, client: httpx.AsyncClient, fid: str, path: str = "/echo", **kw) -> httpx.Response:
        headers = {**self.headers, "function-id": fid, **kw.pop("headers", {})}
        return await client.post(self.gateway + path, headers=headers, timeout=60, **kw)


def instance_pid(data_dir: Path, version_id: str, instance_id: str) -> int:
    """The pid of a local instance, from the port its log says it was started on."""
    log = (data_dir / "instances" / version_id / f"{instance_id}.log").read_text()
    port = int([ln for ln in log.splitlines() if ln.startswith("--- fngate: starting")][-1].split(" on port ")[1].split(":")[0])
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


async def gather_load(api: Api, fid: str, seconds: float, concurrency: int, path: str) -> list[int]:
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:

        async def worker():
            while time.monotonic() < deadline:
                statuses.append((await api.ainvoke(client, fid, path)).status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses
