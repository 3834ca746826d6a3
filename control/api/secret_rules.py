"""NVCF's rules for one secret {name, value} (SecretDto), shared by function create and PUT.

name: ^[a-z0-9A-Z][a-z0-9A-Z_.-]*$, 1-48 characters. value: a JSON string or object
whose text (an object's serialized text), trimmed, is 1-32768 characters.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .errors import BadRequest

NAME_PATTERN = r"^[a-z0-9A-Z][a-z0-9A-Z\_\.\-]*$"  # as NVCF spells it in its message
_NAME_RE = re.compile(r"^[a-z0-9A-Z][a-z0-9A-Z_.\-]*$")
MAX_NAME = 48
MAX_VALUE = 32768


def _fail(where: str, message: str) -> BadRequest:
    return BadRequest(f"Validation failed: field '{where}' {message}" if where else message)


def check_secret(item: Any, where: str = "") -> tuple[str, str | dict[str, Any]]:
    """One secret -> (name, value), or BadRequest with NVCF's message (prefixed by the
    field when `where` is given)."""
    if not isinstance(item, dict):
        raise _fail(where, "must be an object {name, value}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{where}.name" if where else "", "Invalid secret name: must be 1 - 48 chars long")
    if not 1 <= len(name) <= MAX_NAME:
        raise _fail(f"{where}.name" if where else "", f"Invalid secret name: must be 1 - {MAX_NAME} chars long")
    if not _NAME_RE.match(name):
        raise _fail(f"{where}.name" if where else "", f"Invalid secret name: Must conform to regex {NAME_PATTERN}")
    value = item.get("value")
    if isinstance(value, dict):
        text = orjson.dumps(value).decode()
    elif isinstance(value, str):
        text = value
    else:
        raise _fail(f"{where}.value" if where else "", "Invalid secret value specified")
    if not 1 <= len(text.strip()) <= MAX_VALUE:
        raise _fail(f"{where}.value" if where else "", "Invalid secret value specified")
    return name, value
