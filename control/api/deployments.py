"""Deployments: /v2/nvcf/deployments/** (spec 4.4).

The API records desired state only: the deployment doc and the function's lifecycle
state (control.states). The reconciler starts and stops instances from there, and
finishes a graceful undeploy by deleting the doc it left marked `graceful`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .. import records
from ..records import now_iso
from ..states import Event, InvalidTransition, next_state
from ..store.base import Conflict as StoreConflict
from ..store.base import Delete, Op, Put, Record, StateStore
from .access import version_for
from .auth import require
from .context import ctx, json_response, read_json_object
from .deploy_validation import UPDATABLE_BY_PUT, Capacity, validate_deployment_request, validate_patch, validate_put_spec
from .errors import BadRequest, Conflict, NotFound
from .functions import function_view
from .params import query_bool

SCOPE = "deploy_function"
GRACEFUL_WAIT = "Wait for current deployment to be gracefully completed and removed."

routes = web.RouteTableDef()


def _ids(request: web.Request) -> tuple[str, str, str]:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    return fid, vid, records.version_key(fid, vid)


def _capacity(request: web.Request) -> Capacity:
    c = ctx(request)
    return Capacity(c.capacity(), c.backends)


def deployment_view(doc: dict[str, Any], function_status: str) -> dict[str, Any]:
    view = {k: v for k, v in doc.items() if k != "graceful"}
    view["functionStatus"] = function_status
    return view


async def _load_deployment(store: StateStore, fid: str, vid: str) -> Record:
    rec = await store.get(records.DEPLOYMENTS, records.version_key(fid, vid))
    if rec is None:
        raise NotFound(f"Deployment for function id '{fid}' version '{vid}': Not found")
    return rec


async def _by_deployment_id(store: StateStore, deployment_id: str) -> Record:
    for rec in await store.list(records.DEPLOYMENTS):
        if rec.value.get("deploymentId") == deployment_id:
            return rec
    raise NotFound(f"Deployment id '{deployment_id}': Not found")


UNDEPLOY_ATTEMPTS = 5


async def _commit(store: StateStore, ops: Sequence[Op]) -> None:
    try:
        await store.commit(ops)
    except StoreConflict:
        raise Conflict("The function or its deployment changed concurrently; retry") from None


def _require_container_image(function: dict[str, Any], label: str) -> None:
    """Every fngate backend runs a container image (or its local catalog stand-in);
    none can install a Helm chart or assemble a models-only Triton container, so say
    so before anything is recorded rather than fail later as an ERROR state."""
    if function.get("helmChart"):
        raise BadRequest(
            f"{label}: Helm-chart functions cannot be deployed by fngate: no backend installs Helm charts. "
            "Register the function with a containerImage instead."
        )
    if not function.get("containerImage"):
        raise BadRequest(
            f"{label}: Functions without a containerImage (models only) cannot be deployed by fngate. "
            "Register the function with a containerImage instead."
        )


@routes.post("/v2/nvcf/deployments/functions/{functionId}/versions/{functionVersionId}")
async def create_deployment(request: web.Request) -> web.Response:
    fid, vid, key = _ids(request)
    _, fn = await version_for(request, fid, vid, SCOPE, own_only=True)
    store = ctx(request).store
    label = f"Function id '{fid}', version '{vid}'"
    _require_container_image(fn.value, label)
    specs = validate_deployment_request(await read_json_object(request), _capacity(request), label)
    for spec in specs:  # refuse what the backend can never run, rather than sit ACTIVE at zero
        reason = ctx(request).preflight(fn.value, spec)
        if reason:
            raise BadRequest(f"{label}: cannot be deployed on {spec['gpu']} / {spec['instanceType']}: {reason}")
    existing = await store.get(records.DEPLOYMENTS, key)
    if existing is not None and existing.value.get("graceful"):
        raise BadRequest(GRACEFUL_WAIT)
    from_zero = all(s["minInstances"] == 0 for s in specs)
    try:
        status = next_state(fn.value["status"], Event.DEPLOY_FROM_ZERO if from_zero else Event.DEPLOY)
    except InvalidTransition as exc:
        raise BadRequest(str(exc)) from None
    now = now_iso()
    doc = {
        "functionId": fid,
        "functionVersionId": vid,
        "deploymentId": str(uuid.uuid4()),
        "functionName": fn.value["name"],
        "ncaId": fn.value["ncaId"],
        "deploymentSpecifications": [{**s, "gpuSpecificationId": str(uuid.uuid4())} for s in specs],
        "createdAt": now,
        "lastUpdatedAt": now,
    }
    function = {**fn.value, "status": status.value}
    await _commit(
        store,
        [
            Put(records.FUNCTIONS, key, function, expect=fn.revision),
            Put(records.DEPLOYMENTS, key, doc, expect=existing.revision if existing else 0),
        ],
    )
    return json_response({"deployment": deployment_view(doc, status.value)})


@routes.get("/v2/nvcf/deployments/functions/{functionId}/versions/{functionVersionId}")
async def get_deployment(request: web.Request) -> web.Response:
    fid, vid, _ = _ids(request)
    _, fn = await version_for(request, fid, vid, SCOPE, own_only=True)
    store = ctx(request).store
    dep = await _load_deployment(store, fid, vid)
    return json_response({"deployment": deployment_view(dep.value, fn.value["status"])})


@routes.get("/v2/nvcf/deployments/{deploymentId}")
async def get_deployment_by_id(request: web.Request) -> web.Response:
    await require(request, SCOPE)
    store = ctx(request).store
    dep = await _by_deployment_id(store, request.match_info["deploymentId"])
    fid, vid = dep.value["functionId"], dep.value["functionVersionId"]
    _, fn = await version_for(request, fid, vid, SCOPE, own_only=True)
    return json_response({"deployment": deployment_view(dep.value, fn.value["status"])})


@routes.put("/v2/nvcf/deployments/functions/{functionId}/versions/{functionVersionId}")
async def update_deployment(request: web.Request) -> web.Response:
    """Deprecated full update, with NVCF's rules (spec part 2, 11.5): the same GPU
    specifications as deployed (by gpuSpecificationId; one spec may leave it out), the
    same backend and clusters; only minInstances, maxInstances and maxRequestConcurrency
    change. A new gpu or instanceType is SPECS_MISMATCH, never a second spec."""
    fid, vid, key = _ids(request)
    _, fn = await version_for(request, fid, vid, SCOPE, own_only=True)
    store = ctx(request).store
    dep = await _load_deployment(store, fid, vid)
    if dep.value.get("graceful"):
        raise BadRequest(GRACEFUL_WAIT)
    body = await read_json_object(request)
    items = body.get("deploymentSpecifications")
    if not isinstance(items, list) or not items:
        raise BadRequest("Validation failed: field 'deploymentSpecifications' is required and must hold at least one GPU specification")
    label = f"Function id '{fid}', version '{vid}'"
    stored: list[dict[str, Any]] = dep.value["deploymentSpecifications"]
    by_id = {s["gpuSpecificationId"]: s for s in stored}
    mismatch = BadRequest(f"Function id '{fid}', version ='{vid}': GPU / InstanceType specs must match the ones in the original deployment")
    if len(items) != len(stored):
        raise mismatch
    if len(items) > 1 and any(not isinstance(i, dict) or not i.get("gpuSpecificationId") for i in items):
        raise BadRequest(f"{label}: Deployment has multiple GPU specifications. To update deployment use PATCH endpoint.")
    updated = dict(by_id)
    for i, item in enumerate(items):
        where = f"deploymentSpecifications[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"Validation failed: field '{where}' must be an object")
        base = by_id.get(item.get("gpuSpecificationId") or stored[0]["gpuSpecificationId"])
        if base is None or any(
            item.get(f) is not None and str(item[f]).lower() != str(base.get(f, "")).lower() for f in ("gpu", "instanceType")
        ):
            raise mismatch
        given_backend, stored_backend = item.get("backend") or "", base.get("backend") or ""
        if given_backend.strip().lower() != stored_backend.strip().lower():
            raise BadRequest(f"{label}: Backend '{given_backend}' field does not match original deployment spec: '{stored_backend}'.")
        given_clusters, stored_clusters = item.get("clusters") or [], base.get("clusters") or []
        if not isinstance(given_clusters, list) or set(map(str, given_clusters)) != set(map(str, stored_clusters)):
            raise BadRequest(
                f"{label}: Provided clusters: '[{', '.join(map(str, given_clusters))}]' does not match clusters "
                f"from original spec: '[{', '.join(map(str, stored_clusters))}]'"
            )
        merged = {**base, **{f: item[f] for f in UPDATABLE_BY_PUT if item.get(f) is not None}}
        updated[base["gpuSpecificationId"]] = validate_put_spec(merged, where)
    doc = {**dep.value, "deploymentSpecifications": list(updated.values()), "lastUpdatedAt": now_iso()}
    await _commit(store, [Put(records.DEPLOYMENTS, key, doc, expect=dep.revision)])
    return json_response({"deployment": deployment_view(doc, fn.value["status"])})


@routes.patch("/v2/nvcf/deployments/{deploymentId}/gpu-specifications/{gpuSpecificationId}")
async def patch_gpu_specification(request: web.Request) -> web.Response:
    await require(request, SCOPE)
    store = ctx(request).store
    dep = await _by_deployment_id(store, request.match_info["deploymentId"])
    await version_for(request, dep.value["functionId"], dep.value["functionVersionId"], SCOPE, own_only=True)
    gid = request.match_info["gpuSpecificationId"]
    specs = dep.value["deploymentSpecifications"]
    index = next((i for i, s in enumerate(specs) if s["gpuSpecificationId"] == gid), None)
    if index is None:
        raise NotFound(f"GPU specification '{gid}' of deployment '{dep.value['deploymentId']}': Not found")
    spec = validate_patch(await read_json_object(request), specs[index])
    doc = {**dep.value, "deploymentSpecifications": [*specs[:index], spec, *specs[index + 1 :]], "lastUpdatedAt": now_iso()}
    await _commit(store, [Put(records.DEPLOYMENTS, dep.key, doc, expect=dep.revision)])
    return json_response({"gpuSpecification": spec})


def _graceful(request: web.Request) -> bool:
    return query_bool(request, "graceful", False)  # Spring's spellings: true/on/yes/1, false/off/no/0


@routes.delete("/v2/nvcf/deployments/functions/{functionId}/versions/{functionVersionId}")
async def delete_deployment(request: web.Request) -> web.Response:
    fid, vid, key = _ids(request)
    store = ctx(request).store
    graceful = _graceful(request)
    # The reconciler writes the function's status as instances come and go; an undeploy that
    # races such a write reads again and applies to the new state instead of answering 409.
    for _ in range(UNDEPLOY_ATTEMPTS):
        _, fn = await version_for(request, fid, vid, SCOPE, own_only=True)
        dep = await store.get(records.DEPLOYMENTS, key)
        try:
            status = next_state(fn.value["status"], Event.UNDEPLOY)
        except InvalidTransition as exc:
            raise BadRequest(str(exc)) from None
        function = {**fn.value, "status": status.value}
        ops: list[Op] = [Put(records.FUNCTIONS, key, function, expect=fn.revision)]
        if dep is not None:
            if graceful:  # the reconciler drains the instances, then deletes the doc
                ops.append(Put(records.DEPLOYMENTS, key, {**dep.value, "graceful": True, "lastUpdatedAt": now_iso()}, expect=dep.revision))
            else:
                ops.append(Delete(records.DEPLOYMENTS, key, expect=dep.revision))
        try:
            await store.commit(ops)
            break
        except StoreConflict:
            continue
    else:
        raise Conflict("The function or its deployment changed concurrently; retry")
    return json_response({"function": await function_view(store, function)})
