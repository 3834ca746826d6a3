"""Accounts: /v2/nvcf/accounts (spec 11.1) and the `/v2/nvcf/accounts/{ncaId}/...`
super-admin twins of the user routes (11.2, 3.8).

`account_setup` guards the account routes; creating and deleting an account is "JWT
only" in NVCF, which here means the admin key. A key other than the admin key sees
and changes only its own account. Each twin runs the user route's handler acting for
the path's account: the admin key may name any account, another key needs
`admin:<scope>` and must belong to that account.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from .. import records
from ..accounts import (
    LIMITS,
    NAME_RE,
    NCA_ID_RE,
    UPDATE_MAX_REGISTRY_CREDENTIALS,
    UPDATE_MAX_TELEMETRIES,
    account_exists,
    account_not_found,
    new_account,
)
from ..records import now_iso
from ..sharing import load_all_sharing
from ..store.base import Delete, Put, Record
from .auth import Principal, act_for_account, authenticate, require
from .context import ctx, json_response, read_json_object
from .deployments import deployment_view
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .validation import int_field

SCOPE = "account_setup"
TWIN_PREFIX = "/v2/nvcf/accounts/{ncaId}"

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _name(body: dict[str, Any], *, required: bool) -> str | None:
    name = body.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        if required:
            raise BadRequest("Invalid account name: must not be blank")
        return None
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(f"Invalid account name: Must conform to regex {NAME_RE.pattern}")
    if not 4 <= len(name) <= 36:
        raise BadRequest("Invalid account name: Must be 4 - 36 characters long")
    return name


def _admin_only(principal: Principal, what: str) -> None:
    if not principal.admin:
        raise Forbidden(f"Only the admin key may {what} (NVCF: JWT only)")


def _own(principal: Principal, nca_id: str) -> None:
    """fngate: a key other than the admin key manages only its own account."""
    if not principal.admin and principal.nca_id != nca_id:
        raise NotFound(account_not_found(nca_id))


async def _load(request: web.Request, nca_id: str) -> Record:
    rec = await ctx(request).store.get(records.ACCOUNTS, nca_id)
    if rec is None:
        raise NotFound(account_not_found(nca_id))
    return rec


@routes.post("/v2/nvcf/accounts/{ncaId}")
async def create_account(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    _admin_only(principal, "create accounts")
    nca_id = request.match_info["ncaId"]
    if not NCA_ID_RE.match(nca_id):
        raise BadRequest("Invalid request: ncaId should start with alphanumeric character")
    body = await read_json_object(request)
    name = _name(body, required=True)
    assert name is not None
    limits: dict[str, int] = {}
    for field, hi in zip(LIMITS, (None, None, 25, 25), strict=True):
        value = int_field(body, field, lo=1, hi=hi)
        if value is not None:
            limits[field] = value
    client = body.get("adminClientId")
    if client is not None and (not isinstance(client, str) or not client.strip()):
        raise BadRequest("Validation failed: field 'adminClientId' must be a non-blank string")
    store = ctx(request).store
    if await account_exists(store, nca_id):
        raise Conflict(f"Account with ncaId '{nca_id}' already exists")
    doc = new_account(nca_id, name, client, **limits)
    await store.put(records.ACCOUNTS, nca_id, doc, expect=0)
    return json_response({"account": doc})


@routes.get("/v2/nvcf/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    docs = [r.value for r in await ctx(request).store.list(records.ACCOUNTS)]
    return json_response({"cloudAccounts": [d for d in docs if principal.admin or d["ncaId"] == principal.nca_id]})


@routes.get("/v2/nvcf/accounts/{ncaId}")
async def get_account(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    nca_id = request.match_info["ncaId"]
    _own(principal, nca_id)
    doc = (await _load(request, nca_id)).value
    functions = [r for r in await ctx(request).store.list(records.FUNCTIONS) if r.value.get("ncaId") == nca_id]  # rows, as NVCF counts
    details = {
        **doc,
        "clientIds": doc.get("adminClientIds", []),
        "telemetries": [],
        "registryCredentials": [],
        "currentNumberFunctions": len(functions),
    }
    return json_response({"account": details})


@routes.patch("/v2/nvcf/accounts/{ncaId}")
async def update_account(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    nca_id = request.match_info["ncaId"]
    _own(principal, nca_id)
    rec = await _load(request, nca_id)
    body = await read_json_object(request)
    name = _name(body, required=False)
    updates: dict[str, Any] = {} if name is None else {"name": name}
    for field, hi in zip(LIMITS, (None, None, UPDATE_MAX_TELEMETRIES, UPDATE_MAX_REGISTRY_CREDENTIALS), strict=True):
        value = int_field(body, field, lo=0, hi=hi)
        if value is not None:
            updates[field] = value
    if not updates:
        raise BadRequest("Invalid request: Either name, credential fields or limits should be specified")
    doc = {**rec.value, **updates, "lastUpdatedAt": now_iso()}
    await ctx(request).store.put(records.ACCOUNTS, nca_id, doc, expect=rec.revision)
    return json_response({"account": doc})


async def _client_change(request: web.Request, associate: bool) -> web.Response:
    principal = await require(request, SCOPE)
    nca_id = request.match_info["ncaId"]
    _own(principal, nca_id)
    rec = await _load(request, nca_id)
    body = await read_json_object(request)
    client = body.get("adminClientId")
    if not isinstance(client, str) or not client.strip():
        raise BadRequest("Validation failed: field 'adminClientId' is required")
    clients: list[str] = list(rec.value.get("adminClientIds", []))
    if associate:
        if client in clients:
            raise BadRequest(f"Client '{client}' already associated with NVIDIA Cloud Account '{nca_id}'")
        for other in await ctx(request).store.list(records.ACCOUNTS):
            if client in other.value.get("adminClientIds", []):
                raise Conflict(f"Client with id '{client}' already exists")
        clients.append(client)
    else:
        if client not in clients:
            raise BadRequest(f"Client '{client}' is not associated with NVIDIA Cloud Account '{nca_id}'")
        clients.remove(client)
    doc = {**rec.value, "adminClientIds": clients, "lastUpdatedAt": now_iso()}
    await ctx(request).store.put(records.ACCOUNTS, nca_id, doc, expect=rec.revision)
    return json_response({"account": doc})


@routes.patch("/v2/nvcf/accounts/{ncaId}/clients/associate")
async def associate_client(request: web.Request) -> web.Response:
    return await _client_change(request, True)


@routes.patch("/v2/nvcf/accounts/{ncaId}/clients/disassociate")
async def disassociate_client(request: web.Request) -> web.Response:
    return await _client_change(request, False)


@routes.delete("/v2/nvcf/accounts/{ncaId}")
async def delete_account(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    _admin_only(principal, "delete accounts")
    nca_id = request.match_info["ncaId"]
    c = ctx(request)
    rec = await _load(request, nca_id)
    if nca_id == c.nca_id:
        raise BadRequest(f"Account '{nca_id}': the installation's own account cannot be deleted")
    if any(r.value.get("ncaId") == nca_id for r in await c.store.list(records.FUNCTIONS)):
        raise BadRequest(f"Account '{nca_id}': Cannot delete account with functions defined")
    sharing = await load_all_sharing(c.store)
    if any(nca_id in (s.function_level or ()) or any(nca_id in v for v in s.version_level.values()) for s in sharing.values()):
        raise BadRequest(f"Account '{nca_id}': Cannot delete account with functions authorized")
    ops: list[Put | Delete] = [Delete(records.ACCOUNTS, nca_id, expect=rec.revision)]
    ops += [Delete(records.KEYS, k.key) for k in await c.store.list(records.KEYS) if k.value.get("nca_id") == nca_id]  # its keys go too
    await c.store.commit(ops)
    return web.Response(status=204)


def client_not_found(client_id: str) -> str:
    return f"Client '{client_id}' is not found and may not be onboarded yet"


async def account_of_client(request: web.Request, client_id: str) -> dict[str, Any] | None:
    for rec in await ctx(request).store.list(records.ACCOUNTS):
        if client_id in rec.value.get("adminClientIds", []):
            return rec.value
    return None


@routes.get("/v2/nvcf/clients/{clientId}")
async def get_client(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    client_id = request.match_info["clientId"]
    account = await account_of_client(request, client_id)
    if account is None or not (principal.admin or account["ncaId"] == principal.nca_id):
        raise NotFound(client_not_found(client_id))
    return json_response({"client": {"clientId": client_id, "ncaId": account["ncaId"], "name": account["name"]}})


async def list_account_deployments(request: web.Request) -> web.Response:
    """GET /v2/nvcf/accounts/{ncaId}/deployments: only a twin (admin:deploy_function)."""
    principal = await require(request, "deploy_function")
    store = ctx(request).store
    statuses = {r.key: r.value.get("status", "INACTIVE") for r in await store.list(records.FUNCTIONS)}
    deps = [r for r in await store.list(records.DEPLOYMENTS) if r.value.get("ncaId") == principal.nca_id]
    return json_response({"deployments": [deployment_view(r.value, statuses.get(r.key, "INACTIVE")) for r in deps]})


def twin(handler: Handler) -> Handler:
    async def acting_for_path_account(request: web.Request) -> web.StreamResponse:
        nca_id = request.match_info["ncaId"]
        act_for_account(request, nca_id)
        await authenticate(request)  # checks the key's account before anything else
        if not await account_exists(ctx(request).store, nca_id):
            raise NotFound(account_not_found(nca_id))
        return await handler(request)

    return acting_for_path_account


def twin_routes(tables: Iterable[web.RouteTableDef]) -> list[web.RouteDef]:
    """`/v2/nvcf/accounts/{ncaId}/<rest>` for every `/v2/nvcf/<rest>` route of `tables`."""
    out = [web.get(TWIN_PREFIX + "/deployments", twin(list_account_deployments))]
    for table in tables:
        for route in table:
            if isinstance(route, web.RouteDef) and route.path.startswith("/v2/nvcf/") and not route.path.startswith("/v2/nvcf/accounts"):
                out.append(web.route(route.method, TWIN_PREFIX + route.path[len("/v2/nvcf") :], twin(route.handler)))
    return out
