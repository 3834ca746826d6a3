"""API keys: /v1/keys. The plain key is returned once, at creation; only its digest is kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiohttp import web

from .. import keys, records
from .auth import require
from .context import ctx, json_response, read_json_object
from .errors import BadRequest, NotFound, invalid
from .validation import string_field, strings_field

routes = web.RouteTableDef()


def _expiry(body: dict) -> str | None:
    expires_at, ttl = body.get("expiresAt"), body.get("ttlSeconds")
    if expires_at is not None and ttl is not None:
        raise invalid("expiresAt", "cannot be combined with ttlSeconds")
    now = datetime.now(UTC)
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise invalid("ttlSeconds", "must be a positive integer")
        return (now + timedelta(seconds=ttl)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if expires_at is None:
        return None
    try:
        when = keys.parse_iso(expires_at) if isinstance(expires_at, str) else None
    except ValueError:
        when = None
    if when is None:
        raise invalid("expiresAt", "must be an ISO-8601 date-time such as 2030-01-01T00:00:00Z")
    if when <= now:
        raise invalid("expiresAt", "must be in the future")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@routes.post("/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    await require(request, keys.MANAGE_KEYS)
    c = ctx(request)
    body = await read_json_object(request)
    scopes = strings_field(body, "scopes")
    if not scopes:
        raise invalid("scopes", "is required and must list at least one scope")
    unknown = [s for s in scopes if s not in keys.SCOPES]
    if unknown:
        raise invalid("scopes", f"has unknown scope(s) {', '.join(unknown)}; known: {', '.join(keys.SCOPES)}")
    function_ids = strings_field(body, "functionIds")
    if function_ids is not None and not function_ids:
        raise invalid("functionIds", "must name at least one function when given (leave it out for all functions)")
    description = string_field(body, "description", max_len=256, nonblank=False) or ""
    plain = keys.new_key()
    key_id = str(uuid.uuid4())
    doc = keys.key_doc(
        plain,
        key_id,
        scopes=list(dict.fromkeys(scopes)),
        description=description,
        function_ids=function_ids,
        expires_at=_expiry(body),
        nca_id=c.nca_id,
    )
    await c.store.put(records.KEYS, key_id, doc, expect=0)
    return json_response({"key": keys.public_view(doc), "value": plain})


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    await require(request, keys.MANAGE_KEYS)
    docs = await ctx(request).store.list(records.KEYS)
    return json_response({"keys": [keys.public_view(r.value) for r in docs]})


@routes.get("/v1/keys/{keyId}")
async def get_key(request: web.Request) -> web.Response:
    await require(request, keys.MANAGE_KEYS)
    key_id = request.match_info["keyId"]
    rec = await ctx(request).store.get(records.KEYS, key_id)
    if rec is None:
        raise NotFound(f"API key '{key_id}': Not found")
    return json_response({"key": keys.public_view(rec.value)})


@routes.delete("/v1/keys/{keyId}")
async def revoke_key(request: web.Request) -> web.Response:
    await require(request, keys.MANAGE_KEYS)
    key_id = request.match_info["keyId"]
    if key_id == keys.ADMIN_KEY_ID:
        raise BadRequest("The admin key cannot be revoked; set FNGATE_ADMIN_KEY or replace <data-dir>/admin.key instead")
    if not await ctx(request).store.delete(records.KEYS, key_id):
        raise NotFound(f"API key '{key_id}': Not found")
    return web.Response(status=204)
