"""One client for the management API and the gateway of a `fngate serve` subprocess
(tests/conftest.py's ServeProcess), for the end-to-end suites.

The calls block (httpx.Client); `ServeApi.aio` is the same client for async tests whose
event loop must keep running meanwhile (an in-process fake cluster, say): each call runs
in a thread.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httpx

from tests.support.waiting import wait_until

HEALTH = {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT1S", "expectedStatusCode": 200}


def gpu_spec(*, min_i: int = 1, max_i: int = 1, concurrency: int = 1, **extra: Any) -> dict:
    return {
        "gpu": "L40S",
        "instanceType": "NCP.GPU.L40S_1x",
        "minInstances": min_i,
        "maxInstances": max_i,
        "maxRequestConcurrency": concurrency,
        **extra,
    }


class ServeApi:
    def __init__(self, sp: Any, timeout: float = 30.0) -> None:
        self.sp = sp
        self.headers = {"Authorization": f"Bearer {sp.admin_key}"}
        self.gateway = f"http://127.0.0.1:{sp.ready['http_port']}"
        self.timeout = timeout

    @functools.cached_property
    def aio(self) -> AsyncServeApi:
        return AsyncServeApi(self)

    # -- management API -------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None) -> dict:
        r = httpx.request(method, self.sp.api_url + path, json=body, headers=self.headers, timeout=self.timeout)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def create_function(self, body: dict) -> tuple[str, str]:
        fn = self.call("POST", "/v2/nvcf/functions", body)["function"]
        return fn["id"], fn["versionId"]

    def create(self, name: str, image: str = "fngate/echo", **extra: Any) -> tuple[str, str]:
        body = {"name": name, "containerImage": image, "inferenceUrl": "/echo", "inferencePort": 8000, "health": HEALTH, **extra}
        return self.create_function(body)

    def deploy_specs(self, fid: str, vid: str, *specs: dict) -> dict:
        return self.call("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", {"deploymentSpecifications": list(specs)})

    def deploy(self, fid: str, vid: str, *, min_i: int = 1, max_i: int = 1, concurrency: int = 1) -> dict:
        return self.deploy_specs(fid, vid, gpu_spec(min_i=min_i, max_i=max_i, concurrency=concurrency))

    def function(self, fid: str, vid: str) -> dict:
        return self.call("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")["function"]

    def status(self, fid: str, vid: str) -> str:
        return self.function(fid, vid)["status"]

    def ready_instances(self, fid: str, vid: str) -> list[dict]:
        return [i for i in self.function(fid, vid).get("activeInstances", []) if i["instanceStatus"] == "ACTIVE"]

    # -- waiting --------------------------------------------------------------------------
    def wait(self, predicate: Any, what: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
        return wait_until(predicate, timeout, what, interval, detail=lambda: f"--- serve output ---\n{self.sp.output()[-3000:]}")

    def wait_status(self, fid: str, vid: str, wanted: str, timeout: float = 30.0) -> None:
        seen: list[str] = []

        def check() -> bool:
            s = self.status(fid, vid)
            if not seen or seen[-1] != s:
                seen.append(s)
            return s == wanted

        self.wait(check, f"{wanted} (seen {seen})", timeout)

    # -- gateway --------------------------------------------------------------------------
    def invoke(self, fid: str, path: str = "/echo", timeout: float = 60.0, **kw: Any) -> httpx.Response:
        headers = {**self.headers, "function-id": fid, **kw.pop("headers", {})}
        return httpx.post(self.gateway + path, headers=headers, timeout=timeout, **kw)

    async def ainvoke(self, client: httpx.AsyncClient, fid: str, path: str = "/echo", **kw: Any) -> httpx.Response:
        headers = {**self.headers, "function-id": fid, **kw.pop("headers", {})}
        return await client.post(self.gateway + path, headers=headers, timeout=60, **kw)


class AsyncServeApi:
    """`await api.aio.status(fid, vid)`: ServeApi's calls, each in a worker thread."""

    def __init__(self, sync: ServeApi) -> None:
        self.sync = sync

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.sync, name)
        if not callable(method):
            return method

        async def in_thread(*args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kw)

        return in_thread
