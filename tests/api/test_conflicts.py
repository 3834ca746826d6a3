"""A write that lost a race answers 409 and writes nothing (compare-and-set on the revision)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from control import records
from control.api import make_app
from control.store.memory import MemoryStore

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
        p = await api.problem("POST", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
                              {"deploymentSpecifications": [SPEC]}, status=409)
        assert p["title"] == "Conflict"
        assert await store.get(records.DEPLOYMENTS, key) is None
        assert (await store.get(records.FUNCTIONS, key)).value["status"] == "INACTIVE"

        store.before_commit = someone_else_deploys
        await api.problem("PUT", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", {"tags": ["mine"]}, status=409)
        assert (await store.get(records.FUNCTIONS, key)).value["tags"] == ["theirs"]
    finally:
        await client.close()
