"""NVCF's API-keys request, as its docs give it (spec 3.2), for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

NVCF_SERVICE_ID = "nvidia-cloud-functions-ncp-service-id-aketm"
OWNER = "test@nvcf-api.local"
# the invocation key of NVCF's docs
INVOCATION_SCOPES = ["invoke_function", "list_functions", "queue_details", "list_functions_details"]
WILDCARDS = [{"id": "*", "type": "account-functions"}, {"id": "*", "type": "authorized-functions"}]


def key_headers(owner: str = OWNER) -> dict[str, str]:
    return {"Key-Issuer-Service": "nvcf-api", "Key-Issuer-Id": NVCF_SERVICE_ID, "Key-Owner-Id": owner}


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def policy(scopes: list[str], resources: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "aud": NVCF_SERVICE_ID,
        "auds": [NVCF_SERVICE_ID],
        "product": "nv-cloud-functions",
        "resources": WILDCARDS if resources is None else resources,
        "scopes": scopes,
    }


def key_body(
    scopes: list[str] | None = None,
    resources: list[dict[str, str]] | None = None,
    *,
    description: str = "invocation key",
    days: float = 30,
) -> dict[str, Any]:
    """The docs' create body: snake_case `expires_at`, one policy for NVCF's audience."""
    return {
        "description": description,
        "expires_at": in_days(days),
        "audience_service_ids": [NVCF_SERVICE_ID],
        "authorizations": {"policies": [policy(INVOCATION_SCOPES if scopes is None else scopes, resources)]},
    }


def function_resource(function_id: str, version_id: str = "*") -> dict[str, str]:
    return {"id": f"{function_id}/{version_id}", "type": "function"}
