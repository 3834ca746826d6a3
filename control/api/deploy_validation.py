"""Validation of GPU specifications (spec 4.4) against the configured capacity."""

from __future__ import annotations

from typing import Any

from .errors import BadRequest, invalid
from .validation import int_field, list_field, object_field, string_field, strings_field

OPTIONAL_STRINGS = ("backend", "cpuArch", "os", "driverVersion", "storage", "systemMemory", "gpuMemory")
STRING_SETS = ("clusters", "regions", "attributes", "availabilityZones")
PATCHABLE = ("minInstances", "maxInstances", "autoscalingConfiguration", "autoscalingConfigurationPolicy")
POLICIES = ("CUSTOM_CONFIGURATION", "PLATFORM_CONFIGURATION")
HELM_POLICIES = ("Default", "Unrestricted")
UPDATABLE_BY_PUT = ("minInstances", "maxInstances", "maxRequestConcurrency")


class Capacity:
    """The GPUs, instance types and backends deployments may name. Names compare
    case-insensitively, as NVCF's DeploymentValidationService does; the stored
    spec gets the configured spelling."""

    def __init__(self, entries: list[dict[str, Any]], backends: frozenset[str] = frozenset()) -> None:
        self.types = {e["name"].lower(): e for e in entries}
        self.gpus = {e["gpu"].lower(): e["gpu"] for e in entries}
        names = backends or frozenset(e["backend"] for e in entries if e.get("backend"))
        self.backends = {b.lower(): b for b in names}

    def check(self, spec: dict[str, Any], where: str) -> dict[str, str]:
        """The canonical gpu, instanceType (and backend) of a valid spec."""
        gpu = self.gpus.get(spec["gpu"].lower())
        if gpu is None:
            raise invalid(f"{where}.gpu", f"'{spec['gpu']}' is not a supported GPU (supported: {', '.join(sorted(self.gpus.values()))})")
        itype = self.types.get(spec["instanceType"].lower())
        if itype is None:
            known = ", ".join(sorted(e["name"] for e in self.types.values()))
            raise invalid(f"{where}.instanceType", f"'{spec['instanceType']}' is not a known instance type (known: {known})")
        if itype["gpu"] != gpu:
            raise invalid(f"{where}.instanceType", f"'{spec['instanceType']}' has GPU {itype['gpu']}, not {gpu}")
        names = {"gpu": gpu, "instanceType": itype["name"]}
        backend = spec.get("backend")
        if backend is not None and self.backends:
            canonical = self.backends.get(backend.lower())
            if canonical is None:
                configured = ", ".join(sorted(self.backends.values()))
                raise invalid(f"{where}.backend", f"'{backend}' is not a configured backend (configured: {configured})")
            names["backend"] = canonical
        return names


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


def validate_gpu_spec(spec: Any, where: str, capacity: Capacity, label: str = "") -> dict[str, Any]:
    """One GPU specification -> its stored form. `label` ("Function id '...', version
    '...'") prefixes the errors NVCF words with the function."""
    if not isinstance(spec, dict):
        raise invalid(where, "must be an object")
    if spec.get("backend") and spec.get("clusters"):
        clusters = ", ".join(str(c) for c in spec["clusters"]) if isinstance(spec["clusters"], list) else spec["clusters"]
        raise BadRequest(
            f"{label + ': ' if label else ''}Backend:['{spec['backend']}'] and Clusters:['{clusters}'] could not be specified at the same time."
        )
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
    if hvp is not None:
        name = hvp.get("name") if isinstance(hvp, dict) else None
        canonical = {p.lower(): p for p in HELM_POLICIES}.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            raise invalid(f"{where}.helmValidationPolicy.name", "must be Default or Unrestricted")
        spec = {**spec, "helmValidationPolicy": {**hvp, "name": canonical}}
    _autoscaling(spec, where)
    names = capacity.check(spec, where)
    clean = {k: v for k, v in {**spec, **names}.items() if v is not None and k != "gpuSpecificationId"}
    clean["maxRequestConcurrency"] = mrc or 1
    return clean


def validate_deployment_request(body: dict[str, Any], capacity: Capacity, label: str = "") -> list[dict[str, Any]]:
    specs = list_field(body, "deploymentSpecifications")
    if not specs:
        raise invalid("deploymentSpecifications", "is required and must hold at least one GPU specification")
    return [validate_gpu_spec(s, f"deploymentSpecifications[{i}]", capacity, label) for i, s in enumerate(specs)]


def validate_put_spec(merged: dict[str, Any], where: str) -> dict[str, Any]:
    """A stored spec with the deprecated PUT's fields applied: maxInstances > 0,
    minInstances >= 0 (and <= max), maxRequestConcurrency 1..16384."""
    _min_max(merged, where)
    int_field(merged, "maxRequestConcurrency", lo=1, hi=16384, where=where)
    return merged


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
    if policy is not None:
        canonical = {p.lower(): p for p in POLICIES}.get(policy.lower()) if isinstance(policy, str) else None
        if canonical is None:
            raise invalid("autoscalingConfigurationPolicy", f"must be one of {', '.join(POLICIES)}")
        body = {**body, "autoscalingConfigurationPolicy": canonical}
    merged = {**current, **{k: v for k, v in body.items() if v is not None}}
    _min_max(merged, "gpuSpecification")
    _autoscaling(merged, "gpuSpecification")
    return merged
