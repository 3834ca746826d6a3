"""Which function version a gRPC call is for, and whether its key may invoke it.

Reads only the routing snapshot (a plain attribute read): metadata `function-id` and
optional `function-version-id` first, then the `:authority` host as for HTTP
(`{function}.invocation.…` or `{version}.{function}.invocation.…`). The key check is
the HTTP one (proxy.lookup.KeyChecker); only the answers for versions that cannot be
invoked differ, since a gRPC client expects UNAVAILABLE (retry later) or
FAILED_PRECONDITION rather than HTTP's 404. Every refusal carries its grpc_status.
"""

from __future__ import annotations

import random

from fngate.proxy.grpc import GrpcError, Status
from fngate.proxy.lookup import KeyChecker, target_from_host
from fngate.proxy.routing import KeyGrant, RoutingTable, VersionRoute

_TRANSIENT_STATES = frozenset({"DEPLOYING"})  # not invokable yet, but soon: retrying makes sense
_KEYS = KeyChecker()


def target_from(function_id: str | None, version_id: str | None, authority: str | None) -> tuple[str, str | None]:
    """(function id, version id or None) from metadata, else from the host labels; ids
    lower-case (UUIDs are case-insensitive; the routing table keys them lower-case)."""
    if function_id:
        return function_id.strip().lower(), version_id.strip().lower() if version_id else None
    hit = target_from_host(authority) if authority else None
    if hit is None:
        raise GrpcError(Status.INVALID_ARGUMENT, "missing function-id metadata")
    return hit


def resolve(table: RoutingTable, function_id: str, version_id: str | None, grant: KeyGrant | None = None) -> VersionRoute:
    versions = table.functions.get(function_id)
    if not versions:
        raise GrpcError(Status.NOT_FOUND, f"function {function_id} not found")
    if version_id is not None:
        route = versions.get(version_id)
        if route is None:
            raise GrpcError(Status.NOT_FOUND, f"function {function_id} version {version_id} not found")
        if not route.invokable:
            raise _not_invokable((route,))
        return route
    invokable = table.invokable.get(function_id, ())
    if invokable and grant is not None and not grant.any_account and invokable[0].nca_id != grant.nca_id:
        invokable = tuple(r for r in invokable if grant.nca_id in r.authorized)  # the versions shared with it
    if not invokable:
        raise _not_invokable(tuple(versions.values()))
    return invokable[0] if len(invokable) == 1 else random.choice(invokable)


def _not_invokable(routes: tuple[VersionRoute, ...]) -> GrpcError:
    states = sorted({r.status for r in routes})
    what = f"function {routes[0].function_id} is {'/'.join(states)}"
    if _TRANSIENT_STATES.intersection(states):
        return GrpcError(Status.UNAVAILABLE, what + ": not invokable yet")
    return GrpcError(Status.FAILED_PRECONDITION, what + ": not invokable")


def route_call(table: RoutingTable, metadata: dict[str, str], keys: KeyChecker = _KEYS) -> VersionRoute:
    """Authenticate and resolve one call from its request headers (lower-case names)."""
    function_id, version_id = target_from(metadata.get("function-id"), metadata.get("function-version-id"), metadata.get(":authority"))
    authorization = metadata.get("authorization")
    grant = keys.check(table, None if authorization is None else authorization.encode("latin-1"), function_id, version_id)
    route = resolve(table, function_id, version_id, grant)
    if not route.grpc:
        raise GrpcError(Status.FAILED_PRECONDITION, f"function {function_id} is not a gRPC function")
    return route
