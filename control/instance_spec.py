"""A stored function version + one of its GPU specs -> the InstanceSpec a backend runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fngate.backends.base import HealthCheck, InstanceSpec
from fngate.control.records import FunctionVersion, GpuSpec

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


def health_of(fn: FunctionVersion) -> HealthCheck:
    h = fn.health
    if h is not None:
        return HealthCheck(
            protocol="gRPC" if str(h.get("protocol", "HTTP")).lower() == "grpc" else "HTTP",
            uri=str(h.get("uri") or "/v2/health/ready"),
            port=int(h.get("port") or fn.inference_port),
            timeout_s=iso_seconds(h.get("timeout"), 10.0),
            expected_status=int(h["expectedStatusCode"]) if h.get("expectedStatusCode") is not None else 200,
        )
    return HealthCheck(protocol="gRPC" if fn.grpc else "HTTP", uri=fn.health_uri or "/v2/health/ready", port=fn.inference_port)


def instance_spec(
    fn: FunctionVersion,
    gpu_spec: GpuSpec,
    secrets: Mapping[str, Any] | None = None,
    account_secrets: Mapping[str, Any] | None = None,
) -> InstanceSpec:
    return InstanceSpec(
        function_id=fn.function_id,
        version_id=fn.version_id,
        function_name=fn.name,
        container_image=fn.container_image,
        gpu_spec_id=gpu_spec.id,
        gpu=gpu_spec.gpu,
        instance_type=gpu_spec.instance_type,
        inference_port=fn.inference_port,
        inference_url=fn.inference_url,
        container_args=fn.container_args,
        environment=dict(fn.environment),
        health=health_of(fn),
        secrets=dict(secrets or {}),
        account_secrets=dict(account_secrets or {}),
        configuration=dict(gpu_spec.configuration),
        max_request_concurrency=gpu_spec.max_request_concurrency,
        nca_id=fn.nca_id,
    )
