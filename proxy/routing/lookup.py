"""Request -> function version, and bearer key -> grant, against the routing snapshot.

No I/O: everything is read from the immutable RoutingTable (spec 5.1 and 5.7)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping

from fngate.proxy.errors import BadRequest, Degraded, Forbidden, MissingAuth, NotFound, PaymentRequired, Unauthorized
from fngate.proxy.routing.snapshot import KeyGrant, RoutingTable, VersionRoute

INVOKE_SCOPE = "invoke_function"
PUBLIC = "*"
_HEX = frozenset("0123456789abcdef")


def _is_uuid(label: str) -> bool:
    """`label` (lower-case) is a UUID in its 8-4-4-4-12 form."""
    return len(label) == 36 and label[8] == label[13] == label[18] == label[23] == "-" and _HEX.issuperset(label.replace("-", ""))


def target_from_host(host: str) -> tuple[str, str | None] | None:
    """`{fid}.invocation.<domain>` or `{vid}.{fid}.invocation.<domain>` -> (fid, vid).

    Host names are case-insensitive (RFC 9110 4.2.3), and so are the UUIDs in them: the
    ids come back lower-case, the form of the routing table's keys."""
    labels = host.split(":", 1)[0].lower().split(".")
    if len(labels) >= 3 and labels[1] == "invocation" and _is_uuid(labels[0]):
        return labels[0], None
    if len(labels) >= 4 and labels[2] == "invocation" and _is_uuid(labels[0]) and _is_uuid(labels[1]):
        return labels[1], labels[0]
    return None


# function-id header values of recent requests without a version header -> (fid, None): a
# client sends the same on every request. Bounded (the values are the client's), emptied when full.
_TARGETS: dict[bytes, tuple[str, None]] = {}
_TARGETS_MAX = 4096


def target_from_headers(function_id: bytes, version_id: bytes | None) -> tuple[str, str | None]:
    """`function-id` / `function-version-id` header values -> (fid, vid): trimmed and
    lower-case (UUIDs are case-insensitive; the table keys them lower-case). An empty
    version header names no version, and no version means every version the key may
    invoke (KeyChecker.check then checks the key against the function)."""
    if version_id is None:
        hit = _TARGETS.get(function_id)
        if hit is None:
            if len(_TARGETS) >= _TARGETS_MAX:
                _TARGETS.clear()
            hit = _TARGETS[function_id] = (function_id.decode("latin-1").strip().lower(), None)
        return hit
    vid = version_id.decode("latin-1").strip().lower()
    return function_id.decode("latin-1").strip().lower(), vid or None


def resolve(table: RoutingTable, function_id: str | None, version_id: str | None, grant: KeyGrant | None = None) -> VersionRoute:
    """The version to invoke: the pinned one, else a uniformly random invokable one (for a
    key of another account, one of the versions shared with it: KeyChecker.check let it in)."""
    if not function_id or not (versions := table.functions.get(function_id)):
        raise NotFound(f"Function '{function_id}': Specified function in account is not found")
    if version_id:
        route = versions.get(version_id)
        if route is None:
            raise NotFound(f"Function '{function_id}' version '{version_id}': Specified function in account is not found")
        if route.invokable:
            return route
        if route.status == "DEGRADED":
            raise Degraded("DEGRADED function cannot be invoked")
        raise NotFound(f"Function '{function_id}' version '{version_id}': Specified function in account is not found")
    invokable = table.invokable.get(function_id, ())
    if invokable and grant is not None and not grant.any_account and invokable[0].nca_id != grant.nca_id:
        invokable = tuple(r for r in invokable if grant.nca_id in r.authorized)
    if invokable:
        return invokable[0] if len(invokable) == 1 else random.choice(invokable)
    if any(r.status == "DEGRADED" for r in versions.values()):
        raise Degraded("DEGRADED function cannot be invoked")
    raise NotFound(f"Function '{function_id}': Specified function in account is not found")


