"""Which function versions a caller may see or change (spec 3.6, 5.3).

A version is reachable when the caller's account owns it, or it is shared with that
account (or with everyone, `*`), and the key's resources name it. Owners may do
everything their scopes allow; an account it is shared with may only list, get and
read queues (`own_only=True` marks everything else).
"""

from __future__ import annotations

from aiohttp import web

from .. import records
from ..sharing import Sharing, load_sharing
from ..store.base import Record, StateStore
from .auth import Principal, missing_resource, not_in_account, require
from .context import ctx
from .errors import Forbidden


def owner_of(doc: dict[str, object]) -> str:
    return str(doc.get("ncaId", ""))


def visible(principal: Principal, doc: dict[str, object], sharing: Sharing) -> bool:
    """The caller's account may see this version at all (before the key's resources)."""
    return principal.all_accounts or owner_of(doc) == principal.nca_id or sharing.allows(str(doc["versionId"]), principal.nca_id)


def _check(principal: Principal, doc: dict[str, object], sharing: Sharing, *, own_only: bool, version: bool) -> None:
    fid, vid = str(doc["id"]), str(doc["versionId"])
    owner = owner_of(doc)
    if principal.all_accounts:
        return
    mine = owner == principal.nca_id
    if not mine and (own_only or not sharing.allows(vid, principal.nca_id)):
        raise not_in_account(fid, vid if version else None, principal.nca_id)
    if not principal.reaches(fid, vid if version else None, owner=owner, shared=not mine):
        raise missing_resource(fid, vid if version else None)


async def version_for(request: web.Request, fid: str, vid: str, *scopes: str, own_only: bool = False) -> tuple[Principal, Record]:
    """Authenticate, check `scopes`, load the version and check the caller reaches it."""
    principal = await require(request, *scopes)
    store = ctx(request).store
    rec = await store.get(records.FUNCTIONS, records.version_key(fid, vid))
    if rec is None:
        raise not_in_account(fid, vid, principal.nca_id)
    _check(principal, rec.value, await load_sharing(store, fid), own_only=own_only, version=True)
    return principal, rec


async def versions_for(request: web.Request, fid: str, *scopes: str, own_only: bool = False) -> tuple[Principal, list[Record]]:
    """The function's versions the caller reaches (at least one, else 404/403)."""
    principal = await require(request, *scopes)
    store = ctx(request).store
    recs = await store.list(records.FUNCTIONS, fid + "/")
    sharing = await load_sharing(store, fid)
    seen = [
        r
        for r in recs
        if visible(principal, r.value, sharing) and (not own_only or principal.all_accounts or owner_of(r.value) == principal.nca_id)
    ]
    if not seen:
        raise not_in_account(fid, None, principal.nca_id)
    allowed = [
        r
        for r in seen
        if principal.reaches(fid, str(r.value["versionId"]), owner=owner_of(r.value), shared=owner_of(r.value) != principal.nca_id)
    ]
    if not allowed:
        raise missing_resource(fid, None)
    return principal, allowed


async def function_owner_for(request: web.Request, fid: str, *scopes: str) -> Principal:
    """For creating a version: the function exists and is the caller's own, and the key
    names the whole function (a version that does not exist yet has no entry)."""
    principal = await require(request, *scopes)
    recs = await ctx(request).store.list(records.FUNCTIONS, fid + "/")
    if not recs or not (principal.all_accounts or owner_of(recs[0].value) == principal.nca_id):
        raise not_in_account(fid, None, principal.nca_id)
    if not principal.reaches(fid, None, owner=owner_of(recs[0].value), shared=False):
        raise Forbidden(f"Function id '{fid}': Forbidden to create function version")
    return principal


async def relation_map(store: StateStore, principal: Principal, fids: set[str]) -> dict[str, tuple[bool, bool]]:
    """fid -> (owned by the caller's account, shared with it), for the escalation check."""
    out: dict[str, tuple[bool, bool]] = {}
    for fid in fids:
        recs = await store.list(records.FUNCTIONS, fid + "/")
        if not recs:
            continue
        sharing = await load_sharing(store, fid)
        owned = owner_of(recs[0].value) == principal.nca_id
        shared = any(sharing.allows(str(r.value["versionId"]), principal.nca_id) for r in recs)
        out[fid] = (owned, shared)
    return out
