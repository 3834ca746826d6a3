"""What the control plane keeps in the StateStore: kinds, keys and document shapes.

Documents are stored in their NVCF wire form (camelCase, null fields left out) so
that the API returns them with little translation. The control loops (reconciler,
autoscaler, publisher) read them through the typed views at the end of this module. Observed facts (instances,
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
telemetry-secrets {telemetryId}                   {"ncaId", "name", "value"}  (sealed at rest); delivered to
                                                  the instances of the functions naming the
                                                  telemetry as accounts-secrets.json
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
key-owners      {ownerId}                         a key owner's status (control.key_owners): {"owner_type",
                                                  "owner_id", "status" (ACTIVE|SUSPENDED),
                                                  "status_updated_at"}; an owner without one is ACTIVE
authorizations  {functionId}[/{versionId}]        {"authorizedParties": [{"ncaId"}]}: who a function
                                                  (or one version) is shared with (control.sharing)
accounts        {ncaId}                           an account (control.accounts)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fngate.control.states import State

FUNCTIONS = "functions"
DEPLOYMENTS = "deployments"
SECRETS = "secrets"
INSTANCES = "instances"
SCALE = "scale"
KEYS = "keys"
KEY_OWNERS = "key-owners"
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


# -- typed views -------------------------------------------------------------------------------
# The reconciler, the autoscaler and the publisher read stored documents through these:
# each document is parsed once, where it is read, into one frozen value with the defaults
# applied; nothing else looks up camelCase keys. Writes still go through the documents
# (the API owns their wire form; a read-modify-write keeps fields a view does not know).


def _text(doc: Mapping[str, Any], name: str, default: str = "") -> str:
    value = doc.get(name)
    return str(value) if value else default


def _int(doc: Mapping[str, Any], name: str, default: int) -> int:
    value = doc.get(name)
    return int(value) if value else default


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One item of a deployment's `deploymentSpecifications`."""

    id: str  # gpuSpecificationId ("default" when absent)
    gpu: str = ""
    instance_type: str = ""
    backend: str = ""  # "": the default backend
    min_instances: int = 0
    max_instances: int = 0  # never below min_instances
    max_request_concurrency: int = 1  # slots per instance, at least 1
    configuration: Mapping[str, Any] = field(default_factory=dict)  # free-form, for the backend
    autoscaling: Mapping[str, Any] = field(default_factory=dict)  # autoscalingConfiguration

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> GpuSpec:
        lo = _int(doc, "minInstances", 0)
        return cls(
            id=_text(doc, "gpuSpecificationId", "default"),
            gpu=_text(doc, "gpu"),
            instance_type=_text(doc, "instanceType"),
            backend=_text(doc, "backend"),
            min_instances=lo,
            max_instances=max(_int(doc, "maxInstances", lo), lo),
            max_request_concurrency=max(_int(doc, "maxRequestConcurrency", 1), 1),
            configuration=dict(doc.get("configuration") or {}),
            autoscaling=dict(doc.get("autoscalingConfiguration") or {}),
        )

    def clamp(self, replicas: int) -> int:
        """`replicas` within [min_instances, max_instances]."""
        return min(max(replicas, self.min_instances), self.max_instances)


NO_GPU_SPEC = GpuSpec("default")  # what a version without a deployment routes with


@dataclass(frozen=True, slots=True)
class Deployment:
    """A `deployments` document."""

    specs: tuple[GpuSpec, ...]
    graceful: bool = False  # an undeploy is draining (internal: the API never returns it)
    updated_at: str = ""  # lastUpdatedAt, else createdAt

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Deployment:
        return cls(
            specs=tuple(GpuSpec.parse(s) for s in doc.get("deploymentSpecifications") or ()),
            graceful=bool(doc.get("graceful")),
            updated_at=_text(doc, "lastUpdatedAt") or _text(doc, "createdAt"),
        )


TELEMETRY_FIELDS = ("logsTelemetryId", "metricsTelemetryId", "tracesTelemetryId")


def _telemetry_ids(telemetries: Any) -> tuple[str, ...]:
    if not isinstance(telemetries, Mapping):
        return ()
    return tuple(dict.fromkeys(str(telemetries[f]) for f in TELEMETRY_FIELDS if telemetries.get(f)))


