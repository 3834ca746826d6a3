"""API keys as NVCF's API-keys service makes them (spec 3.2-3.3), and the admin key.

A key is `prefix + base64url(32 random bytes) + the first 21 characters of
base64url(HMAC-SHA3-256(domain, those bytes))`. The tail is a checksum that lets a
malformed key be refused without a lookup; the key's strength is its 256 random
bits. The store keeps only the key's sha256 digest (proxy.routing.key_digest, also
what the gateway receives) and its last three characters, for the masked value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fngate.control.store.base import StateStore
from fngate.proxy.routing.snapshot import key_digest

from . import records
from .authorizations import NVCF_SERVICE_ID, admin_authorizations
from .records import parse_iso

KEY_PREFIX = "nvapi-nvcf-stg-"  # the self-hosted (`ncp` profile) prefix
_CHECKSUM_DOMAIN = b"fngate api key"
_KEY_RE = re.compile(r"^" + re.escape(KEY_PREFIX) + r"([A-Za-z0-9_-]{43})([A-Za-z0-9_-]{21})$")
MASK = "**********"

ADMIN_KEY_ID = "admin"
ADMIN_KEY_ENV = "FNGATE_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"
ADMIN_OWNER = "fngate-admin"
LEGACY_OWNER = "fngate-cli"  # keys made before owners existed: the CLI's default owner lists them

ACTIVE, EXPIRED, SUSPENDED = "ACTIVE", "EXPIRED", "SUSPENDED"
OWNER_USER, OWNER_SYSTEM = "USER", "SYSTEM"
MAX_KEYS_PER_OWNER = 8
MAX_TTL_DAYS = 365
MAX_AUTHZ_CHARS = 2048
MIN_AUTHZ_UPDATE_INTERVAL = 3.0  # seconds
KEEP_AFTER_EXPIRED = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """A service registered with the API-keys service (NVCF's ServiceDto): who may issue
    keys, for which audiences, with which limits."""

    service_id: str
    service_name: str
    audience_service_ids: tuple[str, ...]
    max_api_keys_per_user: int = MAX_KEYS_PER_OWNER
    max_api_key_ttl_days: int = MAX_TTL_DAYS
    max_authz_size_chars: int = MAX_AUTHZ_CHARS
    min_authz_update_interval_seconds: int = int(MIN_AUTHZ_UPDATE_INTERVAL)

    def view(self) -> dict[str, Any]:
        return {
            "service_id": self.service_id,
            "service_name": self.service_name,
            "audience_service_ids": list(self.audience_service_ids),
            "max_api_keys_per_user": self.max_api_keys_per_user,
            "max_api_key_ttl_days": self.max_api_key_ttl_days,
            "max_authz_size_chars": self.max_authz_size_chars,
            "min_authz_update_interval_seconds": self.min_authz_update_interval_seconds,
        }


# fngate is one service, NVCF's own (the self-hosted registration of nvcf-api)
SERVICES = {NVCF_SERVICE_ID: ServiceRegistration(NVCF_SERVICE_ID, "nvcf-api", (NVCF_SERVICE_ID,))}
ISSUERS = {sid: frozenset(s.audience_service_ids) for sid, s in SERVICES.items()}  # issuer -> audiences it may use
NAMESPACES = {"nvcf": NVCF_SERVICE_ID}  # policy-evaluation namespace -> the audience its policies carry

MANAGE_KEYS = "manage_keys"  # fngate's own scope for /v1/keys (the API-keys service has no auth)
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
    "authorize_clients",
    "account_setup",
    "list_cluster_groups",
    MANAGE_KEYS,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _checksum(random_part: bytes) -> str:
    return _b64(hmac.new(_CHECKSUM_DOMAIN, random_part, hashlib.sha3_256).digest())[:21]


def new_key() -> str:
    raw = secrets.token_bytes(32)
    return KEY_PREFIX + _b64(raw) + _checksum(raw)


def well_formed(key: str) -> bool:
    """The key has NVCF's shape and its checksum tail matches."""
    return format_error(key) is None


def format_error(key: str | None) -> str | None:
    """Why `key` is not an API key, in the API-keys service's words (ApiKeyParser), or None."""
    if not key:
        return "api key empty"
    m = _KEY_RE.match(key)
    if m is None:
        return "api key format invalid"
    try:
        raw = base64.urlsafe_b64decode(m.group(1) + "=")
    except ValueError:
        return "Invalid key"
    return None if len(raw) == 32 and hmac.compare_digest(_checksum(raw), m.group(2)) else "Invalid key"


def masked(suffix: str) -> str:
    return KEY_PREFIX + MASK + suffix


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso_instant(when: datetime) -> str:
    """As Java's Instant prints a millisecond instant: '...00.123Z', or '...00Z' at .000."""
    when = when.astimezone(UTC)
    ms = when.microsecond // 1000
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms:03d}Z" if ms else base + "Z"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One `keys` record (see control.records)."""

    id: str
    digest: str
    suffix: str
    owner_id: str
    nca_id: str
    authorizations: dict[str, Any]
    created_at: str
    description: str = ""
    expires_at: str | None = None
    status: str = ACTIVE  # ACTIVE or SUSPENDED as stored; EXPIRED is computed (status_at)
    owner_type: str = OWNER_USER
    issuer_service_id: str = NVCF_SERVICE_ID
    audience_service_ids: tuple[str, ...] = (NVCF_SERVICE_ID,)
    authz_updated_at: float = 0.0  # unix seconds of the last authorizations change

    @property
    def is_admin(self) -> bool:
        return self.id == ADMIN_KEY_ID

    def expiry(self) -> datetime | None:
        return parse_iso(self.expires_at) if self.expires_at else None

    def status_at(self, now: datetime) -> str:
        expiry = self.expiry()
        if self.status == ACTIVE and expiry is not None and expiry <= now:
            return EXPIRED
        return self.status

    def gone(self, now: datetime) -> bool:
        """NVCF deletes a key's row two days after it expires."""
        expiry = self.expiry()
        return expiry is not None and expiry + KEEP_AFTER_EXPIRED <= now

    def view(self, now: datetime, *, value: str | None = None, with_authorizations: bool = True) -> dict[str, Any]:
        """NVCF's KeyDto (snake_case); `value` is the full key at creation, else masked."""
        doc: dict[str, Any] = {
            "id": self.id,
            "value": value or masked(self.suffix),
            "status": self.status_at(now),
            "owner_type": self.owner_type,
            "owner_id": self.owner_id,
            "issuer_service_id": self.issuer_service_id,
            "audience_service_ids": list(self.audience_service_ids),
            "description": self.description,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "nca_id": self.nca_id,  # fngate: the account the key acts for
        }
        if with_authorizations:
            doc["authorizations"] = self.authorizations
        return doc

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "digest": self.digest,
            "suffix": self.suffix,
            "status": self.status,
            "owner_type": self.owner_type,
            "owner_id": self.owner_id,
            "issuer_service_id": self.issuer_service_id,
            "audience_service_ids": list(self.audience_service_ids),
            "description": self.description,
            "created_at": self.created_at,
            "authorizations": self.authorizations,
            "nca_id": self.nca_id,
            "authz_updated_at": self.authz_updated_at,
        }
        if self.expires_at is not None:
            doc["expires_at"] = self.expires_at
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> StoredKey:
        if "keyId" in doc:  # written before keys followed NVCF's API-keys service
            return _from_legacy(doc)
        return cls(
            id=doc["id"],
            digest=doc["digest"],
            suffix=doc.get("suffix", ""),
            owner_id=doc.get("owner_id", ""),
            nca_id=doc.get("nca_id", "fngate"),
            authorizations=doc.get("authorizations") or {},
            created_at=doc.get("created_at", ""),
            description=doc.get("description", ""),
            expires_at=doc.get("expires_at"),
            status=doc.get("status", ACTIVE),
            owner_type=doc.get("owner_type", OWNER_USER),
            issuer_service_id=doc.get("issuer_service_id", NVCF_SERVICE_ID),
            audience_service_ids=tuple(doc.get("audience_service_ids") or (NVCF_SERVICE_ID,)),
            authz_updated_at=float(doc.get("authz_updated_at") or 0.0),
        )

    def with_authorizations(self, authorizations: dict[str, Any], at: float) -> StoredKey:
        return replace(self, authorizations=authorizations, authz_updated_at=at)

    def with_status(self, status: str) -> StoredKey:
        return replace(self, status=status)


