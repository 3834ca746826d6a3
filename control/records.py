"""What the control plane keeps in the StateStore: kinds, keys and document shapes.

Documents are stored in their NVCF wire form (camelCase, null fields left out) so
that the API returns them with little translation. Observed facts (instances,
scale decisions) live in their own kinds, written by the reconciler/autoscaler, so
that user writes and system writes never fight over one document.

kind            key                              value
--------------  -------------------------------  ---------------------------------------------
functions       {functionId}/{versionId}          Function object (spec 4.3) without
                                                  activeInstances; `status` is the lifecycle state
deployments     {functionId}/{versionId}          Deployment object (spec 4.4) without
                                                  functionStatus; specs carry gpuSpecificationId;
                                                  "graceful": bool while an undeploy drains
secrets         {functionId}/{versionId}          {"secrets": {name: value}}  (values never returned;
                                                  sealed at rest, control.store.sealed)
assets          {ncaId}/{assetId}                {"assetId", "ncaId", "contentType", "description",
                                                  "createdEpoch", "uploaded", "size", "createdAt"};
                                                  the bytes are <data-dir>/assets/{ncaId}/{assetId}
telemetry-secrets {telemetryId}                   {"ncaId", "name", "value"}  (sealed at rest)
instances       {versionId}/{instanceId}          Instance object (spec 4.3 activeInstances item)
                                                  plus "host", "port", "gpuSpecificationId"
scale           {versionId}/{gpuSpecificationId}  {"replicas": n, "reason": str, "at": iso8601}
                                                  the autoscaler's decision within [min, max]
keys            {keyId}                           an API key (control.keys.StoredKey): {"id",
                                                  "digest" (sha256 hex of the key), "suffix" (its
                                                  last 3 chars), "status", "owner_type",
                                                  "owner_id", "issuer_service_id",
                                                  "audience_service_ids", "description",
                                                  "created_at", "expires_at", "authorizations"
                                                  (NVCF policies), "nca_id", "authz_updated_at"}
authorizations  {functionId}[/{versionId}]        {"authorizedParties": [{"ncaId"}]}: who a function
                                                  (or one version) is shared with (control.sharing)
accounts        {ncaId}                           an account (control.accounts)
"""

from __future__ import annotations

from datetime import UTC, datetime

FUNCTIONS = "functions"
DEPLOYMENTS = "deployments"
SECRETS = "secrets"
INSTANCES = "instances"
SCALE = "scale"
KEYS = "keys"
AUTHORIZATIONS = "authorizations"
ACCOUNTS = "accounts"
TELEMETRY_SECRETS = "telemetry-secrets"
ASSETS = "assets"
SEALED_KINDS = (SECRETS, TELEMETRY_SECRETS)  # kinds kept encrypted in the store (control.store.sealed)


def version_key(function_id: str, version_id: str) -> str:
    return f"{function_id}/{version_id}"


def asset_key(nca_id: str, asset_id: str) -> str:
    return f"{nca_id}/{asset_id}"


def instance_key(version_id: str, instance_id: str) -> str:
    return f"{version_id}/{instance_id}"


def scale_key(version_id: str, gpu_spec_id: str) -> str:
    return f"{version_id}/{gpu_spec_id}"


# -- timestamps: every stored time is UTC ISO-8601 with milliseconds and a Z -------------------
def iso_at(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_iso() -> str:
    return iso_at(datetime.now(UTC).timestamp())


def parse_iso(value: str) -> datetime:
    """ISO-8601 with a zone (a trailing Z allowed); naive times are taken as UTC.
    ValueError when it is not a time."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
