"""Functions and versions: /v2/nvcf/functions/** (spec 4.1-4.3)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .. import records
from ..records import now_iso
from ..sharing import Sharing, load_all_sharing
from ..states import State
from ..store.base import Conflict as StoreConflict
from ..store.base import Delete, Op, Put, Record, StateStore
from .access import function_owner_for, owner_of, version_for, versions_for
from .auth import Principal, require
from .context import ctx, json_response, read_json_object
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .llm_models import LLM, NOT_LLM_INVOCATION_CONFIG, apply_model_updates, check_new_version, overrides_of, with_overrides
from .params import query_bool
from .validation import validate_function, validate_function_update

LIST_SCOPES = ("list_functions", "list_functions_details")
VISIBILITIES = ("authorized", "private", "public")
_INSTANCE_INTERNALS = ("host", "port", "gpuSpecificationId")
# what another account never sees of a function shared with it (spec 5.4)
_OWNER_ONLY_FIELDS = (
    "inferenceUrl",
    "inferencePort",
    "containerArgs",
    "containerEnvironment",
    "containerImage",
    "models",
    "resources",
    "helmChart",
    "helmChartServiceName",
    "activeInstances",
    "secrets",
    "rateLimit",
)

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


async def function_view(store: StateStore, doc: dict[str, Any], viewer: Principal | None = None) -> dict[str, Any]:
    """The wire Function: the stored doc plus activeInstances from the `instances` kind;
    for a viewer from another account, without the owner-only fields."""
    if viewer is not None and not viewer.all_accounts and owner_of(doc) != viewer.nca_id:
        view = {k: v for k, v in doc.items() if k not in _OWNER_ONLY_FIELDS}
        view["ownedByDifferentAccount"] = True
        return view
    instances = await store.list(records.INSTANCES, doc["versionId"] + "/")
    view = dict(doc)
    if instances:
        view["activeInstances"] = [{k: v for k, v in r.value.items() if k not in _INSTANCE_INTERNALS} for r in instances]
    return view


def without_secrets(view: dict[str, Any]) -> dict[str, Any]:
    """List endpoints never carry secret names (NVCF 4.3)."""
    return {k: v for k, v in view.items() if k != "secrets"}


def _visibility(request: web.Request) -> set[str]:
    raw = request.query.getall("visibility", [])
    values = {v.strip().lower() for item in raw for v in item.split(",") if v.strip()}
    unknown = values - set(VISIBILITIES)
    if unknown:
        raise BadRequest(
            f"Validation failed: field 'visibility' has unknown value(s) {', '.join(sorted(unknown))}; allowed: {', '.join(VISIBILITIES)}"
        )
    return values or set(VISIBILITIES)


async def _create(request: web.Request, fid: str, nca_id: str, siblings: Sequence[Record] = ()) -> web.Response:
    c = ctx(request)
    body = await read_json_object(request)
    fields, secret_values = validate_function(body)
    vid = str(uuid.uuid4())
    doc = {"id": fid, "versionId": vid, "ncaId": nca_id, **fields, "status": State.INACTIVE.value, "createdAt": now_iso()}
    key = records.version_key(fid, vid)
    ops: list[Op] = [Put(records.FUNCTIONS, key, doc, expect=0)]
    if siblings:
        check_new_version(fid, doc, [r.value for r in siblings])
        if doc.get("functionType") == LLM:
            ops += _llm_family_writes(doc, siblings, overrides_of(doc.get("models") or ()))
    if secret_values:
        ops.append(Put(records.SECRETS, key, {"secrets": secret_values}, expect=0))
    await c.store.commit(ops)
    return json_response({"function": doc})


def _llm_family_writes(doc: dict[str, Any], siblings: Sequence[Record], overrides: dict[str, dict[str, str]]) -> list[Op]:
    """NVCF keeps one source of truth per LLM function id: a version's tokenRateLimit and
    routingMethod, and its llmInvocationConfig, reach every other version (a new version
    without an llmInvocationConfig inherits the one they share). The writes for the others,
    each at the revision read, so a concurrent change fails the whole commit."""
    if "llmInvocationConfig" not in doc:
        inherited = next((r.value["llmInvocationConfig"] for r in siblings if r.value.get("llmInvocationConfig")), None)
        if inherited is not None:
            doc["llmInvocationConfig"] = inherited
    ops: list[Op] = []
    for r in siblings:
        if r.value["versionId"] == doc["versionId"]:
            continue
        other = dict(r.value)
        if other.get("models"):
            other["models"] = with_overrides(other["models"], overrides)
        if doc.get("llmInvocationConfig") is not None:
            other["llmInvocationConfig"] = doc["llmInvocationConfig"]
        if other != r.value:
            ops.append(Put(records.FUNCTIONS, r.key, other, expect=r.revision))
    return ops


@routes.post("/v2/nvcf/functions")
async def create_function(request: web.Request) -> web.Response:
    principal = await require(request, "register_function")
    if not principal.all_accounts and not principal.authority.access.own:
        raise Forbidden("Forbidden to create function")  # an API key needs account-functions:* (NVCF's createFunctionMatch)
    await _check_function_limit(ctx(request).store, principal.nca_id)
    return await _create(request, str(uuid.uuid4()), principal.nca_id)


async def _check_function_limit(store: StateStore, nca_id: str) -> None:
    """The account's maxFunctionsAllowed, counted as NVCF does (its function rows)."""
    account = await store.get(records.ACCOUNTS, nca_id)
    if account is None:
        return
    limit = int(account.value.get("maxFunctionsAllowed", 0))
    if sum(1 for r in await store.list(records.FUNCTIONS) if r.value.get("ncaId") == nca_id) >= limit:
        raise BadRequest(
            f"Account '{nca_id}': Reached or exceeded the max limit for the number of functions allowed: {limit}. "
            "Please contact your account team for more details"
        )


