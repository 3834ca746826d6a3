"""The Backend contract: where function instances run.

A backend is told, per function version, how many instances it should run
(`apply`, idempotent and level-triggered: calling it again with the same numbers
changes nothing), which chosen instances to stop (`stop_instances`, for a drained
scale-down) and when to stop them all (`remove`). It reports what actually
happens as InstanceEvents on `events()`; it never decides function states, the
reconciler does that from these facts.

Implementations: local processes (the embedded default), static endpoints,
Kubernetes. Each must pass tests/backends/test_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable


class InstanceEventKind(str, Enum):
    STARTING = "starting"  # placed, not yet ready
    READY = "ready"  # health check passes; `host`/`port` are where to send traffic
    LOST = "lost"  # gone or unhealthy: stop routing to it
    FAILED = "failed"  # could not be placed or never became healthy; `detail` says why


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    kind: InstanceEventKind
    version_id: str
    instance_id: str
    host: str = ""
    port: int = 0
    detail: str = ""  # human-readable reason (becomes healthInfo on FAILED)
    gpu_spec_id: str = ""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """From the function's `health` object (or healthUri + defaults)."""

    protocol: str = "HTTP"  # "HTTP" | "gRPC"
    uri: str = "/v2/health/ready"
    port: int = 8000  # the container's port; backends map it to the instance's real port
    timeout_s: float = 10.0
    expected_status: int = 200


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Everything a backend needs to run instances of one function version."""

    function_id: str
    version_id: str
    function_name: str
    container_image: str
    gpu_spec_id: str
    gpu: str
    instance_type: str
    inference_port: int = 8000
    inference_url: str = "/"
    container_args: str = ""
    environment: dict[str, str] = field(default_factory=dict)  # containerEnvironment + NVCF_* vars
    health: HealthCheck = HealthCheck()
    secrets: dict[str, Any] = field(default_factory=dict)  # name -> value, for /var/secrets/secrets.json
    # the account-level secrets of the telemetries the function names (name -> value), for
    # /var/secrets/accounts-secrets.json, as NVCF renders them for its telemetry collector
    account_secrets: dict[str, Any] = field(default_factory=dict)
    configuration: dict[str, Any] = field(default_factory=dict)  # the gpu spec's free-form `configuration`
    max_request_concurrency: int = 1
    nca_id: str = "fngate"


class BackendError(Exception):
    """A request the backend refuses outright (unknown image, bad configuration).
    The reconciler turns it into ERROR with this message as healthInfo."""


@runtime_checkable
class Backend(Protocol):
    name: str

    async def apply(self, spec: InstanceSpec, replicas: int) -> None:
        """Converge the number of instances of (spec.version_id, spec.gpu_spec_id) to
        `replicas`. Idempotent. Scaling down stops instances that are idle first."""
        ...

    async def remove(self, version_id: str, *, graceful: bool = True) -> None:
        """Stop every instance of the version. Idempotent."""
        ...

    async def stop_instances(self, version_id: str, instance_ids: list[str], *, graceful: bool = True) -> None:
        """Stop exactly these instances of the version (the reconciler drained them first):
        each becomes LOST, the others are untouched. Ids that are unknown, already stopped
        or of another version are ignored. The reconciler then calls `apply` with the
        lowered count."""
        ...

    def events(self) -> AsyncIterator[InstanceEvent]:
        """Instance facts, as they happen. Each call returns a new subscription that
        first replays the current state (a READY per ready instance) and then follows."""
        ...

    def capacity(self) -> list[dict[str, Any]]:
        """The instance types this backend can place: [{name, gpu, gpuCount, cpuCores,
        systemMemory, gpuMemory, total, free}], for supportedGpus / clusterGroups."""
        ...

    async def aclose(self) -> None:
        """Stop everything this backend started."""
        ...


def nvcf_environment(spec: InstanceSpec, *, backend: str, env: str, region: str) -> dict[str, str]:
    """The NVCF_* variables every instance gets (spec section 9), whatever runs it."""
    return {
        "NVCF_BACKEND": backend,
        "NVCF_ENV": env,
        "NVCF_FUNCTION_ID": spec.function_id,
        "NVCF_FUNCTION_NAME": spec.function_name,
        "NVCF_FUNCTION_VERSION_ID": spec.version_id,
        "NVCF_INSTANCETYPE": spec.instance_type,
        "NVCF_NCA_ID": spec.nca_id,
        "NVCF_REGION": region,
        "NVCF_MAX_REQUEST_CONCURRENCY": str(spec.max_request_concurrency),
    }
