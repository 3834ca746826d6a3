"""InstanceSpec -> the Kubernetes objects that run it (pure functions, no I/O).

One Deployment per (function version, GPU spec), plus a Secret when the function
has secrets. Every object carries the owned labels, so the backend lists and
watches only what it made and never touches anything else in the namespace.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..base import InstanceSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
FUNCTION_ID = "fngate.io/function-id"
VERSION_ID = "fngate.io/version-id"
GPU_SPEC_ID = "fngate.io/gpu-spec-id"
INSTANCE_SET = "fngate.io/instance-set"  # the Deployment's own selector label
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"  # lowest goes first on scale-down
SPEC_HASH = "fngate.io/spec-hash"  # annotation: what the Deployment was built from
OWNER = "fngate"
OWNED_SELECTOR = f"{MANAGED_BY}={OWNER}"
SECRETS_DIR = "/var/secrets"
SECRETS_FILE = "secrets.json"
ACCOUNT_SECRETS_FILE = "accounts-secrets.json"
GPU_RESOURCE = "nvidia.com/gpu"

_LABEL_OK = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class PodSettings:
    """Cluster-side knobs from the backend config."""

    gpu_count: int = 1
    node_selector: dict[str, str] = field(default_factory=dict)
    probe_period_s: int = 5
    termination_grace_s: int = 30
    image_pull_secrets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # NVCF_* and other platform variables


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def label_value(value: str) -> str:
    """A valid label value: the value itself when it fits, else a stable digest."""
    return value if _LABEL_OK.match(value) else "h-" + _digest(value)[:40]


def deployment_name(spec: InstanceSpec) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", spec.function_name.lower()).strip("-")[:24].strip("-")
    return f"fngate-{slug + '-' if slug else ''}{_digest(spec.version_id, spec.gpu_spec_id)[:10]}"


def secret_name(spec: InstanceSpec) -> str:
    return deployment_name(spec) + "-secrets"


def version_selector(version_id: str) -> str:
    return f"{OWNED_SELECTOR},{VERSION_ID}={label_value(version_id)}"


def labels(spec: InstanceSpec) -> dict[str, str]:
    return {
        MANAGED_BY: OWNER,
        FUNCTION_ID: label_value(spec.function_id),
        VERSION_ID: label_value(spec.version_id),
        GPU_SPEC_ID: label_value(spec.gpu_spec_id),
        INSTANCE_SET: deployment_name(spec),
    }


def _probe(spec: InstanceSpec, period: int) -> dict[str, Any]:
    h = spec.health
    probe: dict[str, Any]
    if h.protocol.lower() == "grpc":
        probe = {"grpc": {"port": h.port}}
    else:
        probe = {"httpGet": {"path": h.uri if h.uri.startswith("/") else "/" + h.uri, "port": h.port}}
    return {**probe, "periodSeconds": period, "timeoutSeconds": max(1, math.ceil(h.timeout_s)), "failureThreshold": 3}


def has_secrets(spec: InstanceSpec) -> bool:
    """The pods need the Secret: function secrets or its telemetries' account secrets."""
    return bool(spec.secrets or spec.account_secrets)


def secret(spec: InstanceSpec) -> dict[str, Any]:
    """secrets.json and accounts-secrets.json (each only when there are values), the files
    NVCF's secrets agent renders into /var/secrets."""
    data = {
        name: base64.b64encode(orjson.dumps(values)).decode()
        for name, values in ((SECRETS_FILE, spec.secrets), (ACCOUNT_SECRETS_FILE, spec.account_secrets))
        if values
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(spec), "labels": labels(spec)},
        "type": "Opaque",
        "data": data,
    }


def deployment(spec: InstanceSpec, replicas: int, settings: PodSettings) -> dict[str, Any]:
    own = labels(spec)
    env = {**spec.environment, **settings.env}
    if spec.secrets:
        env["FNGATE_SECRETS_FILE"] = f"{SECRETS_DIR}/{SECRETS_FILE}"
    if spec.account_secrets:
        env["FNGATE_ACCOUNTS_SECRETS_FILE"] = f"{SECRETS_DIR}/{ACCOUNT_SECRETS_FILE}"
    ports = [{"name": "inference", "containerPort": spec.inference_port, "protocol": "TCP"}]
    if spec.health.port != spec.inference_port:
        ports.append({"name": "health", "containerPort": spec.health.port, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": "inference",
        "image": spec.container_image,
        "ports": ports,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())]
        + [{"name": "NVCF_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": _probe(spec, settings.probe_period_s),
        "resources": {"limits": {GPU_RESOURCE: str(settings.gpu_count)}},
        # the NVCF container contract: functions run as non-root
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    if spec.container_args:
        container["args"] = shlex.split(spec.container_args)
    pod: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": settings.termination_grace_s,
        "automountServiceAccountToken": False,
    }
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if has_secrets(spec):
        container["volumeMounts"] = [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}]
        pod["volumes"] = [{"name": "secrets", "secret": {"secretName": secret_name(spec)}}]
    # the exact ids (labels may hold digests of ids that are not valid label values)
    ids = {VERSION_ID: spec.version_id, GPU_SPEC_ID: spec.gpu_spec_id, FUNCTION_ID: spec.function_id}
    template: dict[str, Any] = {"metadata": {"labels": own, "annotations": ids}, "spec": pod}
    if has_secrets(spec):  # new secrets roll the pods, so every instance reads the same files
        # (the function secrets alone hash as before, so an upgrade does not roll their pods)
        both = [spec.secrets, spec.account_secrets] if spec.account_secrets else spec.secrets
        values = orjson.dumps(both, option=orjson.OPT_SORT_KEYS).decode()
        template["metadata"]["annotations"] |= {"fngate.io/secrets-hash": _digest(values)[:16]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(spec),
            "labels": own,
            "annotations": {SPEC_HASH: _digest(orjson.dumps(template, option=orjson.OPT_SORT_KEYS).decode())[:16]},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {MANAGED_BY: OWNER, INSTANCE_SET: own[INSTANCE_SET]}},
            "template": template,
        },
    }


def spec_hash(obj: dict[str, Any]) -> str:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH, "")
