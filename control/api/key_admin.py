"""The API-keys service's admin routes (spec 3.1): /v1/service-admin/users/... (one
issuing service, from Key-Issuer-Id), /v1/admin/... (every service; owner status), and
the service registrations (/v1/services, which a `manage_keys` key may read).

NVCF leaves their protection to the network; in fngate they take the admin key.
Status changes follow NVCF's transitions: ACTIVE <-> SUSPENDED, EXPIRED -> SUSPENDED.
A suspended key is refused everywhere (the gateway's snapshot leaves it out).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fngate.proxy.routing.snapshot import key_digest

from .. import keys, records
from ..key_owners import OWNER_NOT_FOUND, STATUSES, load_owner, set_status
from ..keys import StoredKey
from ..store.base import Delete, Put, Record
from .auth import Principal, authenticate, require
from .context import ctx, json_response
from .errors import BadRequest, Forbidden, NotFound
from .keys import ISSUER_HEADER, KEY_NOT_FOUND, read_body

routes = web.RouteTableDef()

SA = "/v1/service-admin/users/{userId}"
_TRANSITIONS = {keys.ACTIVE: {keys.SUSPENDED}, keys.SUSPENDED: {keys.ACTIVE}, keys.EXPIRED: {keys.SUSPENDED}}


async def _admin(request: web.Request) -> Principal:
    principal = await authenticate(request)
    if not principal.admin:
        raise Forbidden("The API-keys admin routes take the admin key")
    return principal


def _issuer(request: web.Request) -> str:
    issuer = request.headers.get(ISSUER_HEADER, "").strip()
    if not issuer:
        raise BadRequest("Key-Issuer-Id is not set")
    if issuer not in keys.ISSUERS:
        raise BadRequest("Caller service not registered")
    return issuer


async def _user_keys(request: web.Request, issuer: str | None) -> list[tuple[Record, StoredKey]]:
    user = request.match_info["userId"]
    now = keys.now_utc()
    out = []
    for rec in await ctx(request).store.list(records.KEYS):
        key = StoredKey.from_doc(rec.value)
        if key.owner_id == user and not key.gone(now) and (issuer is None or key.issuer_service_id == issuer):
            out.append((rec, key))
    return out


async def _user_key(request: web.Request) -> tuple[Record, StoredKey]:
    key_id = request.match_info["keyId"]
    for rec, key in await _user_keys(request, _issuer(request)):
        if key.id == key_id:
            return rec, key
    raise NotFound(KEY_NOT_FOUND)


def _listing(found: list[tuple[Record, StoredKey]]) -> dict[str, Any]:
    now = keys.now_utc()
    return {"keys": [key.view(now, with_authorizations=False) for _, key in found]}


@routes.get(SA + "/keys")
async def service_admin_list(request: web.Request) -> web.Response:
    await _admin(request)
    return json_response(_listing(await _user_keys(request, _issuer(request))))


@routes.get(SA + "/keys/{keyId}")
async def service_admin_get(request: web.Request) -> web.Response:
    await _admin(request)
    _, key = await _user_key(request)
    return json_response(key.view(keys.now_utc()))


@routes.delete(SA + "/keys/{keyId}")
async def service_admin_delete(request: web.Request) -> web.Response:
    await _admin(request)
    rec, key = await _user_key(request)
    if key.is_admin:
        raise BadRequest("The admin key cannot be deleted; set FNGATE_ADMIN_KEY or replace <data-dir>/admin.key instead")
    await ctx(request).store.delete(records.KEYS, rec.key, expect=rec.revision)
    return web.Response(status=204)


@routes.put(SA + "/keys/{keyId}/status")
async def service_admin_status(request: web.Request) -> web.Response:
    await _admin(request)
    rec, key = await _user_key(request)
    body = await read_body(request)
    wanted = body.get("status")
    if wanted is None:
        raise BadRequest("status is required parameter")
    now = keys.now_utc()
    if key.is_admin or wanted not in _TRANSITIONS.get(key.status_at(now), set()):
        raise BadRequest("Invalid status transition")
    updated = key.with_status(str(wanted))
    await ctx(request).store.put(records.KEYS, rec.key, updated.to_doc(), expect=rec.revision)
    return json_response(updated.view(now))


@routes.put(SA + "/suspend")
async def service_admin_suspend(request: web.Request) -> web.Response:
    await _admin(request)
    found = await _user_keys(request, _issuer(request))
    ops: list[Put | Delete] = []
    done = []
    for rec, key in found:
        if key.is_admin:
            continue
        suspended = key.with_status(keys.SUSPENDED)
        ops.append(Put(records.KEYS, rec.key, suspended.to_doc(), expect=rec.revision))
        done.append((rec, suspended))
    if ops:
        await ctx(request).store.commit(ops)
    return json_response(_listing(done))


@routes.post("/v1/admin/lookup")
async def admin_lookup(request: web.Request) -> web.Response:
    await _admin(request)
    body = await read_body(request)
    value = body.get("key")
    problem = keys.format_error(value if isinstance(value, str) else None)
    if problem is not None:
        raise BadRequest(problem)
    key = await keys.find_by_digest(ctx(request).store, key_digest(str(value)))
    if key is None:
        raise NotFound(KEY_NOT_FOUND)
    return json_response(key.view(keys.now_utc(), with_authorizations=False))


@routes.get("/v1/admin/users/{userId}/keys")
async def admin_user_keys(request: web.Request) -> web.Response:
    await _admin(request)
    return json_response(_listing(await _user_keys(request, None)))


@routes.delete("/v1/admin/users/{userId}/keys")
async def admin_delete_user_keys(request: web.Request) -> web.Response:
    await _admin(request)
    ops: list[Put | Delete] = [
        Delete(records.KEYS, rec.key, expect=rec.revision) for rec, key in await _user_keys(request, None) if not key.is_admin
    ]
    if ops:
        await ctx(request).store.commit(ops)
    return web.Response(status=204)


@routes.get("/v1/admin/users/{userId}")
async def admin_get_owner(request: web.Request) -> web.Response:
    await _admin(request)
    owner = await load_owner(ctx(request).store, request.match_info["userId"])
    if owner is None:
        raise NotFound(OWNER_NOT_FOUND)
    return json_response(owner.view())


@routes.put("/v1/admin/users/{userId}/status")
async def admin_owner_status(request: web.Request) -> web.Response:
    """Suspend (or reactivate) an owner: all its keys, in every service, at once."""
    await _admin(request)
    store = ctx(request).store
    owner = await load_owner(store, request.match_info["userId"])
    if owner is None:
        raise NotFound(OWNER_NOT_FOUND)
    body = await read_body(request)
    wanted = body.get("status")
    if wanted is None:
        raise BadRequest("status is required parameter")
    if wanted not in STATUSES:
        raise BadRequest(f"Failed to read request: status must be one of {', '.join(STATUSES)}, not {wanted!r}")
    return json_response((await set_status(store, owner, str(wanted))).view())


@routes.get("/v1/services")
async def list_services(request: web.Request) -> web.Response:
    await require(request, keys.MANAGE_KEYS)
    return json_response({"services": [s.view() for s in keys.SERVICES.values()]})


@routes.get("/v1/services/{serviceId}")
async def get_service(request: web.Request) -> web.Response:
    await require(request, keys.MANAGE_KEYS)
    service_id = request.match_info["serviceId"]
    service = keys.SERVICES.get(service_id)
    if service is None:
        raise NotFound(f"Service '{service_id}' not found")
    return json_response(service.view())