@routes.post("/v2/nvcf/functions/{functionId}/versions")
async def create_version(request: web.Request) -> web.Response:
    fid = request.match_info["functionId"]
    principal = await function_owner_for(request, fid, "register_function")
    siblings = await load_versions(ctx(request).store, fid)
    owner = owner_of(siblings[0].value)
    try:
        return await _create(request, fid, owner if principal.all_accounts else principal.nca_id, siblings)
    except StoreConflict:
        raise Conflict("The function changed while the version was being created; retry") from None


def listed(principal: Principal, doc: dict[str, Any], sharing: Sharing, visibility: set[str]) -> bool:
    """NVCF's visibility filter (spec 5.4): private = the caller's account's own versions,
    authorized = versions shared with it, public = versions shared with `*`; an API key
    also needs the matching resources for the first two."""
    fid, vid, owner = doc["id"], doc["versionId"], owner_of(doc)
    mine = owner == principal.nca_id
    if "private" in visibility and mine and principal.reaches(fid, vid, owner=owner, shared=False):
        return True
    if (
        "authorized" in visibility
        and not mine
        and sharing.shared_with(vid, principal.nca_id)
        and principal.reaches(fid, vid, owner=owner, shared=True)
    ):
        return True
    return "public" in visibility and sharing.public(vid)


async def listed_docs(store: StateStore, principal: Principal, visibility: set[str] | None = None) -> list[dict[str, Any]]:
    """The version docs the caller lists (every visibility unless named): the listing's, the
    console's and the control-plane metrics' view."""
    wanted = set(VISIBILITIES) if visibility is None else visibility
    sharing = await load_all_sharing(store)
    docs = [r.value for r in await store.list(records.FUNCTIONS)]
    return [d for d in docs if listed(principal, d, sharing.get(d["id"], Sharing()), wanted)]


async def _listed_docs(request: web.Request, principal: Principal) -> list[dict[str, Any]]:
    return await listed_docs(ctx(request).store, principal, _visibility(request))


@routes.get("/v2/nvcf/functions")
async def list_functions(request: web.Request) -> web.Response:
    principal = await require(request, *LIST_SCOPES)
    store = ctx(request).store
    return json_response(
        {"functions": [without_secrets(await function_view(store, d, principal)) for d in await _listed_docs(request, principal)]}
    )


