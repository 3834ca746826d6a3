"""Path and query parameters converted as NVCF's Spring controllers convert them.

A UUID path variable that does not parse, or a boolean query parameter that is not
one of Spring's spellings (true/false, on/off, yes/no, 1/0, any case), is a 400 with
Spring's "Failed to convert" detail, never a 404 or a silent default.
"""

from __future__ import annotations

import re

from aiohttp import web

from .errors import BadRequest

# path variables NVCF declares as java.util.UUID
UUID_PARAMS = frozenset(("functionId", "functionVersionId", "versionId", "deploymentId", "gpuSpecificationId", "telemetryId", "assetId"))
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TRUE = frozenset(("true", "on", "yes", "1"))
_FALSE = frozenset(("false", "off", "no", "0"))


def conversion_error(name: str, value: str) -> BadRequest:
    return BadRequest(f"Failed to convert '{name}' with value: '{value}'")


def bad_uuid_param(match_info: dict[str, str] | web.UrlMappingMatchInfo) -> BadRequest | None:
    """The 400 for the first UUID path variable that does not parse, else None."""
    for name, value in match_info.items():
        if name in UUID_PARAMS and not _UUID_RE.match(value):
            return conversion_error(name, value)
    return None


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise conversion_error(name, raw)
