"""Bearer-key authentication and scope checks for the management API.

Keys are looked up by digest in the store's `keys` kind (the admin key too, kept
there by keys.ensure_admin_record); the admin key is also recognised directly so
the API works before that record exists.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from fngate.proxy.routing import key_digest

from .. import keys, records
from .context import ctx
from .errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    scopes: frozenset[str]
    function_ids: frozenset[str] | None  # None: every function

    def covers(self, function_id: str) -> bool:
        return self.function_ids is None or function_id in self.function_ids

    def require(self, *scopes: str, function_id: str | None = None) -> Principal:
        """Pass when the key holds any of `scopes` (and covers function_id, if given)."""
        if not self.scopes.intersection(scopes):
            raise Forbidden(f"API key lacks the required scope: {' or '.join(scopes)}")
        if function_id is not None and not self.covers(function_id):
            raise Forbidden("Missing resource entry in ApiKey for the function")
        return self


_PRINCIPAL = web.RequestKey("fngate.principal", Principal)


async def authenticate(request: web.Request) -> Principal:
    cached = request.get(_PRINCIPAL)
    if cached is not None:
        return cached
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("Missing Authorization header")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization header must be 'Bearer <key>'")
    digest = key_digest(token)
    c = ctx(request)
    if hmac.compare_digest(digest, c.admin_digest):
        principal = Principal(keys.ADMIN_KEY_ID, frozenset(keys.SCOPES), None)
    else:
        doc = next((r.value for r in await c.store.list(records.KEYS) if hmac.compare_digest(r.value.get("digest", ""), digest)), None)
        if doc is None:
            raise Unauthorized("Unknown API key")
        if keys.is_expired(doc):
            raise Unauthorized("API key expired")
        fids = doc.get("functionIds")
        principal = Principal(doc["keyId"], frozenset(doc.get("scopes", ())), None if fids is None else frozenset(fids))
    request[_PRINCIPAL] = principal
    return principal


async def require(request: web.Request, *scopes: str, function_id: str | None = None) -> Principal:
    return (await authenticate(request)).require(*scopes, function_id=function_id)
