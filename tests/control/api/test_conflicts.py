"""A write that lost a race answers 409 and writes nothing (compare-and-set on the revision)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from fngate.control import records
from fngate.control.api import make_app
from fngate.control.store.memory import MemoryStore

from .conftest import ADMIN_KEY, CAPACITY, EXAMPLE_FUNCTION, SPEC, Api


class RacingStore(MemoryStore):
    """Runs `before_commit` (another writer) once, between a handler's read and its commit."""

    before_commit = None

    async def commit(self, ops):
        hook, self.before_commit = self.before_commit, None
        if hook is not None:
            await hook()
        return await super().commit(ops)


async def test_concurrent_change_gives_409_and_no_partial_write():
    store = RacingStore()
    client = TestClient(TestServer(make_app(store, admin_key=ADMIN_KEY, capacity=lambda: CAPACITY), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        api = Api(client, store, None)
        fn = await api.create_function(EXAMPLE_FUNCTION)
        key = records.version_key(fn["id"], fn["versionId"])

        async def someone_else_deploys():
            rec = await store.get(records.FUNCTIONS, key)
            await store.put(records.FUNCTIONS, key, {**rec.value, "tags": ["theirs"]})

        store.before_commit = someone_else_deploys
        p = await api.problem(
            "POST",
            f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
            {"deploymentSpecifications": [SPEC]},
            status=409,
        )
        assert p["title"] == "Conflict"
        assert await store.get(records.DEPLOYMENTS, key) is None
        assert (await store.get(records.FUNCTIONS, key)).value["status"] == "INACTIVE"

        store.before_commit = someone_else_deploys
        await api.problem("PUT", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", {"tags": ["mine"]}, status=409)
        assert (await store.get(records.FUNCTIONS, key)).value["tags"] == ["theirs"]
    finally:
        await client.close()


class BrokenStore(MemoryStore):
    async def list(self, kind, prefix=""):
        raise RuntimeError("disk on fire")


async def test_an_unexpected_failure_is_a_500_problem_without_internals():
    client = TestClient(TestServer(make_app(BrokenStore(), admin_key=ADMIN_KEY), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        resp = await client.get("/v2/nvcf/functions", headers=Api.auth())
        assert resp.status == 500 and resp.content_type == "application/problem+json"
        body = await resp.json(content_type=None)
        assert body["title"] == "Internal Server Error" and "disk on fire" not in body["detail"]
    finally:
        await client.close()
