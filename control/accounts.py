"""Accounts (NCA ids): who owns functions and keys (spec 11.1).

Stored in the `accounts` kind under the NCA id, in the wire form of NVCF's AccountDto.
The installation's own account (`nca_id` in the config) always exists; the admin key
acts for it unless it names another account.
"""

from __future__ import annotations

import re
from typing import Any

from . import records
from .records import now_iso
from .store.base import Conflict, StateStore

NAME_RE = re.compile(r"^[a-z0-9A-Z][a-z0-9A-Z\-_]*$")
NCA_ID_RE = re.compile(r"^[a-zA-Z0-9]")
DEFAULT_MAX_FUNCTIONS = 50
DEFAULT_MAX_TASKS = 50
DEFAULT_MAX_TELEMETRIES = 25
DEFAULT_MAX_REGISTRY_CREDENTIALS = 25
UPDATE_MAX_TELEMETRIES = 50
UPDATE_MAX_REGISTRY_CREDENTIALS = 50
LIMITS = ("maxFunctionsAllowed", "maxTasksAllowed", "maxTelemetriesAllowed", "maxRegistryCredentialsAllowed")


def account_not_found(nca_id: str) -> str:
    return f"Account with ncaId '{nca_id}' not found"


def new_account(nca_id: str, name: str, admin_client_id: str | None = None, **limits: int) -> dict[str, Any]:
    return {
        "ncaId": nca_id,
        "name": name,
        "adminClientIds": [admin_client_id] if admin_client_id else [],
        "maxFunctionsAllowed": limits.get("maxFunctionsAllowed", DEFAULT_MAX_FUNCTIONS),
        "maxTasksAllowed": limits.get("maxTasksAllowed", DEFAULT_MAX_TASKS),
        "maxTelemetriesAllowed": limits.get("maxTelemetriesAllowed", DEFAULT_MAX_TELEMETRIES),
        "maxRegistryCredentialsAllowed": limits.get("maxRegistryCredentialsAllowed", DEFAULT_MAX_REGISTRY_CREDENTIALS),
        "lastUpdatedAt": now_iso(),
    }


def default_name(nca_id: str) -> str:
    """A valid account name for the installation's own account."""
    name = re.sub(r"[^a-z0-9A-Z\-_]", "-", nca_id)[:36]
    return name if len(name) >= 4 and NAME_RE.match(name) else "fngate-default"


async def ensure_default_account(store: StateStore, nca_id: str) -> None:
    if await store.get(records.ACCOUNTS, nca_id) is None:
        try:
            await store.put(records.ACCOUNTS, nca_id, new_account(nca_id, default_name(nca_id)), expect=0)
        except Conflict:
            pass  # another fngate process sharing the store made it first


async def account_exists(store: StateStore, nca_id: str) -> bool:
    return await store.get(records.ACCOUNTS, nca_id) is not None
