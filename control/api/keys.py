"""API keys: /v1/keys, as NVCF's API-keys service serves them (spec 3.1-3.4).

Request and response JSON is snake_case; a key is answered as a flat KeyDto whose
`value` is the full key only in the create response (masked everywhere else).
`Key-Owner-Id` and `Key-Issuer-Id` scope every call to one owner in one issuing
service, as NVCF does. What NVCF leaves to the network (the service itself has no
auth), fngate checks: the caller's key needs `manage_keys`, acts within its own
account, and can never create, widen or touch a key beyond its own scopes and
functions (the admin key is exempt).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from fngate.proxy.routing.snapshot import key_digest

from .. import keys, records
from ..accounts import account_exists, account_not_found
from ..authorizations import all_policies, escalation, named_functions
from ..key_owners import OWNER_SUSPENDED, owner_active
from ..keys import StoredKey
from ..store.base import Record
from .access import relation_map
from .auth import Principal, require
from .context import ctx, json_response
from .errors import BadRequest, Forbidden, NotFound, TooManyRequests

routes = web.RouteTableDef()

OWNER_HEADER = "Key-Owner-Id"
ISSUER_HEADER = "Key-Issuer-Id"
DESCRIPTION_RE = re.compile(r"^[a-zA-Z0-9\s_-]{1,64}$")
KEY_NOT_FOUND = "Key not found"


async def _issuer(request: web.Request) -> tuple[str, str]:
    """(owner id, issuer service id) from the Key-* headers, as the service resolves them;
    a suspended owner can do nothing with its keys (403, as NVCF's KeyOwnerStatusValidator)."""
    owner = request.headers.get(OWNER_HEADER, "").strip()
    if not owner:
        raise BadRequest("Key-Owner-Id is not set")
    issuer = request.headers.get(ISSUER_HEADER, "").strip()
    if not issuer:
        raise BadRequest("Key-Issuer-Id is not set")
    if issuer not in keys.ISSUERS:
        raise BadRequest("Caller service not registered")
    if not await owner_active(ctx(request).store, owner):
        raise Forbidden(OWNER_SUSPENDED)
    return owner, issuer


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Failed to read request: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Failed to read request: the body must be a JSON object")
    return body


def _description(body: dict[str, Any]) -> str:
    value = body.get("description")
    if not isinstance(value, str) or not DESCRIPTION_RE.fullmatch(value):
        raise BadRequest("description is invalid")
    return value


def _expires_at(body: dict[str, Any], now: datetime) -> str:
    value = body.get("expires_at")
    message = f"expires_at must be in the future and not more than {keys.MAX_TTL_DAYS} days from now"
    if value is None:
        raise BadRequest(message)
    if not isinstance(value, str):
        raise BadRequest("Failed to read request: expires_at must be an ISO-8601 instant such as 2030-01-01T00:00:00Z")
    try:
        when = records.parse_iso(value)
    except ValueError:
        raise BadRequest(f"Failed to read request: expires_at '{value}' is not an ISO-8601 instant") from None
    if when < now or when > now + timedelta(days=keys.MAX_TTL_DAYS):
        raise BadRequest(message)
    return keys.iso_instant(when)


def _audiences(body: dict[str, Any], issuer: str) -> tuple[str, ...]:
    value = body.get("audience_service_ids")
    if value is None:
        return (issuer,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("Failed to read request: audience_service_ids must be an array of strings")
    if not value:
        raise BadRequest("audience_service_ids can't be empty")
    invalid = sorted(set(value) - keys.ISSUERS[issuer])
    if invalid:
        raise BadRequest(f"service '{issuer}' cannot use audiences: {','.join(invalid)}")
    return tuple(dict.fromkeys(value))


def _authorizations(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("authorizations")
    if value is None:
        raise BadRequest("authorizations can not be null")
    if not isinstance(value, dict):
        raise BadRequest("Failed to read request: authorizations must be a JSON object")
    size = len(orjson.dumps(value))
    if size > keys.MAX_AUTHZ_CHARS:
        raise BadRequest(f"authorizations size can not be greater than {keys.MAX_AUTHZ_CHARS} but was {size}")
    return value


async def _account(request: web.Request, principal: Principal, body: dict[str, Any]) -> str:
    """fngate: the account the new key acts for. A key makes keys for its own account;
    the admin key may name another (an existing one) in `nca_id`."""
    nca_id = body.get("nca_id")
    if nca_id is None or nca_id == principal.nca_id:
        return principal.nca_id
    if not isinstance(nca_id, str):
        raise BadRequest("Failed to read request: nca_id must be a string")
    if not principal.admin:
        raise Forbidden(f"The new key exceeds the calling key: account '{nca_id}' is not the key's account '{principal.nca_id}'")
    if not await account_exists(ctx(request).store, nca_id):
        raise BadRequest(account_not_found(nca_id))
    return nca_id


async def _check_within(request: web.Request, principal: Principal, authorizations: dict[str, Any], what: str) -> None:
    """403 when `authorizations` would give a key more than the calling key holds."""
    if principal.admin:
        return
    wanted = all_policies(authorizations)
    relation = await relation_map(ctx(request).store, principal, named_functions(wanted))
    for policy in wanted:
        reason = escalation(principal.authority, policy, relation)
        if reason is not None:
            raise Forbidden(f"{what} exceeds the calling key: {reason}")


async def _owned_keys(request: web.Request, principal: Principal, owner: str, issuer: str) -> list[tuple[Record, StoredKey]]:
    """This owner's keys in this issuing service (and the caller's account), dropping
    keys whose deletion time (two days after expiry) has passed."""
    store = ctx(request).store
    now = keys.now_utc()
    out = []
    for rec in await store.list(records.KEYS):
        key = StoredKey.from_doc(rec.value)
        if key.gone(now):
            await store.delete(records.KEYS, rec.key, expect=rec.revision)
            continue
        if key.owner_id == owner and key.issuer_service_id == issuer and (principal.admin or key.nca_id == principal.nca_id):
            out.append((rec, key))
    return out


async def _one_key(request: web.Request, principal: Principal) -> tuple[Record, StoredKey]:
    owner, issuer = await _issuer(request)
    key_id = request.match_info["keyId"]
    for rec, key in await _owned_keys(request, principal, owner, issuer):
        if key.id == key_id:
            return rec, key
    raise NotFound(KEY_NOT_FOUND)


@routes.post("/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    owner, issuer = await _issuer(request)
    body = await read_body(request)
    now = keys.now_utc()
    description = _description(body)
    expires_at = _expires_at(body, now)
    audiences = _audiences(body, issuer)
    if len(await _owned_keys(request, principal, owner, issuer)) >= keys.MAX_KEYS_PER_OWNER:
        raise BadRequest("Actor reached maximum allowed number of keys in service")
    authorizations = _authorizations(body)
    nca_id = await _account(request, principal, body)
    await _check_within(request, principal, authorizations, "The new key")
    plain = keys.new_key()
    key = StoredKey(
        id=str(uuid.uuid4()),
        digest=key_digest(plain),
        suffix=plain[-3:],
        owner_id=owner,
        nca_id=nca_id,
        authorizations=authorizations,
        created_at=keys.iso_instant(now),
        description=description,
        expires_at=expires_at,
        issuer_service_id=issuer,
        audience_service_ids=audiences,
    )
    await ctx(request).store.put(records.KEYS, key.id, key.to_doc(), expect=0)
    return json_response(key.view(now, value=plain))


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    owner, issuer = await _issuer(request)
    now = keys.now_utc()
    found = await _owned_keys(request, principal, owner, issuer)
    return json_response({"keys": [key.view(now, with_authorizations=False) for _, key in found]})


@routes.get("/v1/keys/{keyId}")
async def get_key(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    _, key = await _one_key(request, principal)
    return json_response(key.view(keys.now_utc()))


@routes.put("/v1/keys/{keyId}/authorizations")
async def update_authorizations(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    rec, key = await _one_key(request, principal)
    body = await read_body(request)
    authorizations = _authorizations(body)
    now = keys.now_utc()
    if key.is_admin:
        raise BadRequest("The admin key's authorizations cannot be changed")
    if key.status_at(now) != keys.ACTIVE:
        raise BadRequest("Key is not active")
    await _check_within(request, principal, key.authorizations, "The key being changed")
    await _check_within(request, principal, authorizations, "The new authorizations")
    at = time.time()
    if at - key.authz_updated_at < keys.MIN_AUTHZ_UPDATE_INTERVAL:
        raise TooManyRequests("Slow down.")
    updated = key.with_authorizations(authorizations, at)
    await ctx(request).store.put(records.KEYS, rec.key, updated.to_doc(), expect=rec.revision)
    return json_response(updated.view(now))


@routes.delete("/v1/keys/{keyId}")
async def delete_key(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    rec, key = await _one_key(request, principal)
    if key.is_admin:
        raise BadRequest("The admin key cannot be deleted; set FNGATE_ADMIN_KEY or replace <data-dir>/admin.key instead")
    await _check_within(request, principal, key.authorizations, "The key being deleted")
    if not await ctx(request).store.delete(records.KEYS, rec.key):
        raise NotFound(KEY_NOT_FOUND)
    return web.Response(status=204)