def _from_legacy(doc: dict[str, Any]) -> StoredKey:
    """The earlier record shape ({keyId, scopes, functionIds}) as an NVCF policy."""
    fids = doc.get("functionIds")
    resources = (
        [{"id": "*", "type": "account-functions"}, {"id": "*", "type": "authorized-functions"}]
        if fids is None
        else [{"id": f"{fid}/*", "type": "function"} for fid in fids]
    )
    authorizations = {
        "policies": [{"aud": NVCF_SERVICE_ID, "product": "nv-cloud-functions", "scopes": doc.get("scopes", []), "resources": resources}]
    }
    return StoredKey(
        id=doc["keyId"],
        digest=doc["digest"],
        suffix="",
        owner_id=ADMIN_OWNER if doc["keyId"] == ADMIN_KEY_ID else LEGACY_OWNER,
        nca_id=doc.get("ncaId", "fngate"),
        authorizations=authorizations,
        created_at=doc.get("createdAt", ""),
        description=doc.get("description", ""),
        expires_at=doc.get("expiresAt"),
        owner_type=OWNER_SYSTEM if doc["keyId"] == ADMIN_KEY_ID else OWNER_USER,
    )


def admin_key_record(admin_key: str, nca_id: str) -> StoredKey:
    return StoredKey(
        id=ADMIN_KEY_ID,
        digest=key_digest(admin_key),
        suffix=admin_key[-3:],
        owner_id=ADMIN_OWNER,
        owner_type=OWNER_SYSTEM,
        nca_id=nca_id,
        authorizations=admin_authorizations(SCOPES),
        created_at=iso_instant(now_utc()),
        description="fngate admin key",
    )


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


async def find_by_digest(store: StateStore, digest: str) -> StoredKey | None:
    """The stored key with this digest that has not reached its deletion time, or None."""
    now = now_utc()
    for rec in await store.list(records.KEYS):
        if hmac.compare_digest(str(rec.value.get("digest", "")), digest):
            key = StoredKey.from_doc(rec.value)
            return None if key.gone(now) else key
    return None


async def ensure_admin_record(store: StateStore, admin_key: str, nca_id: str = "fngate") -> None:
    """Keep the `keys` kind's admin entry in step with the current admin key, so that
    the routing publisher grants it to the gateway like any other key."""
    current = await store.get(records.KEYS, ADMIN_KEY_ID)
    wanted = admin_key_record(admin_key, nca_id)
    if current is not None:
        have = StoredKey.from_doc(current.value)
        if (
            have.digest == wanted.digest
            and have.authorizations == wanted.authorizations
            and have.nca_id == nca_id
            and "keyId" not in current.value
        ):
            return
    await store.put(records.KEYS, ADMIN_KEY_ID, wanted.to_doc())
