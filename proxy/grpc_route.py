"""Which function version a gRPC call is for, and whether its key may invoke it.

Reads only the routing snapshot (a plain attribute read): metadata `function-id` and
optional `function-version-id` first, then the `:authority` host labels
(`{function}.…` or `{version}.{function}.…`), and `authorization: Bearer <key>`
checked against the published key digests. Every refusal is a GrpcError with the
status a gRPC client expects.
"""

from __future__ import annotations

import random
import time
import uuid

from proxy.grpc import GrpcError, Status
from proxy.routing import RoutingTable, VersionRoute, key_digest

INVOKE_SCOPE = "invoke_function"
_TRANSIENT_STATES = frozenset({"DEPLOYING"})  # not invokable yet, but soon: retrying makes sense


def _is_uuid(label: str) -> bool:
    try:
        uuid.UUID(label)
    except ValueError:
        return False
    return len(label) == 36


def target_from(function_id: str | None, version_id: str | None, authority: str | None) -> tuple[str, str | None]:
    """(function id, version id or None) from metadata, else from the host labels."""
    if function_id:
        return function_id, version_id or None
    if authority:
        labels = authority.rsplit(":", 1)[0].split(".") if not authority.startswith("[") else []
        if len(labels) >= 2 and _is_uuid(labels[0]) and _is_uuid(labels[1]):
            return labels[1], labels[0]
        if labels and _is_uuid(labels[0]):
            return labels[0], None
    raise GrpcError(Status.INVALID_ARGUMENT, "missing function-id metadata")


def authenticate(table: RoutingTable, authorization: str | None, function_id: str) -> None:
    if not authorization:
        raise GrpcError(Status.UNAUTHENTICATED, "missing authorization metadata")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GrpcError(Status.UNAUTHENTICATED, "authorization must be 'Bearer <api key>'")
    grant = table.keys.get(key_digest(token.strip()))
    now = time.time()
    if grant is None or (grant.expires_at is not None and now >= grant.expires_at):
        raise GrpcError(Status.UNAUTHENTICATED, "invalid or expired API key")
    if not grant.allows(INVOKE_SCOPE, function_id, now):
        raise GrpcError(Status.PERMISSION_DENIED, f"API key may not invoke function {function_id}")


def resolve(table: RoutingTable, function_id: str, version_id: str | None) -> VersionRoute:
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
    if not invokable:
        raise _not_invokable(tuple(versions.values()))
    return invokable[0] if len(invokable) == 1 else random.choice(invokable)


def _not_invokable(routes: tuple[VersionRoute, ...]) -> GrpcError:
    states = sorted({r.status for r in routes})
    what = f"function {routes[0].function_id} is {'/'.join(states)}"
    if _TRANSIENT_STATES.intersection(states):
        return GrpcError(Status.UNAVAILABLE, what + ": not invokable yet")
    return GrpcError(Status.FAILED_PRECONDITION, what + ": not invokable")


def route_call(table: RoutingTable, metadata: dict[str, str]) -> VersionRoute:
    """Authenticate and resolve one call from its request headers (lower-case names)."""
    function_id, version_id = target_from(
        metadata.get("function-id"), metadata.get("function-version-id"), metadata.get(":authority")
    )
    authenticate(table, metadata.get("authorization"), function_id)
    route = resolve(table, function_id, version_id)
    if not route.grpc:
        raise GrpcError(Status.FAILED_PRECONDITION, f"function {function_id} is not a gRPC function")
    return route
