"""The management API on a real aiohttp server (loopback, free port) over a MemoryStore."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fngate.control.api import make_app
from fngate.control.loadboard import LoadBoard
from fngate.control.store.memory import MemoryStore
from tests.support.keys import key_body, key_headers

ADMIN_KEY = "nvapi-test-admin-key"

CAPACITY = [
    {
        "name": "NCP.GPU.H100_1x",
        "gpu": "H100",
        "gpuCount": 1,
        "cpuCores": 16,
        "systemMemory": "128G",
        "gpuMemory": "80G",
        "total": 4,
        "free": 4,
        "backend": "local",
    },
    {
        "name": "NCP.GPU.L40S_1x",
        "gpu": "L40S",
        "gpuCount": 1,
        "cpuCores": 8,
        "systemMemory": "64G",
        "gpuMemory": "48G",
        "total": 8,
        "free": 8,
        "backend": "local",
    },
]

# the spec's example CreateFunctionRequest (section 4.3 shape)
EXAMPLE_FUNCTION = {
    "name": "my-model-function",
    "inferenceUrl": "/echo",
    "inferencePort": 8000,
    "containerImage": "nvcr.io/org/my_model_image:1.0",
    "containerEnvironment": [{"key": "LOG_LEVEL", "value": "INFO"}],
    "healthUri": "/health",
    "description": "an echo model",
    "tags": ["a", "b"],
    "secrets": [{"name": "api-key", "value": "s3cret"}],
}

SPEC = {"gpu": "H100", "instanceType": "NCP.GPU.H100_1x", "minInstances": 0, "maxInstances": 2}


class Api:
    def __init__(self, client: TestClient, store: MemoryStore, loadboard: LoadBoard) -> None:
        self.client = client
        self.store = store
        self.loadboard = loadboard
        self._keys = 0

    @staticmethod
    def auth(key: str = ADMIN_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body=None, *, key: str | None = ADMIN_KEY, status: int | None = 200, **kw):
        headers = {**(self.auth(key) if key is not None else {}), **kw.pop("headers", {})}
        resp = await self.client.request(method, path, json=body, headers=headers, **kw)
        data = await resp.json(content_type=None) if resp.status != 204 else None
        if status is not None:
            assert resp.status == status, (resp.status, data)
        return data

    async def problem(self, method: str, path: str, body=None, *, status: int, key: str | None = ADMIN_KEY, **kw) -> dict:
        headers = {**(self.auth(key) if key is not None else {}), **kw.pop("headers", {})}
        resp = await self.client.request(method, path, json=body, headers=headers, **kw)
        assert resp.status == status, (resp.status, await resp.text())
        assert resp.content_type == "application/problem+json"
        data = await resp.json(content_type=None)
        assert data["status"] == status and data["instance"] == resp.url.path and data["type"].startswith("urn:nv-boot:problem-details:")
        return data

    async def create_function(self, body=None, **overrides) -> dict:
        return (await self.call("POST", "/v2/nvcf/functions", {**(body or EXAMPLE_FUNCTION), **overrides}))["function"]

    async def deploy(self, fn: dict, *specs: dict) -> dict:
        body = {"deploymentSpecifications": list(specs or [SPEC])}
        return (await self.call("POST", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}", body))["deployment"]

    async def key(self, *scopes: str, resources: list[dict] | None = None, owner: str | None = None, key: str = ADMIN_KEY) -> str:
        """A new key with NVCF's create body (every key its own owner: at most 8 per owner)."""
        self._keys += 1
        headers = {**self.auth(key), **key_headers(owner or f"owner-{self._keys}@test")}
        resp = await self.client.post("/v1/keys", json=key_body(list(scopes), resources), headers=headers)
        data = await resp.json(content_type=None)
        assert resp.status == 200, data
        return data["value"]


@pytest.fixture
async def api():
    store = MemoryStore()
    board = LoadBoard()
    app = make_app(store, admin_key=ADMIN_KEY, loadboard=board, capacity=lambda: CAPACITY, max_body=64 * 1024)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield Api(client, store, board)
    finally:
        await client.close()


class Served:
    """A real `fngate serve` (SQLite or Redis store) and an httpx client for its APIs."""

    def __init__(self, sp) -> None:
        import httpx

        self.sp = sp
        self.admin = sp.admin_key
        self.http = httpx.Client(base_url=sp.api_url, timeout=30)
        self.gateway = f"http://127.0.0.1:{sp.ready['http_port']}"

    def request(self, method: str, path: str, body=None, *, key: str | None = None, headers: dict | None = None, **kw):
        sent = {"Authorization": f"Bearer {key or self.admin}", **(headers or {})}
        return self.http.request(method, path, json=body, headers=sent, **kw)

    def ok(self, method: str, path: str, body=None, *, status: int = 200, **kw):
        resp = self.request(method, path, body, **kw)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def problem(self, method: str, path: str, body=None, *, status: int, **kw) -> dict:
        resp = self.request(method, path, body, **kw)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        doc = resp.json()
        assert doc["status"] == status and doc["type"].startswith("urn:nv-boot:problem-details:")
        return doc

    def invoke(self, fid: str, key: str, path: str = "/echo", **kw):
        import httpx

        headers = {"Authorization": f"Bearer {key}", "function-id": fid, **kw.pop("headers", {})}
        return httpx.post(self.gateway + path, headers=headers, timeout=60, **kw)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, tmp_path_factory):
    """One `fngate serve` per store for a whole module (contract tests share it)."""
    from tests.conftest import start_serve

    extra: tuple[str, ...] = ()
    if request.param == "redis":
        import redis

        server = request.getfixturevalue("redis_server")
        with redis.Redis(host=server.host, port=server.port) as client:
            client.flushdb()
        extra = ("--store", server.url)
    sp = start_serve(tmp_path_factory.mktemp(f"serve-{request.param}"), *extra)
    s = Served(sp)
    try:
        yield s
    finally:
        s.http.close()
        sp.stop()
