"""Encryption at rest for secret values: AES-256-GCM under one data key.

The key comes from ``FNGATE_SECRETS_KEY`` (32 bytes, base64 or base64url; every
process that shares a Redis store must be given the same one), or else from
``<data-dir>/secrets.key``, created 0600 on first start. A sealed document is
``{"sealed": "v1.<base64url(nonce || ciphertext || tag)>"}``; the record's kind
and key are the associated data, so a sealed value copied onto another record
does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "FNGATE_SECRETS_KEY"
KEY_FILE = "secrets.key"
_VERSION = "v1."
_NONCE = 12


class SecretsKeyError(Exception):
    """The data key is missing, malformed, or not the one the value was sealed with."""


def _decode_key(text: str, where: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise SecretsKeyError(f"{where}: not base64") from None
    if len(key) != 32:
        raise SecretsKeyError(f"{where}: the key must be 32 bytes (base64 of 32 random bytes), got {len(key)}")
    return key


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: it holds keys and the database."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by its owner only (never briefly wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretsKeyError("the secrets key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A separate key for another use (e.g. signing asset URLs), bound to `purpose`."""
        return hmac.new(self._key, b"fngate:" + purpose.encode(), hashlib.sha256).digest()

    @classmethod
    def load(cls, data_dir: Path, env: dict[str, str] | None = None) -> SecretBox:
        """The key from FNGATE_SECRETS_KEY, else <data_dir>/secrets.key (created when missing)."""
        environ = os.environ if env is None else env
        if environ.get(KEY_ENV):
            return cls(_decode_key(environ[KEY_ENV], KEY_ENV))
        path = private_dir(data_dir) / KEY_FILE
        if not path.exists():
            try:
                write_private(path, base64.urlsafe_b64encode(os.urandom(32)) + b"\n")
            except FileExistsError:
                pass  # another process created it first: use theirs
        path.chmod(0o600)
        return cls(_decode_key(path.read_text(), str(path)))

    def seal(self, value: dict[str, Any], context: str) -> dict[str, Any]:
        nonce = os.urandom(_NONCE)
        ciphertext = self._aead.encrypt(nonce, orjson.dumps(value), context.encode())
        return {"sealed": _VERSION + base64.urlsafe_b64encode(nonce + ciphertext).decode()}

    def open(self, doc: dict[str, Any], context: str) -> dict[str, Any]:
        token = doc.get("sealed")
        if not isinstance(token, str) or not token.startswith(_VERSION):
            raise SecretsKeyError(f"{context}: the stored value is not sealed")
        try:
            blob = base64.urlsafe_b64decode(token[len(_VERSION) :])
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], context.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsKeyError(
                f"{context}: cannot decrypt the stored secrets (was {KEY_ENV} or {KEY_FILE} changed, "
                "or do processes sharing this store use different keys?)"
            ) from None
        value = orjson.loads(plain)
        if not isinstance(value, dict):
            raise SecretsKeyError(f"{context}: the sealed value is not an object")
        return value
