"""The per-request checks of NVCF's soak test, and how a failed one is named.

A request succeeds when its status is 200, it carries `nvcf-status: fulfilled` (unless
the target is an instance rather than a gateway) and its body is not empty. The
failure message starts with a category token, so the SLI evaluation can tell an
*error* (bad status, broken connection, an arrival the generator had to drop) from a
request that completed but failed a *check*.
"""

from __future__ import annotations

import re

# categories, as the first word of a failure message
STATUS = "status"  # HTTP status other than expected (an error)
TRANSPORT = "transport"  # no response at all: refused, reset, timed out (an error)
DROPPED = "dropped"  # open-loop arrival not issued: too many in flight (an error)
CHECK = "check"  # completed, but failed a content check (nvcf-status, empty body, stream shape)

ERROR_CATEGORIES = frozenset({STATUS, TRANSPORT, DROPPED})
_CATEGORY = re.compile(r"(?:CatchResponseError|Failed)\(['\"](status|transport|dropped|check)\b")


class Failed(Exception):
    """A failure the load users report themselves (its message starts with a category)."""


def invocation_failure(status: int, nvcf_status: str | None, body_length: int, *, direct: bool = False) -> str | None:
    """None when the response passes the soak checks, else the reason."""
    if status == 0:
        return f"{TRANSPORT} no response"
    if status != 200:
        return f"{STATUS} {status}"
    if not direct and (nvcf_status or "").lower() != "fulfilled":
        return f"{CHECK} nvcf-status={nvcf_status or 'missing'}"
    if body_length <= 0:
        return f"{CHECK} empty body"
    return None


def category(error_text: str) -> str:
    """The category of a failure as Locust wrote it in its failures CSV (e.g. "CatchResponseError('status 500')").

    Anything that is not one of our messages is an exception raised by the client
    (connection refused, reset, timeout): a transport error.
    """
    m = _CATEGORY.search(error_text)
    return m.group(1) if m else TRANSPORT


def is_error(error_text: str) -> bool:
    return category(error_text) in ERROR_CATEGORIES
