"""Key owners and their status, as NVCF's API-keys service keeps them (spec 3.1, KeyOwnerDto).

An owner exists once it has a key. It is ACTIVE until an admin suspends it (PUT
/v1/admin/users/{id}/status); then every key it owns, in every service, stops working:
the management API refuses them, introspection answers "Key not found." and the routing
publisher leaves them out of the gateway's snapshot (the way a suspended key is left out).
ACTIVE again restores them. Only a status change writes a `key-owners` record; an owner
without one is ACTIVE since its first key was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import records
from .keys import ACTIVE, OWNER_USER, SUSPENDED, StoredKey, iso_instant, now_utc
from .records import parse_iso
from .store.base import StateStore

STATUSES = (ACTIVE, SUSPENDED)
OWNER_NOT_FOUND = "Key owner not found"
OWNER_SUSPENDED = "Key owner suspended."


@dataclass(frozen=True, slots=True)
class KeyOwner:
    owner_id: str
    status: str = ACTIVE
    status_updated_at: str = ""
    owner_type: str = OWNER_USER

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def view(self) -> dict[str, Any]:
        """NVCF's KeyOwnerDto (snake_case)."""
        return {
            "owner_type": self.owner_type,
            "owner_id": self.owner_id,
            "status": self.status,
            "status_updated_at": self.status_updated_at,
        }

    def to_doc(self) -> dict[str, Any]:
        return self.view()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> KeyOwner:
        return cls(
            owner_id=str(doc["owner_id"]),
            status=str(doc.get("status", ACTIVE)),
            status_updated_at=str(doc.get("status_updated_at", "")),
            owner_type=str(doc.get("owner_type", OWNER_USER)),
        )


def _first_key_time(keys: list[StoredKey]) -> str:
    """As NVCF stamps a new owner: when its first key was made, to the second."""
    times = sorted(k.created_at for k in keys if k.created_at)
    if not times:
        return iso_instant(now_utc().replace(microsecond=0))
    try:
        return iso_instant(parse_iso(times[0]).replace(microsecond=0))
    except ValueError:
        return times[0]


async def load_owner(store: StateStore, owner_id: str) -> KeyOwner | None:
    """The USER owner `owner_id`: its record, else ACTIVE when it has keys, else None."""
    rec = await store.get(records.KEY_OWNERS, owner_id)
    if rec is not None:
        return KeyOwner.from_doc(rec.value)
    now = now_utc()
    owned = [k for r in await store.list(records.KEYS) if (k := StoredKey.from_doc(r.value)).owner_id == owner_id]
    owned = [k for k in owned if k.owner_type == OWNER_USER and not k.gone(now)]
    return KeyOwner(owner_id, ACTIVE, _first_key_time(owned)) if owned else None


async def owner_active(store: StateStore, owner_id: str) -> bool:
    rec = await store.get(records.KEY_OWNERS, owner_id)
    return rec is None or KeyOwner.from_doc(rec.value).active


async def set_status(store: StateStore, owner: KeyOwner, status: str) -> KeyOwner:
    updated = KeyOwner(owner.owner_id, status, iso_instant(now_utc()), owner.owner_type)
    await store.put(records.KEY_OWNERS, owner.owner_id, updated.to_doc())
    return updated


def suspended_owners(docs: list[dict[str, Any]]) -> frozenset[str]:
    """The ids of the suspended owners among `key-owners` documents."""
    return frozenset(o.owner_id for o in map(KeyOwner.from_doc, docs) if not o.active)
