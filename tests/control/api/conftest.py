"""The management API on a real aiohttp server (loopback, free port) over a MemoryStore."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fngate.control.api import make_app
from fngate.control.loadboard import LoadBoard
from fngate.control.store.memory import MemoryStore

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

    @staticmethod
    def auth(key: str = ADMIN_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body=None, *, key: str | None = ADMIN_KEY, status: int | None = 200, **kw):
        headers = self.auth(key) if key is not None else {}
        resp = await self.client.request(method, path, json=body, headers=headers, **kw)
        data = await resp.json(content_type=None) if resp.status != 204 else None
        if status is not None:
            assert resp.status == status, (resp.status, data)
        return data

    async def problem(self, method: str, path: str, body=None, *, status: int, key: str | None = ADMIN_KEY, **kw) -> dict:
        headers = self.auth(key) if key is not None else {}
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

    async def key(self, *scopes: str, **extra) -> str:
        return (await self.call("POST", "/v1/keys", {"scopes": list(scopes), **extra}))["value"]


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
