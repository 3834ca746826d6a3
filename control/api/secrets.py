"""Secrets: PUT /v2/nvcf/secrets/** (spec part 2, section 4).

Function secrets merge into what the version has (a new value wins on a name
clash; nothing is removed); a version without secrets gets its first ones only
while INACTIVE. Values are never returned; the function keeps their names
(`secrets`, shown by GET with includeSecrets). The store seals both kinds at
rest (control.store.sealed).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .. import records
from ..records import now_iso
from ..states import State
from ..store.base import Conflict as StoreConflict
from ..store.base import Op, Put
from .access import owner_of
from .auth import not_in_account, require
from .context import ctx, read_json_object
from .errors import BadRequest, Conflict, Forbidden
from .secret_rules import check_secret

SCOPE = "update_secrets"

routes = web.RouteTableDef()


def _function_secrets(body: dict[str, Any], fid: str, vid: str) -> dict[str, Any]:
    items = body.get("secrets")
    if items is not None and not isinstance(items, list):
        raise BadRequest("Validation failed: field 'secrets' must be an array")
    checked = [check_secret(item, f"secrets[{i}]") for i, item in enumerate(items or ())]
    if not checked:
        raise BadRequest(f"Function id '{fid}', version '{vid}': Missing secrets in the payload")
    # the body is a set of {name, value}: an exact repeat is one secret, a name twice is a clash
    distinct = {(name, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)): (name, value) for name, value in checked}
    out = dict(distinct.values())
    if len(out) != len(distinct):
        raise BadRequest(f"Function id '{fid}', version '{vid}': Duplicate secrets keys in the payload")
    return out


@routes.put("/v2/nvcf/secrets/functions/{functionId}/versions/{functionVersionId}")
async def put_function_secrets(request: web.Request) -> web.Response:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    principal = await require(request, SCOPE)
    c = ctx(request)
    new = _function_secrets(await read_json_object(request), fid, vid)
    key = records.version_key(fid, vid)
    fn = await c.store.get(records.FUNCTIONS, key)
    # another account's version, shared or not, is "not found" (only the owner sets secrets)
    if fn is None or not (principal.all_accounts or owner_of(fn.value) == principal.nca_id):
        raise not_in_account(fid, vid, principal.nca_id)
    if not principal.reaches(fid, vid, owner=owner_of(fn.value), shared=False):
        raise Forbidden(f"Function id '{fid}', version '{vid}': Forbidden to update secrets for this function")
    current = await c.store.get(records.SECRETS, key)
    existing: dict[str, Any] = dict((current.value.get("secrets") or {}) if current else {})
    if not existing and fn.value.get("status") != State.INACTIVE.value:
        raise BadRequest(f"Function id '{fid}', version '{vid}': Add secrets only when the function is 'INACTIVE'")
    merged = {**existing, **new}
    names = sorted(merged)
    ops: list[Op] = [Put(records.SECRETS, key, {"secrets": merged}, expect=current.revision if current else 0)]
    if fn.value.get("secrets") != names:
        ops.append(Put(records.FUNCTIONS, key, {**fn.value, "secrets": names}, expect=fn.revision))
    try:
        await c.store.commit(ops)
    except StoreConflict:
        raise Conflict("The function version or its secrets changed concurrently; retry") from None
    return web.Response(status=204)


@routes.put("/v2/nvcf/secrets/telemetries/{telemetryId}")
async def put_telemetry_secret(request: web.Request) -> web.Response:
    """Stored under the telemetry id for the caller's account (NVCF checks nothing else)."""
    telemetry_id = request.match_info["telemetryId"]
    principal = await require(request, SCOPE)
    c = ctx(request)
    body = await read_json_object(request)
    if body.get("secret") is None:
        raise BadRequest("Validation failed: field 'secret' is required")
    name, value = check_secret(body["secret"], "secret")
    doc = {"telemetryId": telemetry_id, "ncaId": principal.nca_id, "name": name, "value": value, "updatedAt": now_iso()}
    await c.store.put(records.TELEMETRY_SECRETS, telemetry_id, doc)
    return web.Response(status=204)