@routes.get("/v2/nvcf/functions/ids")
async def list_function_ids(request: web.Request) -> web.Response:
    principal = await require(request, *LIST_SCOPES)
    ids = dict.fromkeys(d["id"] for d in await _listed_docs(request, principal))
    return json_response({"functionIds": list(ids)})


@routes.get("/v2/nvcf/functions/{functionId}/versions")
async def list_versions(request: web.Request) -> web.Response:
    fid = request.match_info["functionId"]
    principal, recs = await versions_for(request, fid, *LIST_SCOPES)
    store = ctx(request).store
    return json_response({"functions": [without_secrets(await function_view(store, r.value, principal)) for r in recs]})


@routes.get("/v2/nvcf/functions/{functionId}/versions/{functionVersionId}")
async def get_version(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    principal, rec = await version_for(request, fid, vid, *LIST_SCOPES)
    include = query_bool(request, "includeSecrets", True)
    view = await function_view(ctx(request).store, rec.value, principal)
    # secret names only for a holder of list_functions_details who asked for them (NVCF 4.3);
    # another account's view never has them (function_view leaves them out)
    if not (include and any(s.endswith("list_functions_details") for s in principal.scopes)):
        view = without_secrets(view)
    return json_response({"function": view})


@routes.put("/v2/nvcf/functions/{functionId}/versions/{functionVersionId}")
@routes.put("/v2/nvcf/metadata/functions/{functionId}/versions/{functionVersionId}")
async def update_version(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    _, rec = await version_for(request, fid, vid, "update_function", own_only=True)
    store = ctx(request).store
    updates = validate_function_update(await read_json_object(request))
    model_updates = updates.pop("modelUpdates", None)
    doc = {**rec.value, **updates}
    if "llmInvocationConfig" in updates and rec.value.get("functionType") != LLM:
        raise BadRequest(NOT_LLM_INVOCATION_CONFIG)
    if model_updates:
        doc["models"] = apply_model_updates(doc, model_updates)
    ops: list[Op] = [Put(records.FUNCTIONS, rec.key, doc, expect=rec.revision)]
    if doc.get("functionType") == LLM and (model_updates or "llmInvocationConfig" in updates):
        siblings = await load_versions(store, fid)
        check_new_version(fid, doc, [r.value for r in siblings if r.key != rec.key])  # a mixed family is refused, as NVCF
        overrides = overrides_of([{"name": u["modelName"], "llmConfig": u["llmConfig"]} for u in model_updates or ()])
        ops += _llm_family_writes({**doc, "llmInvocationConfig": updates.get("llmInvocationConfig")}, siblings, overrides)
    try:
        await store.commit(ops)
    except StoreConflict:
        raise Conflict("The function version changed while it was being updated; retry") from None
    return json_response({"function": await function_view(store, doc)})


@routes.delete("/v2/nvcf/functions/{functionId}/versions/{functionVersionId}")
async def delete_version(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    _, rec = await version_for(request, fid, vid, "delete_function", own_only=True)
    store = ctx(request).store
    key = records.version_key(fid, vid)
    # the version goes with everything that hangs off it, in one atomic commit
    ops: list[Op] = [
        Delete(records.FUNCTIONS, key, expect=rec.revision),
        Delete(records.DEPLOYMENTS, key),
        Delete(records.SECRETS, key),
        Delete(records.AUTHORIZATIONS, key),
    ]
    for kind in (records.INSTANCES, records.SCALE):
        ops += [Delete(kind, r.key) for r in await store.list(kind, vid + "/")]
    if [r.key for r in await store.list(records.FUNCTIONS, fid + "/")] == [key]:
        ops.append(Delete(records.AUTHORIZATIONS, fid))  # the last version: the function's sharing goes too
    try:
        await store.commit(ops)
    except StoreConflict:
        raise Conflict("The function version changed while it was being deleted; retry") from None
    return web.Response(status=204)
