"""Which function version a gRPC call is for, and whether its key may invoke it.

Reads only the routing snapshot (a plain attribute read): metadata `function-id` and
optional `function-version-id` first, then the `:authority` host as for HTTP
(`{function}.invocation.…` or `{version}.{function}.invocation.…`). The key check
and the version choice are HTTP's (proxy.lookup: the gateway's one KeyChecker, and
`resolve`); only the answers for versions that exist but cannot be invoked differ,
since a gRPC client expects UNAVAILABLE (retry later) or FAILED_PRECONDITION rather
than HTTP's 404. Every refusal is a ProxyError, which carries its grpc_status.
A call routed on its own (the invocation port, or sessions off) is rate-limited here;
on the gRPC port a session is checked when it starts (proxy/grpc/sessions.py), as NVCF.
"""

from __future__ import annotations

from collections.abc import Mapping

from fngate.proxy.errors import BadRequest, NotFound, NotInvokable, NotReady, RateLimited, WrongProtocol
from fngate.proxy.routing.lookup import KeyChecker, resolve, target_from_headers, target_from_host
from fngate.proxy.routing.rate_limits import RateLimits
from fngate.proxy.routing.snapshot import KeyGrant, RoutingTable, VersionRoute

_TRANSIENT_STATES = frozenset({"DEPLOYING"})  # not invokable yet, but soon: retrying makes sense


def call_target(function_id: bytes | None, version_id: bytes | None, authority: bytes | None) -> tuple[str, str | None]:
    """(function id, version id or None) from metadata, else from the host labels, parsed
    as HTTP parses them (proxy/routing/lookup.py); an empty function-id names none."""
    if function_id:
        return target_from_headers(function_id, version_id)
    hit = target_from_host(authority.decode("latin-1")) if authority else None
    if hit is None:
        raise BadRequest("missing function-id metadata")
    return hit


def target_from(function_id: str | None, version_id: str | None, authority: str | None) -> tuple[str, str | None]:
    """call_target for metadata already decoded to text."""
    return call_target(
        function_id.encode("latin-1") if function_id else None,
        version_id.encode("latin-1") if version_id is not None else None,
        authority.encode("latin-1") if authority else None,
    )


def resolve_call(table: RoutingTable, function_id: str, version_id: str | None, grant: KeyGrant | None = None) -> VersionRoute:
    """lookup.resolve, with gRPC's answers for a function or pinned version that exists
    but is not invokable."""
    try:
        return resolve(table, function_id, version_id, grant)
    except NotFound:
        versions = table.functions.get(function_id)
        if not versions:
            raise
        if version_id is None:
            raise _not_invokable(tuple(versions.values())) from None
        pinned = versions.get(version_id)
        if pinned is None:
            raise
        raise _not_invokable((pinned,)) from None


def _not_invokable(routes: tuple[VersionRoute, ...]) -> NotInvokable:
    states = sorted({r.status for r in routes})
    what = f"function {routes[0].function_id} is {'/'.join(states)}"
    if _TRANSIENT_STATES.intersection(states):
        return NotReady(what + ": not invokable yet")
    return NotInvokable(what + ": not invokable")


def route_call(table: RoutingTable, metadata: Mapping[str, str], keys: KeyChecker, rate_limits: RateLimits | None = None) -> VersionRoute:
    """Authenticate and resolve one call from its request headers (lower-case names),
    then apply the function's rate limit (account tier only, as NVCF's gRPC proxy)."""
    return route_and_grant(table, metadata, keys, rate_limits)[0]


def route_and_grant(
    table: RoutingTable, metadata: Mapping[str, str], keys: KeyChecker, rate_limits: RateLimits | None = None
) -> tuple[VersionRoute, KeyGrant]:
    """route_call, with the caller's grant (its account labels NVCF's metrics)."""
    function_id, version_id = target_from(metadata.get("function-id"), metadata.get("function-version-id"), metadata.get(":authority"))
    authorization = metadata.get("authorization")
    return authorize_call(
        table, function_id, version_id, None if authorization is None else authorization.encode("latin-1"), keys, rate_limits
    )


def authorize_call(
    table: RoutingTable,
    function_id: str,
    version_id: str | None,
    authorization: bytes | None,
    keys: KeyChecker,
    rate_limits: RateLimits | None = None,
) -> tuple[VersionRoute, KeyGrant]:
    """(route, grant) of a call whose target is known: HTTP's key check, version choice and
    rate limit (Engine.authorize's order), with gRPC's answers."""
    grant = keys.check(table, authorization, function_id, version_id)
    route = resolve_call(table, function_id, version_id, grant)
    if not route.grpc:
        raise WrongProtocol(f"function {function_id} is not a gRPC function")
    if rate_limits is not None and route.rate_limit:
        try:
            rate_limits.check(route, grant, callers=False)
        except RateLimited:
            raise RateLimited("exceeded rate limit") from None  # NVCF's grpc-message
    return route, grant
