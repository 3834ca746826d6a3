"""Store documents as the management API writes them, for control-plane tests."""

from __future__ import annotations

import asyncio
import uuid

from fngate.control import records as R


def function_doc(fid: str, vid: str, *, image: str = "test/toy", status: str = "INACTIVE", **extra) -> dict:
    return {
        "id": fid,
        "versionId": vid,
        "ncaId": "fngate",
        "name": "toy",
        "status": status,
        "inferenceUrl": "/",
        "inferencePort": 8000,
        "containerImage": image,
        "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT1S", "expectedStatusCode": 200},
        "functionType": "DEFAULT",
        "createdAt": "2026-01-01T00:00:00Z",
        **extra,
    }


def gpu_spec(min_i: int = 1, max_i: int = 2, **extra) -> dict:
    return {
        "gpu": "L40S",
        "instanceType": "NCP.GPU.L40S_1x",
        "minInstances": min_i,
        "maxInstances": max_i,
        "maxRequestConcurrency": 1,
        "gpuSpecificationId": "gs-" + uuid.uuid4().hex[:8],
        **extra,
    }


async def deploy(store, *, image: str = "test/toy", specs: list | None = None, fn_extra: dict | None = None) -> tuple[str, str]:
    """Register a version and deploy it the way the API does (function DEPLOYING, or
    ACTIVE when every spec has minInstances 0)."""
    fid, vid = str(uuid.uuid4()), str(uuid.uuid4())
    specs = specs or [gpu_spec()]
    status = "ACTIVE" if all(s["minInstances"] == 0 for s in specs) else "DEPLOYING"
    key = R.version_key(fid, vid)
    await store.put(R.FUNCTIONS, key, function_doc(fid, vid, image=image, status=status, **(fn_extra or {})))
    await store.put(
        R.DEPLOYMENTS,
        key,
        {
            "functionId": fid,
            "functionVersionId": vid,
            "deploymentId": str(uuid.uuid4()),
            "functionName": "toy",
            "ncaId": "fngate",
            "deploymentSpecifications": specs,
        },
    )
    return fid, vid


async def status_of(store, fid: str, vid: str) -> str | None:
    rec = await store.get(R.FUNCTIONS, R.version_key(fid, vid))
    return rec.value["status"] if rec else None


async def wait_status(store, fid: str, vid: str, *wanted: str, timeout: float = 15.0) -> str:
    async def loop() -> str:
        while (s := await status_of(store, fid, vid)) not in wanted:
            await asyncio.sleep(0.02)
        return s

    try:
        return await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"status stayed {await status_of(store, fid, vid)}, wanted {wanted}") from None
