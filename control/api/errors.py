"""The management API's errors: each carries its HTTP status and renders as RFC 7807.

Handlers raise these; one middleware (control.api.app) turns them, and aiohttp's own
HTTP errors (unknown route, wrong method, oversized body), into problem+json of the
spec's form: {type: "urn:nv-boot:problem-details:<kebab>", title, status, detail, instance}.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_TYPE = "urn:nv-boot:problem-details:"


class ControlError(Exception):
    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ControlError):
    status = 400


class Unauthorized(ControlError):
    status = 401


class Forbidden(ControlError):
    status = 403


class NotFound(ControlError):
    status = 404


class Conflict(ControlError):
    status = 409


class PayloadTooLarge(ControlError):
    status = 413


class TooManyRequests(ControlError):
    status = 429


class UnsupportedMediaType(ControlError):
    status = 415


def invalid(field: str, message: str) -> BadRequest:
    """A validation failure that names the offending field."""
    return BadRequest(f"Validation failed: field '{field}' {message}")


def problem(status: int, detail: str | None, instance: str) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {
        "type": PROBLEM_TYPE + phrase.lower().replace(" ", "-").replace("'", ""),
        "title": phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return {k: v for k, v in body.items() if v is not None}
