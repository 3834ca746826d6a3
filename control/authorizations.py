"""What an API key's `authorizations` grant, read the way NVCF reads them.

The API-keys service stores `authorizations` as opaque JSON (spec 3.2). NVCF takes
the first policy whose `aud` is its own service id (3.6), turns `scopes[]` into
authorities, and `resources[]` into function access:

- `{"type": "account-functions", "id": "*"}`: every function of the key's account;
- `{"type": "authorized-functions", "id": "*"}`: every function shared with it;
- `{"type": "function", "id": "<fid>/<vid>" | "<fid>/*"}`: that version or function.

Entries that do not parse are skipped, as NVCF does. `Authority.covers` is the
escalation rule fngate adds: a key may only hand out what it holds itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NVCF_SERVICE_ID = "nvidia-cloud-functions-ncp-service-id-aketm"
PRODUCT = "nv-cloud-functions"
ACCOUNT_FUNCTIONS = "account-functions"
AUTHORIZED_FUNCTIONS = "authorized-functions"
FUNCTION = "function"


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class FunctionAccess:
    """The functions a key reaches, from its policy's resources."""

    own: bool = False  # account-functions:*
    shared: bool = False  # authorized-functions:*
    functions: frozenset[str] = frozenset()  # "<fid>/*" entries
    versions: frozenset[str] = frozenset()  # "<fid>/<vid>" entries

    @classmethod
    def from_resources(cls, resources: Iterable[Any]) -> FunctionAccess:
        own = shared = False
        functions: set[str] = set()
        versions: set[str] = set()
        for res in resources:
            if not isinstance(res, Mapping):
                continue
            kind, rid = res.get("type"), res.get("id")
            if not isinstance(rid, str):
                continue
            if kind == ACCOUNT_FUNCTIONS and rid == "*":
                own = True
            elif kind == AUTHORIZED_FUNCTIONS and rid == "*":
                shared = True
            elif kind == FUNCTION and "/" in rid:
                fid_text, _, vid_text = rid.partition("/")
                fid = _uuid(fid_text)
                if fid is None:
                    continue
                if vid_text == "*":
                    functions.add(fid)
                elif (vid := _uuid(vid_text)) is not None:
                    versions.add(f"{fid}/{vid}")
        versions = {v for v in versions if v.split("/", 1)[0] not in functions}
        return cls(own, shared, frozenset(functions), frozenset(versions))

    def names(self, function_id: str, version_id: str | None) -> bool:
        """The key has a `function` resource entry for this function (or this version);
        without a version, only a `<fid>/*` entry counts (NVCF's hasResourcesScopedForFunction)."""
        if function_id in self.functions:
            return True
        return version_id is not None and f"{function_id}/{version_id}" in self.versions

    def reaches(self, function_id: str, version_id: str | None, *, owned: bool, shared: bool) -> bool:
        """May the key touch this function, which its account owns or has been shared?"""
        if owned and self.own:
            return True
        if shared and self.shared:
            return True
        return (owned or shared) and self.names(function_id, version_id)


@dataclass(frozen=True, slots=True)
class Authority:
    """The effective policy of a key: NVCF's first policy for its audience."""

    scopes: frozenset[str] = frozenset()
    access: FunctionAccess = field(default_factory=FunctionAccess)
    matched: bool = False  # a policy for NVCF's audience was found at all

    @classmethod
    def from_authorizations(cls, authorizations: Any, audience: str = NVCF_SERVICE_ID) -> Authority:
        policies = authorizations.get("policies") if isinstance(authorizations, Mapping) else None
        for policy in policies if isinstance(policies, list) else ():
            if isinstance(policy, Mapping) and policy.get("aud") == audience:
                scopes = policy.get("scopes")
                resources = policy.get("resources")
                return cls(
                    frozenset(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else frozenset(),
                    FunctionAccess.from_resources(resources if isinstance(resources, list) else ()),
                    True,
                )
        return cls()


def all_policies(authorizations: Any) -> list[Authority]:
    """Every policy of an authorizations document, whatever its audience: what a new
    key would carry, so the escalation check looks at all of them, not just NVCF's."""
    policies = authorizations.get("policies") if isinstance(authorizations, Mapping) else None
    out = []
    for policy in policies if isinstance(policies, list) else ():
        if isinstance(policy, Mapping):
            aud = policy.get("aud")
            out.append(Authority.from_authorizations({"policies": [policy]}, aud if isinstance(aud, str) else ""))
    return out


def admin_authorizations(scopes: Iterable[str]) -> dict[str, Any]:
    """The authorizations recorded for the admin key: every scope, every function."""
    return {
        "policies": [
            {
                "aud": NVCF_SERVICE_ID,
                "auds": [NVCF_SERVICE_ID],
                "product": PRODUCT,
                "resources": [{"id": "*", "type": ACCOUNT_FUNCTIONS}, {"id": "*", "type": AUTHORIZED_FUNCTIONS}],
                "scopes": sorted(scopes),
            }
        ]
    }


def escalation(caller: Authority, wanted: Authority, relation: Mapping[str, tuple[bool, bool]]) -> str | None:
    """Why `wanted` (a policy of a key being created or updated) exceeds `caller`, or None.

    `relation` maps every function id `wanted` names to (owned by the caller's account,
    shared with it). A function the caller cannot reach is never granted."""
    extra = sorted(wanted.scopes - caller.scopes)
    if extra:
        return f"scope(s) {', '.join(extra)} not held by the calling key"
    if wanted.access.own and not caller.access.own:
        return f"resource {ACCOUNT_FUNCTIONS}:* not held by the calling key"
    if wanted.access.shared and not caller.access.shared:
        return f"resource {AUTHORIZED_FUNCTIONS}:* not held by the calling key"
    named: list[tuple[str, str | None]] = [(fid, None) for fid in sorted(wanted.access.functions)]
    named += [(v.split("/", 1)[0], v.split("/", 1)[1]) for v in sorted(wanted.access.versions)]
    for fid, vid in named:
        owned, shared = relation.get(fid, (False, False))
        if not caller.access.reaches(fid, vid, owned=owned, shared=shared):
            return f"resource {FUNCTION}:{fid}/{vid or '*'} not held by the calling key"
    return None


def named_functions(authorities: Iterable[Authority]) -> set[str]:
    """The function ids named by `function` resources in these policies."""
    out: set[str] = set()
    for a in authorities:
        out |= a.access.functions
        out |= {v.split("/", 1)[0] for v in a.access.versions}
    return out
