"""supportedGpus and clusterGroups (spec 4.6), derived from the backends' capacity."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiohttp import web

from .auth import require
from .context import ctx, json_response

routes = web.RouteTableDef()


@routes.get("/v2/nvcf/supportedGpus")
async def supported_gpus(request: web.Request) -> web.Response:
    await require(request, "register_function")
    pairs = dict.fromkeys((e["gpu"], e.get("backend", "")) for e in ctx(request).capacity())
    return json_response([{"gpu": gpu, "backend": backend or None} for gpu, backend in pairs])


@routes.get("/v2/nvcf/clusterGroups")
async def cluster_groups(request: web.Request) -> web.Response:
    await require(request, "list_cluster_groups", "register_function", "deploy_function")
    c = ctx(request)
    by_backend: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for e in c.capacity():
        by_backend[e.get("backend") or "local"][e["gpu"]].append(e)
    groups = []
    for backend, gpus in by_backend.items():
        groups.append(
            {
                "id": backend,
                "name": backend,
                "ncaId": c.nca_id,
                "authorizedNcaIds": [c.nca_id],
                "gpus": [
                    {
                        "name": gpu,
                        "instanceTypes": [
                            {
                                "name": t["name"],
                                "description": f"{t.get('gpuCount', 1)}x {gpu}, {t.get('cpuCores', '?')} CPU cores, {t.get('systemMemory', '?')} memory",
                                "default": i == 0,
                                "gpuCount": t.get("gpuCount"),
                                "total": t.get("total"),
                                "free": t.get("free"),
                            }
                            for i, t in enumerate(types)
                        ],
                    }
                    for gpu, types in gpus.items()
                ],
                "clusters": [{"id": backend, "name": backend}],
            }
        )
    return json_response({"clusterGroups": groups})
