"""What a key value is and what it allows: POST /v1/introspect and the policy check NVCF's
API runs for every API key, POST /v1/namespaces/{namespace}/evaluations/{policy} (spec
3.1, 3.3, 3.6), as the API-keys service answers them.

Introspection refuses, in this order: a value that is not a key (400, the parser's
words), an unknown, expired or suspended key (404 `Key not found`), an audience the key
was not made for (400 `audience_service_id invalid`), a suspended owner (404 `Key not
found.`). The evaluation turns every such failure, and a key without a policy for the
namespace's audience, into `{"result": {"allowed": false}}` with 200.

NVCF calls these service to service; in fngate the admin key may ask about any key, and
a key with `manage_keys` about the keys of its own account (another account's key is
"not found", as it is on /v1/keys).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from fngate.proxy.routing.snapshot import key_digest

from .. import keys
from ..key_owners import owner_active
from ..keys import StoredKey
from .auth import Principal, require
from .context import ctx, json_response
from .errors import BadRequest, ControlError, NotFound
from .keys import KEY_NOT_FOUND, read_body

routes = web.RouteTableDef()

RULE_RE = re.compile(r"^[A-Za-z0-9_-]+\.allow$")  # NVCF's [\w-]+\.allow (ASCII \w in Java)
INTROSPECT_MAX_AGE = 360
EVALUATION_MAX_AGE = 60


async def introspect(request: web.Request, principal: Principal, value: str | None, audience: str | None) -> StoredKey:
    """The ACTIVE key `value` names, for `audience`, or the API-keys service's error."""
    problem = keys.format_error(value)
    if problem is not None:
        raise BadRequest(problem)
    store = ctx(request).store
    key = await keys.find_by_digest(store, key_digest(str(value)))
    if key is None or key.status_at(keys.now_utc()) != keys.ACTIVE:
        raise NotFound(KEY_NOT_FOUND)
    if not principal.admin and key.nca_id != principal.nca_id:
        raise NotFound(KEY_NOT_FOUND)
    if audience not in key.audience_service_ids:
        raise BadRequest("audience_service_id invalid")
    if not key.is_admin and not await owner_active(store, key.owner_id):
        raise NotFound("Key not found.")  # NVCF pretends a suspended owner's key does not exist
    return key


def _cached(body: Mapping[str, Any], max_age: int) -> web.Response:
    resp = json_response(body)
    resp.headers["Cache-Control"] = f"max-age={max_age}"
    return resp


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"Failed to read request: {name} must be a string")
    return value


@routes.post("/v1/introspect")
async def introspect_key(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    body = await read_body(request)
    key = await introspect(request, principal, _text(body, "key"), _text(body, "audience_service_id"))
    doc = {
        "owner_type": key.owner_type,
        "owner_id": key.owner_id,
        "key_id": key.id,
        "issuer_service_id": key.issuer_service_id,
        "authorizations": key.authorizations,
    }
    return _cached(doc, INTROSPECT_MAX_AGE)


def _policy_for(key: StoredKey, audience: str) -> dict[str, Any] | None:
    """The first policy whose `aud` is the audience (NVCF's AuthzService)."""
    policies = key.authorizations.get("policies")
    for policy in policies if isinstance(policies, list) else ():
        if isinstance(policy, dict) and policy.get("aud") == audience:
            return policy
    return None


@routes.post("/v1/namespaces/{namespace}/evaluations/{policyName}")
async def evaluate_policy(request: web.Request) -> web.Response:
    principal = await require(request, keys.MANAGE_KEYS)
    namespace, rule = request.match_info["namespace"], request.match_info["policyName"]
    if not RULE_RE.match(rule):
        raise BadRequest(f"Rule name is not supported: {rule}")
    body = await read_body(request)
    given = body.get("input")
    value = given.get("apiKey") if isinstance(given, dict) else None
    if not isinstance(value, str) or not value:
        raise BadRequest("Api key is not provided")
    audience = keys.NAMESPACES.get(namespace)
    if audience is None:
        raise BadRequest(f"Namespace '{namespace}' is not configured")
    result: dict[str, Any] = {"allowed": False}
    try:
        key = await introspect(request, principal, value, audience)
    except ControlError:
        key = None
    policy = _policy_for(key, audience) if key is not None else None
    if key is not None and policy is not None:
        result = {"allowed": True, "ncaId": key.nca_id, "ownerId": key.owner_id, "policy": policy}
    return _cached({"namespace": namespace, "rule_name": rule, "result": result}, EVALUATION_MAX_AGE)
