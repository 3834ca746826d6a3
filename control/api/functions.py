"""Functions and versions: /v2/nvcf/functions/** (spec 4.1-4.3)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from .. import records
from ..records import now_iso
from ..states import State
from ..store.base import Conflict as StoreConflict
from ..store.base import Delete, Put, Record, StateStore
from .auth import require
from .context import ctx, json_response, read_json_object
from .errors import BadRequest, Conflict, NotFound
from .validation import validate_function, validate_function_update

LIST_SCOPES = ("list_functions", "list_functions_details")
VISIBILITIES = ("authorized", "private", "public")
_INSTANCE_INTERNALS = ("host", "port", "gpuSpecificationId")

routes = web.RouteTableDef()


def function_not_found(fid: str, vid: str | None = None) -> NotFound:
    if vid is None:
        return NotFound(f"Function id '{fid}': Not found")
    return NotFound(f"Function id '{fid}' version '{vid}': Not found")


async def load_version(store: StateStore, fid: str, vid: str) -> Record:
    rec = await store.get(records.FUNCTIONS, records.version_key(fid, vid))
    if rec is None:
        raise function_not_found(fid, vid)
    return rec


async def load_versions(store: StateStore, fid: str) -> list[Record]:
    recs = await store.list(records.FUNCTIONS, fid + "/")
    if not recs:
        raise function_not_found(fid)
    return recs


async def function_view(store: StateStore, doc: dict[str, Any]) -> dict[str, Any]:
    """The wire Function: the stored doc plus activeInstances from the `instances` kind."""
    instances = await store.list(records.INSTANCES, doc["versionId"] + "/")
    view = dict(doc)
    if instances:
        view["activeInstances"] = [{k: v for k, v in r.value.items() if k not in _INSTANCE_INTERNALS} for r in instances]
    return view


def _visibility(request: web.Request) -> set[str]:
    raw = request.query.getall("visibility", [])
    values = {v.strip() for item in raw for v in item.split(",") if v.strip()}
    unknown = values - set(VISIBILITIES)
    if unknown:
        raise BadRequest(
            f"Validation failed: field 'visibility' has unknown value(s) {', '.join(sorted(unknown))}; allowed: {', '.join(VISIBILITIES)}"
        )
    return values or set(VISIBILITIES)


async def _create(request: web.Request, fid: str) -> web.Response:
    c = ctx(request)
    body = await read_json_object(request)
    fields, secret_values = validate_function(body)
    vid = str(uuid.uuid4())
    doc = {"id": fid, "versionId": vid, "ncaId": c.nca_id, **fields, "status": State.INACTIVE.value, "createdAt": now_iso()}
    key = records.version_key(fid, vid)
    ops: list = [Put(records.FUNCTIONS, key, doc, expect=0)]
    if secret_values:
        ops.append(Put(records.SECRETS, key, {"secrets": secret_values}, expect=0))
    await c.store.commit(ops)
    return json_response({"function": doc})


@routes.post("/v2/nvcf/functions")
async def create_function(request: web.Request) -> web.Response:
    await require(request, "register_function")
    return await _create(request, str(uuid.uuid4()))


@routes.post("/v2/nvcf/functions/{functionId}/versions")
async def create_version(request: web.Request) -> web.Response:
    fid = request.match_info["functionId"]
    await require(request, "register_function", function_id=fid)
    await load_versions(ctx(request).store, fid)
    return await _create(request, fid)


@routes.get("/v2/nvcf/functions")
async def list_functions(request: web.Request) -> web.Response:
    principal = await require(request, *LIST_SCOPES)
    store = ctx(request).store
    # every function here belongs to this installation's account: visibility "private"
    if "private" not in _visibility(request):
        return json_response({"functions": []})
    docs = [r.value for r in await store.list(records.FUNCTIONS) if principal.covers(r.value["id"])]
    return json_response({"functions": [await function_view(store, d) for d in docs]})


@routes.get("/v2/nvcf/functions/ids")
async def list_function_ids(request: web.Request) -> web.Response:
    principal = await require(request, *LIST_SCOPES)
    if "private" not in _visibility(request):
        return json_response({"functionIds": []})
    ids = dict.fromkeys(r.value["id"] for r in await ctx(request).store.list(records.FUNCTIONS))
    return json_response({"functionIds": [i for i in ids if principal.covers(i)]})


@routes.get("/v2/nvcf/functions/{functionId}/versions")
async def list_versions(request: web.Request) -> web.Response:
    fid = request.match_info["functionId"]
    await require(request, *LIST_SCOPES, function_id=fid)
    store = ctx(request).store
    return json_response({"functions": [await function_view(store, r.value) for r in await load_versions(store, fid)]})


@routes.get("/v2/nvcf/functions/{functionId}/versions/{functionVersionId}")
async def get_version(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    await require(request, *LIST_SCOPES, function_id=fid)
    store = ctx(request).store
    rec = await load_version(store, fid, vid)
    return json_response({"function": await function_view(store, rec.value)})


@routes.put("/v2/nvcf/functions/{functionId}/versions/{functionVersionId}")
@routes.put("/v2/nvcf/metadata/functions/{functionId}/versions/{functionVersionId}")
async def update_version(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    await require(request, "update_function", function_id=fid)
    store = ctx(request).store
    rec = await load_version(store, fid, vid)
    updates = validate_function_update(await read_json_object(request))
    model_updates = updates.pop("modelUpdates", None)
    doc = {**rec.value, **updates}
    if model_updates:
        doc["models"] = _apply_model_updates(doc.get("models") or [], model_updates)
    try:
        await store.put(records.FUNCTIONS, records.version_key(fid, vid), doc, expect=rec.revision)
    except StoreConflict:
        raise Conflict("The function version changed while it was being updated; retry") from None
    return json_response({"function": await function_view(store, doc)})


def _apply_model_updates(models: list[dict], updates: list[dict]) -> list[dict]:
    by_name = {m["name"]: dict(m) for m in models}
    for i, mu in enumerate(updates):
        model = by_name.get(mu["modelName"])
        if model is None:
            raise BadRequest(f"Validation failed: field 'modelUpdates[{i}].modelName' names no model of this version: '{mu['modelName']}'")
        model["llmConfig"] = {**(model.get("llmConfig") or {}), **mu["llmConfig"]}
    return list(by_name.values())


@routes.delete("/v2/nvcf/functions/{functionId}/versions/{functionVersionId}")
async def delete_version(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    await require(request, "delete_function", function_id=fid)
    store = ctx(request).store
    rec = await load_version(store, fid, vid)
    key = records.version_key(fid, vid)
    # the version goes with everything that hangs off it, in one atomic commit
    ops: list = [
        Delete(records.FUNCTIONS, key, expect=rec.revision),
        Delete(records.DEPLOYMENTS, key),
        Delete(records.SECRETS, key),
    ]
    for kind in (records.INSTANCES, records.SCALE):
        ops += [Delete(kind, r.key) for r in await store.list(kind, vid + "/")]
    try:
        await store.commit(ops)
    except StoreConflict:
        raise Conflict("The function version changed while it was being deleted; retry") from None
    return web.Response(status=204)
