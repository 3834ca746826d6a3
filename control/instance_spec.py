"""Stored function + deployment documents -> the InstanceSpec a backend runs."""

from __future__ import annotations

import re
from typing import Any

from fngate.backends.base import HealthCheck, InstanceSpec

_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def iso_seconds(value: Any, default: float) -> float:
    """`PT10S`, `PT1M30S`, `P1D` -> seconds; a number passes through; else the default."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value or "").upper())
    if not m or not any(m.groups()):
        return default
    d, h, mi, s = (float(g or 0) for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def health_of(fn: dict[str, Any]) -> HealthCheck:
    port = int(fn.get("inferencePort") or 8000)
    h = fn.get("health")
    if isinstance(h, dict):
        return HealthCheck(
            protocol="gRPC" if str(h.get("protocol", "HTTP")).lower() == "grpc" else "HTTP",
            uri=str(h.get("uri") or "/v2/health/ready"),
            port=int(h.get("port") or port),
            timeout_s=iso_seconds(h.get("timeout"), 10.0),
            expected_status=int(h["expectedStatusCode"]) if h.get("expectedStatusCode") is not None else 200,
        )
    grpc = fn.get("inferenceUrl") == "/grpc"
    return HealthCheck(protocol="gRPC" if grpc else "HTTP", uri=str(fn.get("healthUri") or "/v2/health/ready"), port=port)


def instance_spec(fn: dict[str, Any], gpu_spec: dict[str, Any], secrets: dict[str, Any] | None = None) -> InstanceSpec:
    env = {str(e["key"]): str(e.get("value", "")) for e in fn.get("containerEnvironment") or () if "key" in e}
    return InstanceSpec(
        function_id=fn["id"],
        version_id=fn["versionId"],
        function_name=fn.get("name", ""),
        container_image=fn.get("containerImage") or "",
        gpu_spec_id=gpu_spec.get("gpuSpecificationId") or "default",
        gpu=gpu_spec.get("gpu", ""),
        instance_type=gpu_spec.get("instanceType", ""),
        inference_port=int(fn.get("inferencePort") or 8000),
        inference_url=fn.get("inferenceUrl") or "/",
        container_args=fn.get("containerArgs") or "",
        environment=env,
        health=health_of(fn),
        secrets=dict(secrets or {}),
        configuration=dict(gpu_spec.get("configuration") or {}),
        max_request_concurrency=int(gpu_spec.get("maxRequestConcurrency") or 1),
        nca_id=fn.get("ncaId") or "fngate",
    )
