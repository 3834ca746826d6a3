"""Validation of GPU specifications (spec 4.4) against the configured capacity."""

from __future__ import annotations

from typing import Any

from .errors import invalid
from .validation import int_field, list_field, object_field, string_field, strings_field

OPTIONAL_STRINGS = ("backend", "cpuArch", "os", "driverVersion", "storage", "systemMemory", "gpuMemory")
STRING_SETS = ("clusters", "regions", "attributes", "availabilityZones")
PATCHABLE = ("minInstances", "maxInstances", "autoscalingConfiguration", "autoscalingConfigurationPolicy")
POLICIES = ("CUSTOM_CONFIGURATION", "PLATFORM_CONFIGURATION")


class Capacity:
    """The GPUs, instance types and backends deployments may name."""

    def __init__(self, entries: list[dict[str, Any]], backends: frozenset[str] = frozenset()) -> None:
        self.types = {e["name"]: e for e in entries}
        self.gpus = {e["gpu"] for e in entries}
        self.backends = backends or frozenset(e["backend"] for e in entries if e.get("backend"))

    def check(self, spec: dict[str, Any], where: str) -> None:
        if spec["gpu"] not in self.gpus:
            raise invalid(f"{where}.gpu", f"'{spec['gpu']}' is not a supported GPU (supported: {', '.join(sorted(self.gpus))})")
        itype = self.types.get(spec["instanceType"])
        if itype is None:
            raise invalid(
                f"{where}.instanceType", f"'{spec['instanceType']}' is not a known instance type (known: {', '.join(sorted(self.types))})"
            )
        if itype["gpu"] != spec["gpu"]:
            raise invalid(f"{where}.instanceType", f"'{spec['instanceType']}' has GPU {itype['gpu']}, not {spec['gpu']}")
        backend = spec.get("backend")
        if backend is not None and self.backends and backend not in self.backends:
            raise invalid(f"{where}.backend", f"'{backend}' is not a configured backend (configured: {', '.join(sorted(self.backends))})")


def _autoscaling(spec: dict[str, Any], where: str) -> dict[str, Any] | None:
    cfg = object_field(spec, "autoscalingConfiguration", where)
    if cfg is None:
        return None
    for part, above in (("scaleUpDetails", True), ("scaleDownDetails", False)):
        details = cfg.get(part)
        if details is None:
            continue
        field = f"{where}.autoscalingConfiguration.{part}"
        if not isinstance(details, dict):
            raise invalid(field, "must be an object")
        factor = details.get("factor")
        if factor is not None:
            if isinstance(factor, bool) or not isinstance(factor, (int, float)):
                raise invalid(f"{field}.factor", "must be a number")
            if above and factor <= 1.0:
                raise invalid(f"{field}.factor", "must be greater than 1.0")
            if not above and not 0.0 < factor < 1.0:
                raise invalid(f"{field}.factor", "must be between 0 and 1.0")
        int_field(details, "threshold", lo=0, hi=100, where=field)
    return cfg


def _min_max(spec: dict[str, Any], where: str) -> None:
    int_field(spec, "maxInstances", required=True, lo=1, where=where)
    int_field(spec, "minInstances", required=True, lo=0, where=where)
    if spec["minInstances"] > spec["maxInstances"]:
        raise invalid(f"{where}.minInstances", "must not be greater than maxInstances")


def validate_gpu_spec(spec: Any, where: str, capacity: Capacity) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise invalid(where, "must be an object")
    string_field(spec, "gpu", required=True, where=where)
    string_field(spec, "instanceType", required=True, where=where)
    _min_max(spec, where)
    mrc = int_field(spec, "maxRequestConcurrency", lo=1, hi=16384, where=where)
    for field in OPTIONAL_STRINGS:
        string_field(spec, field, where=where)
    for field in STRING_SETS:
        strings_field(spec, field, where=where)
    object_field(spec, "configuration", where=where)
    int_field(spec, "preferredOrder", lo=1, hi=99, where=where)
    hvp = spec.get("helmValidationPolicy")
    if hvp is not None and (not isinstance(hvp, dict) or hvp.get("name") not in ("Default", "Unrestricted")):
        raise invalid(f"{where}.helmValidationPolicy.name", "must be Default or Unrestricted")
    _autoscaling(spec, where)
    capacity.check(spec, where)
    clean = {k: v for k, v in spec.items() if v is not None and k != "gpuSpecificationId"}
    clean["maxRequestConcurrency"] = mrc or 1
    return clean


def validate_deployment_request(body: dict[str, Any], capacity: Capacity) -> list[dict[str, Any]]:
    specs = list_field(body, "deploymentSpecifications")
    if not specs:
        raise invalid("deploymentSpecifications", "is required and must hold at least one GPU specification")
    return [validate_gpu_spec(s, f"deploymentSpecifications[{i}]", capacity) for i, s in enumerate(specs)]


def validate_patch(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """UpdateGpuSpecificationRequest applied to `current` -> the new GPU spec."""
    for field in body:
        if field not in PATCHABLE:
            raise invalid(
                field,
                "cannot be changed with PATCH (only minInstances, maxInstances, autoscalingConfiguration, autoscalingConfigurationPolicy)",
            )
    if not any(body.get(f) is not None for f in PATCHABLE):
        raise invalid("minInstances", "or one of maxInstances, autoscalingConfiguration, autoscalingConfigurationPolicy is required")
    policy = body.get("autoscalingConfigurationPolicy")
    if policy is not None and policy not in POLICIES:
        raise invalid("autoscalingConfigurationPolicy", f"must be one of {', '.join(POLICIES)}")
    merged = {**current, **{k: v for k, v in body.items() if v is not None}}
    _min_max(merged, "gpuSpecification")
    _autoscaling(merged, "gpuSpecification")
    return merged