class KeyChecker:
    """Bearer token -> KeyGrant through `table.keys` (sha256 digests).

    Digests of recently seen tokens are cached in a bounded dict, so a request costs
    one dict lookup, not a hash. So are the grants that passed a whole check, per
    (authorization, function, version), for one routing snapshot only: a check's
    outcome depends on nothing but the snapshot, those three and the clock, so the
    cache is emptied when a new snapshot comes (a revoked key or a changed share is a
    new snapshot), and a cached grant's expiry is still checked per request. Refusals
    are never cached: each is checked (and answered) afresh."""

    __slots__ = ("_digests", "_passed", "_passed_table", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self._digests: dict[bytes, str] = {}
        self._passed: dict[tuple[bytes, str | None, str | None], KeyGrant] = {}
        self._passed_table: RoutingTable | None = None  # the snapshot `_passed` holds the checks of
        self.limit = limit

    def digest(self, token: bytes) -> str:
        d = self._digests.get(token)
        if d is None:
            if len(self._digests) >= self.limit:
                self._digests.clear()
            d = self._digests[token] = hashlib.sha256(token).hexdigest()
        return d

    def check(self, table: RoutingTable, authorization: bytes | None, function_id: str | None, version_id: str | None = None) -> KeyGrant:
        if authorization is None:
            raise MissingAuth("Header of type `authorization` was missing")
        key = (authorization, function_id, version_id)
        if table is self._passed_table:
            grant = self._passed.get(key)
            if grant is not None and (grant.expires_at is None or time.time() < grant.expires_at):
                return grant
        else:
            self._passed.clear()
            self._passed_table = table
        grant = self._check(table, authorization, function_id, version_id)
        if len(self._passed) >= self.limit:
            self._passed.clear()
        self._passed[key] = grant
        return grant

    def _check(self, table: RoutingTable, authorization: bytes, function_id: str | None, version_id: str | None) -> KeyGrant:
        """The whole check, in NVCF's order."""
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise MissingAuth("Unauthorized access")
        grant = table.keys.get(self.digest(token.strip()))
        if grant is None:
            raise Unauthorized("Invalid or expired API key")
        now = time.time()
        if grant.expires_at is not None and now >= grant.expires_at:
            raise Unauthorized("Invalid or expired API key")
        if INVOKE_SCOPE not in grant.scopes:
            raise Forbidden("The API key does not allow invoking this function")
        if function_id is not None and not grant.any_account:
            versions = table.functions.get(function_id)
            if versions:  # an unknown function or version is resolve()'s 404
                route = versions.get(version_id) if version_id is not None else next(iter(versions.values()))
                if route is not None:
                    _check_function(grant, function_id, version_id, route, versions)
        return grant


def _check_function(grant: KeyGrant, fid: str, vid: str | None, route: VersionRoute, versions: Mapping[str, VersionRoute]) -> None:
    """NVCF's order (spec 5.3): public, then own, then shared; a key also needs the
    resource entry for the function (3.6)."""
    if route.nca_id == grant.nca_id:
        if grant.function_ids is None or grant.names(fid, vid):
            return
        raise Forbidden(_missing_resource(fid, vid))
    candidates = (route,) if vid is not None else tuple(versions.values())
    if any(PUBLIC in r.authorized for r in candidates):
        raise PaymentRequired(f"Account '{grant.nca_id}': Cloud credits expired - Please contact NVIDIA representatives")
    if not any(grant.nca_id in r.authorized for r in candidates):
        if vid is None:
            raise NotFound(f"Function id '{fid}': Specified function in account '{grant.nca_id}' is not found")
        raise NotFound(f"Function id '{fid}' version '{vid}': Specified function in account '{grant.nca_id}' is not found")
    if grant.shared or grant.names(fid, vid):
        return
    if vid is None:
        raise Forbidden(f"Function '{fid}':  Not shared with the account '{grant.nca_id}'")
    raise Forbidden(f"Function id '{fid}', version '{vid}': Not shared with the account '{grant.nca_id}'")


def _missing_resource(fid: str, vid: str | None) -> str:
    if vid is None:
        return f"Function '{fid}':  Missing resource entry in ApiKey for the function"
    return f"Function id '{fid}', version '{vid}': Missing resource entry in ApiKey for the function"


POLL_PARSE_ERROR = "failed to parse poll duration"
MAX_POLL_SECONDS = 3600


def poll_seconds(value: bytes | None, default: int) -> int:
    """NVCF-POLL-SECONDS as NVCF parses it (spec part 2, 0.2 item 3; NVCF's poll_duration):
    an unsigned decimal integer (an optional leading `+`, as Rust's u64 parse takes), raised
    to 1, at most 3600; anything else (`-1`, `abc`, `1.5`, `3601`, empty) is 400 with the
    detail NVCF sends, `failed to parse poll duration`. A value that is not ASCII counts
    as absent, as NVCF reads the header only when it is visible ASCII."""
    if value is None or not value.isascii():
        return max(default, 1)
    digits = value[1:] if value[:1] == b"+" else value
    if not digits.isdigit():  # ASCII digits only; b"" is not
        raise BadRequest(POLL_PARSE_ERROR)
    n = int(digits)
    if n > MAX_POLL_SECONDS:
        raise BadRequest(POLL_PARSE_ERROR)
    return max(n, 1)
