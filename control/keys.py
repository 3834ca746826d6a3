"""API keys: scopes, generation, the admin credential, and the stored (hashed) form.

A key is shown to its owner once, at creation; the store keeps only its sha256
digest (proxy.routing.key_digest), which is also what the gateway receives.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fngate.proxy.routing import key_digest

from . import records
from .records import now_iso, parse_iso

KEY_PREFIX = "nvapi-"
ADMIN_KEY_ID = "admin"
ADMIN_KEY_ENV = "FNGATE_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"

MANAGE_KEYS = "manage_keys"  # fngate's own scope for /v1/keys
SCOPES = (
    "invoke_function",
    "list_functions",
    "list_functions_details",
    "register_function",
    "update_function",
    "delete_function",
    "deploy_function",
    "queue_details",
    "update_secrets",
    "list_cluster_groups",
    MANAGE_KEYS,
)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(36)


def key_doc(
    key: str,
    key_id: str,
    *,
    scopes: list[str],
    description: str = "",
    function_ids: list[str] | None = None,
    expires_at: str | None = None,
    nca_id: str = "fngate",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "keyId": key_id,
        "digest": key_digest(key),
        "description": description,
        "scopes": list(scopes),
        "createdAt": now_iso(),
        "ncaId": nca_id,
    }
    if function_ids is not None:
        doc["functionIds"] = list(function_ids)
    if expires_at is not None:
        doc["expiresAt"] = expires_at
    return doc


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API shows about a key: everything but the digest."""
    return {k: v for k, v in doc.items() if k != "digest"}


def is_expired(doc: dict[str, Any], now: datetime | None = None) -> bool:
    exp = doc.get("expiresAt")
    return exp is not None and parse_iso(exp) <= (now or datetime.now(UTC))


def load_or_create_admin_key(data_dir: Path, environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """(admin key, generated now?). FNGATE_ADMIN_KEY wins; else <data-dir>/admin.key,
    written once with mode 0600 on first start."""
    env = os.environ if environ is None else environ
    if env.get(ADMIN_KEY_ENV):
        return env[ADMIN_KEY_ENV], False
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key, False
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key, True


async def ensure_admin_record(store, admin_key: str, nca_id: str = "fngate") -> None:
    """Keep the `keys` kind's admin entry in step with the current admin key, so that
    the routing publisher grants it to the gateway like any other key."""
    current = await store.get(records.KEYS, ADMIN_KEY_ID)
    if current is not None and current.value.get("digest") == key_digest(admin_key) and set(current.value.get("scopes", ())) >= set(SCOPES):
        return
    doc = key_doc(admin_key, ADMIN_KEY_ID, scopes=list(SCOPES), description="fngate admin key", nca_id=nca_id)
    await store.put(records.KEYS, ADMIN_KEY_ID, doc)
