"""Authorized parties: the accounts a function (or one version) is shared with (spec 5).

Stored in the `authorizations` kind: key `{fid}` holds the function-level list, key
`{fid}/{vid}` a version's own list. A version is shared with an account when that
account is in either list; `*` in a list makes it public.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import records
from .store.base import StateStore

PUBLIC = "*"


@dataclass(frozen=True, slots=True)
class Sharing:
    function_level: tuple[str, ...] | None = None  # None: no function-level list
    version_level: dict[str, tuple[str, ...]] = field(default_factory=dict)  # vid -> its list

    def parties(self, version_id: str) -> frozenset[str]:
        return frozenset(self.function_level or ()) | frozenset(self.version_level.get(version_id, ()))

    def shared_with(self, version_id: str, nca_id: str) -> bool:
        return nca_id in self.parties(version_id)

    def public(self, version_id: str) -> bool:
        return PUBLIC in self.parties(version_id)

    def allows(self, version_id: str, nca_id: str) -> bool:
        """Another account may see this version: shared with it, or public."""
        parties = self.parties(version_id)
        return nca_id in parties or PUBLIC in parties


def parties_of(doc: dict[str, object]) -> tuple[str, ...]:
    raw = doc.get("authorizedParties")
    if not isinstance(raw, list):
        return ()
    return tuple(str(p["ncaId"]) for p in raw if isinstance(p, dict) and isinstance(p.get("ncaId"), str))


async def load_sharing(store: StateStore, function_id: str) -> Sharing:
    function_level = await store.get(records.AUTHORIZATIONS, function_id)
    versions = await store.list(records.AUTHORIZATIONS, function_id + "/")
    return Sharing(
        None if function_level is None else parties_of(function_level.value),
        {r.key.split("/", 1)[1]: parties_of(r.value) for r in versions},
    )


async def load_all_sharing(store: StateStore) -> dict[str, Sharing]:
    """function id -> Sharing, for every function that has a list (one store read)."""
    function_level: dict[str, tuple[str, ...]] = {}
    version_level: dict[str, dict[str, tuple[str, ...]]] = {}
    for r in await store.list(records.AUTHORIZATIONS):
        fid, _, vid = r.key.partition("/")
        if vid:
            version_level.setdefault(fid, {})[vid] = parties_of(r.value)
        else:
            function_level[fid] = parties_of(r.value)
    return {fid: Sharing(function_level.get(fid), version_level.get(fid, {})) for fid in function_level.keys() | version_level.keys()}