@dataclass(frozen=True, slots=True)
class FunctionVersion:
    """A `functions` document: one version of a function."""

    function_id: str
    version_id: str
    status: State
    name: str = ""
    nca_id: str = "fngate"
    inference_url: str = "/"
    inference_port: int = 8000
    container_image: str = ""
    container_args: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)  # containerEnvironment
    health_uri: str = ""  # "" when absent
    health: Mapping[str, Any] | None = None  # the `health` object, when given
    telemetry_ids: tuple[str, ...] = ()  # the telemetries it sends logs, metrics or traces to
    rate_limit: Mapping[str, Any] | None = None  # the `rateLimit` object, when set
    function_type: str = "DEFAULT"  # functionType
    models: tuple[Mapping[str, Any], ...] = ()  # `models` entries that are objects

    @property
    def grpc(self) -> bool:
        return self.inference_url == "/grpc"

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> FunctionVersion:
        health = doc.get("health")
        return cls(
            function_id=str(doc["id"]),
            version_id=str(doc["versionId"]),
            status=State(doc.get("status") or State.INACTIVE.value),
            name=_text(doc, "name"),
            nca_id=_text(doc, "ncaId", "fngate"),
            inference_url=_text(doc, "inferenceUrl", "/"),
            inference_port=_int(doc, "inferencePort", 8000),
            container_image=_text(doc, "containerImage"),
            container_args=_text(doc, "containerArgs"),
            environment={str(e["key"]): str(e.get("value", "")) for e in doc.get("containerEnvironment") or () if "key" in e},
            health_uri=_text(doc, "healthUri"),
            health=dict(health) if isinstance(health, dict) else None,
            telemetry_ids=_telemetry_ids(doc.get("telemetries")),
            rate_limit=dict(rate_limit) if isinstance(rate_limit := doc.get("rateLimit"), dict) and rate_limit else None,
            function_type=_text(doc, "functionType", "DEFAULT"),
            models=tuple(dict(m) for m in doc.get("models") or () if isinstance(m, dict)),
        )


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """An `instances` document: the reconciler writes it from a backend's events."""

    instance_id: str
    function_id: str
    version_id: str
    gpu_spec_id: str
    status: str  # "ACTIVE" (ready) or "STARTING"
    host: str = ""
    port: int = 0
    backend: str = ""
    instance_type: str = ""
    gpu: str = ""
    nca_id: str = "fngate"
    draining: bool = False
    created_at: str = ""
    updated_at: str = ""
    location: str = "local"

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> InstanceRecord:
        return cls(
            instance_id=str(doc["instanceId"]),
            function_id=_text(doc, "functionId"),
            version_id=str(doc["functionVersionId"]),
            gpu_spec_id=_text(doc, "gpuSpecificationId"),
            status=_text(doc, "instanceStatus"),
            host=_text(doc, "host"),
            port=_int(doc, "port", 0),
            backend=_text(doc, "backend"),
            instance_type=_text(doc, "instanceType"),
            gpu=_text(doc, "gpu"),
            nca_id=_text(doc, "ncaId", "fngate"),
            draining=bool(doc.get("draining")),
            created_at=_text(doc, "instanceCreatedAt"),
            updated_at=_text(doc, "instanceUpdatedAt"),
            location=_text(doc, "location", "local"),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id,
            "functionId": self.function_id,
            "functionVersionId": self.version_id,
            "instanceType": self.instance_type,
            "instanceStatus": self.status,
            "ncaId": self.nca_id,
            "gpu": self.gpu,
            "backend": self.backend,
            "location": self.location,
            "instanceCreatedAt": self.created_at,
            "instanceUpdatedAt": self.updated_at,
            "host": self.host,
            "port": self.port,
            "gpuSpecificationId": self.gpu_spec_id,
            "draining": self.draining,
        }


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """A `scale` document: the autoscaler's replica count for one GPU spec."""

    replicas: int
    reason: str = ""
    at: str = ""

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> ScaleDecision:
        return cls(int(doc["replicas"]), _text(doc, "reason"), _text(doc, "at"))

    def to_doc(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "reason": self.reason, "at": self.at}
