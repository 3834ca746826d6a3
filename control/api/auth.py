"""Bearer-key authentication, scope and function checks for the management API.

Keys are looked up by digest in the store's `keys` kind (the admin key too, kept
there by keys.ensure_admin_record); the admin key is also recognised directly so
the API works before that record exists. The admin key plays the part of NVCF's
admin JWT: every scope, every account. Other keys act for their account (NCA id)
with the scopes and resources of their NVCF policy (control.authorizations).

As NVCF answers (spec 3.6): no or a malformed Authorization header is 401; a bearer
that looks like an API key (`nvapi-...`) but is unknown, expired or suspended (or
its owner is) is 403 "Authorization failed"; any other unknown bearer is 401 (NVCF would read it as
a JWT and fail to decode it).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, replace

from aiohttp import web

from fngate.proxy.routing.snapshot import key_digest

from .. import keys
from ..authorizations import Authority, FunctionAccess
from ..key_owners import owner_active
from .context import ctx
from .errors import Forbidden, NotFound, Unauthorized

API_KEY_MARK = "nvapi-"
ADMIN_AUTHORITY = Authority(frozenset(keys.SCOPES), FunctionAccess(own=True, shared=True), True)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    nca_id: str
    authority: Authority = field(default_factory=Authority)
    admin: bool = False  # the admin key: every scope
    all_accounts: bool = False  # every account's functions (the admin key, except through a twin)

    @property
    def scopes(self) -> frozenset[str]:
        return self.authority.scopes

    def has(self, *scopes: str) -> bool:
        return self.admin or bool(self.authority.scopes.intersection(scopes))

    def require(self, *scopes: str) -> Principal:
        """Pass when the key holds any of `scopes`."""
        if not self.has(*scopes):
            raise Forbidden(f"API key lacks the required scope: {' or '.join(scopes)}")
        return self

    def reaches(self, function_id: str, version_id: str | None, *, owner: str, shared: bool) -> bool:
        if self.all_accounts:
            return True
        return self.authority.access.reaches(function_id, version_id, owned=owner == self.nca_id, shared=shared)

    def check_function(self, function_id: str, version_id: str | None, *, owner: str, shared: bool = False) -> None:
        """404 when the function is neither this account's nor shared with it; 403 when
        the key's resources leave it out (NVCF's messages)."""
        if self.all_accounts:
            return
        if owner != self.nca_id and not shared:
            raise not_in_account(function_id, version_id, self.nca_id)
        if not self.reaches(function_id, version_id, owner=owner, shared=shared):
            raise missing_resource(function_id, version_id)


def not_in_account(function_id: str, version_id: str | None, nca_id: str) -> NotFound:
    if version_id is None:
        return NotFound(f"Function id '{function_id}': Not found in account '{nca_id}'")
    return NotFound(f"Function id '{function_id}', version '{version_id}': Not found in account '{nca_id}'")


def missing_resource(function_id: str, version_id: str | None) -> Forbidden:
    if version_id is None:
        return Forbidden(f"Function '{function_id}':  Missing resource entry in ApiKey for the function")
    return Forbidden(f"Function id '{function_id}', version '{version_id}': Missing resource entry in ApiKey for the function")


_PRINCIPAL = web.RequestKey("fngate.principal", Principal)
_ACTING_FOR = web.RequestKey("fngate.acting_for", str)


def act_for_account(request: web.Request, nca_id: str) -> None:
    """The request came through a `/v2/nvcf/accounts/{ncaId}/...` twin (spec 3.8, 11.2):
    the admin key acts for that account; another key needs `admin:<scope>` and must
    belong to it."""
    request[_ACTING_FOR] = nca_id


def through_account_twin(request: web.Request) -> bool:
    return request.get(_ACTING_FOR) is not None


def _acting_for(principal: Principal, nca_id: str) -> Principal:
    if principal.admin:
        return replace(principal, nca_id=nca_id, all_accounts=False)
    if principal.nca_id != nca_id:
        raise Forbidden(f"Account '{nca_id}': does not match the account '{principal.nca_id}' of the API key")
    return principal


async def authenticate(request: web.Request) -> Principal:
    cached: Principal | None = request.get(_PRINCIPAL)
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
        principal = Principal(keys.ADMIN_KEY_ID, c.nca_id, ADMIN_AUTHORITY, admin=True, all_accounts=True)
    else:
        key = await keys.find_by_digest(c.store, digest)
        usable = key is not None and key.status_at(keys.now_utc()) == keys.ACTIVE
        if key is None or not usable or not (key.is_admin or await owner_active(c.store, key.owner_id)):
            if token.startswith(API_KEY_MARK):
                raise Forbidden("Authorization failed")
            raise Unauthorized("Unknown or invalid bearer token")
        authority = Authority.from_authorizations(key.authorizations)
        if not authority.matched:  # no policy for NVCF's audience: the evaluation is "not allowed"
            raise Forbidden("Authorization failed")
        principal = Principal(key.id, key.nca_id, authority, admin=key.is_admin, all_accounts=key.is_admin)
    acting_for = request.get(_ACTING_FOR)
    if acting_for is not None:
        principal = _acting_for(principal, acting_for)
    request[_PRINCIPAL] = principal
    return principal


async def require(request: web.Request, *scopes: str) -> Principal:
    principal = await authenticate(request)
    if request.get(_ACTING_FOR) is not None:  # the super-admin twins take admin:<scope>
        scopes = tuple("admin:" + s for s in scopes)
    return principal.require(*scopes)
