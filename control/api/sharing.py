"""Authorized parties: /v2/nvcf/authorizations/functions/{fid}[/versions/{vid}] (spec 5.1-5.2).

Only the owning account changes or reads a function's lists (scope
`authorize_clients`); making a function public (`"ncaId": "*"`) is for the super
admin, i.e. the `/v2/nvcf/accounts/{ncaId}/authorizations/...` twins with the admin
key. The gateway learns the lists through the routing snapshot (VersionRoute.authorized).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import records
from ..accounts import account_exists, account_not_found
from ..sharing import PUBLIC, Sharing, load_sharing
from ..store.base import Record
from .access import owner_of
from .accounts import account_of_client, client_not_found
from .auth import Principal, not_in_account, require, through_account_twin
from .context import ctx, json_response, read_json_object
from .errors import BadRequest, Conflict, Forbidden, NotFound

SCOPE = "authorize_clients"
F = "/v2/nvcf/authorizations/functions/{functionId}"
FV = F + "/versions/{functionVersionId}"

routes = web.RouteTableDef()


def _ids(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["functionId"], request.match_info.get("functionVersionId")


def _where(fid: str, vid: str | None) -> str:
    return f"Function id '{fid}'" if vid is None else f"Function id '{fid}', version '{vid}'"


async def _owned(request: web.Request, operation: str) -> tuple[Principal, str, str | None, list[Record], Sharing]:
    """The function (or version) of the caller's own account, and its sharing."""
    principal = await require(request, SCOPE)
    fid, vid = _ids(request)
    store = ctx(request).store
    recs = await store.list(records.FUNCTIONS, fid + "/")
    mine = [r for r in recs if owner_of(r.value) == principal.nca_id or principal.all_accounts]
    if vid is not None:
        mine = [r for r in mine if r.value["versionId"] == vid]
    if not mine:
        raise not_in_account(fid, vid, principal.nca_id)
    target = mine[0]
    if not principal.reaches(fid, vid or target.value["versionId"], owner=principal.nca_id, shared=False):
        raise Forbidden(f"Function id '{fid}', version '{vid or target.value['versionId']}': Forbidden to {operation} authorized party")
    return principal, fid, vid, mine, await load_sharing(store, fid)


