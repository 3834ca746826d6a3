"""Queue details: /v2/nvcf/queues/** (spec 4.5), read from the gateways' LoadBoard."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import records
from ..states import State
from .access import version_for, versions_for
from .auth import require
from .context import ctx, json_response
from .errors import BadRequest, NotFound

SCOPE = "queue_details"
QUEUED_STATES = frozenset({State.DEPLOYING.value, State.ACTIVE.value, State.DEGRADING.value, State.DEGRADED.value})
NOT_DEPLOYED = "Queue not found - Function is likely not deployed"

routes = web.RouteTableDef()


def _queue(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "functionVersionId": doc["versionId"],
        "functionName": doc["name"],
        "functionStatus": doc["status"],
        "queueDepth": ctx(request).loadboard.queue_depth(doc["versionId"]),
    }


@routes.get("/v2/nvcf/queues/functions/{functionId}")
async def function_queues(request: web.Request) -> web.Response:
    fid = request.match_info["functionId"]
    _, recs = await versions_for(request, fid, SCOPE)
    docs = [r.value for r in recs if r.value["status"] in QUEUED_STATES]
    if not docs:
        raise NotFound(NOT_DEPLOYED)
    return json_response({"functionId": fid, "queues": [_queue(request, d) for d in docs]})


@routes.get("/v2/nvcf/queues/functions/{functionId}/versions/{functionVersionId}")
async def version_queue(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    doc = (await version_for(request, fid, vid, SCOPE))[1].value
    if doc["status"] not in QUEUED_STATES:
        raise NotFound(NOT_DEPLOYED)
    return json_response({"functionId": fid, "queues": [_queue(request, doc)]})


@routes.get("/v2/nvcf/queues/{requestId}/position")
async def request_position(request: web.Request) -> web.Response:
    await require(request, SCOPE)
    request_id = request.match_info["requestId"]
    c = ctx(request)
    found = c.loadboard.position(request_id)
    if found is None:
        if c.loadboard.was_queued(request_id) is not None:  # tracked, but started or finished since
            raise BadRequest("Invocation request message is not in pending or in progress state")
        raise NotFound(f"Request id '{request_id}': Not found in any queue")
    vid, position = found
    function = next((r.value for r in await c.store.list(records.FUNCTIONS) if r.value["versionId"] == vid), None)
    if function is None:
        raise NotFound(f"Request id '{request_id}': its function version no longer exists")
    await version_for(request, function["id"], vid, SCOPE)
    return json_response({"functionId": function["id"], "functionVersionId": vid, "positionInQueue": min(position, 1000)})