def _dto(fid: str, nca_id: str, vid: str | None, parties: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": fid, "ncaId": nca_id}
    if vid is not None:
        doc["versionId"] = vid
    if parties is not None:
        doc["authorizedParties"] = [{"ncaId": p} for p in parties]
    return doc


def _list_of(sharing: Sharing, vid: str | None) -> tuple[str, ...] | None:
    return sharing.function_level if vid is None else sharing.version_level.get(vid)


def _key(fid: str, vid: str | None) -> str:
    return fid if vid is None else records.version_key(fid, vid)


def _refuse_public(request: web.Request, sharing: Sharing, fid: str, vid: str | None, operation: str) -> None:
    """The user endpoints cannot touch a public function's lists (spec 5.2); the
    super-admin twins can."""
    if through_account_twin(request):
        return
    public = PUBLIC in (sharing.function_level or ()) or (vid is not None and PUBLIC in sharing.version_level.get(vid, ()))
    if public:
        raise BadRequest(f"{_where(fid, vid)}: Cannot {operation} authorized parties for public function")


async def _validate_party(request: web.Request, owner: str, party: Any) -> str:
    if not isinstance(party, dict) or not isinstance(party.get("ncaId"), str) or not party["ncaId"].strip():
        raise BadRequest("Invalid request: Issues with the request payload")
    nca_id: str = party["ncaId"]
    client = party.get("clientId")
    if client is not None:
        if not isinstance(client, str):
            raise BadRequest("Invalid request: Issues with the request payload")
        if not client.strip():
            raise BadRequest("Invalid request: clientId has only whitespaces")
    if nca_id == owner:
        raise BadRequest(f"Invalid request: Authorized party mapped to account '{nca_id}' is invalid")
    if nca_id == PUBLIC:
        return nca_id
    store = ctx(request).store
    if not await account_exists(store, nca_id):
        raise BadRequest(account_not_found(nca_id))
    if client is not None and client.strip():
        account = await account_of_client(request, client)
        if account is None:
            raise BadRequest(client_not_found(client))
        if account["ncaId"] != nca_id:
            raise BadRequest(f"Invalid request: Account '{nca_id}' and client '{client}' are not setup with each other")
    return nca_id


async def _store_list(request: web.Request, fid: str, vid: str | None, parties: list[str] | None) -> None:
    store = ctx(request).store
    key = _key(fid, vid)
    if parties is None:
        await store.delete(records.AUTHORIZATIONS, key)
    else:
        await store.put(records.AUTHORIZATIONS, key, {"authorizedParties": [{"ncaId": p} for p in parties]})


@routes.post(F)
@routes.post(FV)
async def create_parties(request: web.Request) -> web.Response:
    _, fid, vid, recs, sharing = await _owned(request, "create")
    body = await read_json_object(request)
    raw = body.get("authorizedParties")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("Invalid request: Issues with the request payload")
    wanted = [await _validate_party(request, owner_of(recs[0].value), p) for p in raw]
    if len(set(wanted)) != len(wanted):
        raise BadRequest("Invalid request: Duplicate authorized accounts specified")
    if PUBLIC in wanted:
        if len(wanted) > 1:
            raise BadRequest("Invalid request: Multiple authorized accounts specified with wildcard account")
        if any(isinstance(p, dict) and p.get("clientId") for p in raw):
            raise BadRequest("Invalid request: clientId should not specified with wildcard account")
        if not through_account_twin(request):
            raise BadRequest(f"{_where(fid, vid)}: Only NVIDIA Super Admin can make a function public")
    _refuse_public(request, sharing, fid, vid, "create")
    await _store_list(request, fid, vid, wanted)
    return json_response({"function": _dto(fid, owner_of(recs[0].value), vid, wanted)})


@routes.get(F)
async def get_function_parties(request: web.Request) -> web.Response:
    _, fid, _, recs, sharing = await _owned(request, "get")
    return json_response(
        {"functions": [_dto(fid, owner_of(r.value), r.value["versionId"], sorted(sharing.parties(r.value["versionId"]))) for r in recs]}
    )


@routes.get(FV)
async def get_version_parties(request: web.Request) -> web.Response:
    _, fid, vid, recs, sharing = await _owned(request, "get")
    assert vid is not None
    return json_response({"function": _dto(fid, owner_of(recs[0].value), vid, sorted(sharing.parties(vid)))})


async def _patch(request: web.Request, add: bool) -> web.Response:
    operation = "add" if add else "remove"
    _, fid, vid, recs, sharing = await _owned(request, operation)
    body = await read_json_object(request)
    party = body.get("authorizedParty")
    if isinstance(party, dict) and party.get("ncaId") == PUBLIC:
        raise BadRequest(f"{_where(fid, vid)}: Invalid authz account '*' specified for {operation} operation")
    nca_id = await _validate_party(request, owner_of(recs[0].value), party)
    _refuse_public(request, sharing, fid, vid, operation)
    current = list(_list_of(sharing, vid) or ())
    if not current:
        raise NotFound(f"{_where(fid, vid)}: Does not have any authorized parties to be patched")
    if add:
        if nca_id in current:
            what = "the function" if vid is None else "the function version"
            raise Conflict(f"{_where(fid, vid)}: Account '{nca_id}' is already authorized to access {what}")
        current.append(nca_id)
    else:
        if nca_id not in current:
            what = "the function" if vid is None else "the function version"
            raise NotFound(f"{_where(fid, vid)}: Specified account '{nca_id}' is not an authorized party for {what}")
        current.remove(nca_id)
    await _store_list(request, fid, vid, current)
    return json_response({"function": _dto(fid, owner_of(recs[0].value), vid, current)})


@routes.patch(F + "/add")
@routes.patch(FV + "/add")
async def add_party(request: web.Request) -> web.Response:
    return await _patch(request, True)


@routes.patch(F + "/remove")
@routes.patch(FV + "/remove")
async def remove_party(request: web.Request) -> web.Response:
    return await _patch(request, False)


@routes.delete(F)
@routes.delete(FV)
async def delete_parties(request: web.Request) -> web.Response:
    _, fid, vid, recs, sharing = await _owned(request, "delete")
    _refuse_public(request, sharing, fid, vid, "delete")
    await _store_list(request, fid, vid, None)
    return json_response({"function": _dto(fid, owner_of(recs[0].value), vid, None)})
