"""The objects the backend creates, as `kubectl get -o yaml` would show them."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from fngate.backends.base import BackendError, HealthCheck
from fngate.backends.kubernetes import PERMISSIONS, KubernetesBackend
from tests.support.toys import Tracker, toy_spec


def container_of(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


async def test_deployment_carries_the_function(cluster):
    backend = KubernetesBackend.from_config(
        "gpu-cluster",
        {
            "namespace": cluster.namespace,
            "kubeconfig": str(cluster.kubeconfig),
            "inventory": {
                "gpus": {"H100": 8},
                "instanceTypes": [
                    {
                        "name": "NCP.GPU.H100_2x",
                        "gpu": "H100",
                        "gpuCount": 2,
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    }
                ],
            },
        },
    )
    spec = toy_spec(
        instance_type="NCP.GPU.H100_2x",
        gpu="H100",
        container_args="--workers 2 --name 'a b'",
        environment={"MODEL": "llama"},
        inference_port=9000,
        health=HealthCheck(protocol="gRPC", port=9001, timeout_s=2.5),
    )
    try:
        await backend.apply(spec, 3)
        [dep] = cluster.deployments()
        labels = dep["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "fngate"
        assert (labels["fngate.io/function-id"], labels["fngate.io/version-id"], labels["fngate.io/gpu-spec-id"]) == ("f-v1", "v1", "g1")
        assert dep["spec"]["replicas"] == 3
        pod = dep["spec"]["template"]["spec"]
        c = container_of(dep)
        assert c["image"] == "test/toy" and c["args"] == ["--workers", "2", "--name", "a b"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["MODEL"] == "llama" and env["NVCF_FUNCTION_VERSION_ID"] == "v1" and env["NVCF_INSTANCETYPE"] == "NCP.GPU.H100_2x"
        assert env["NVCF_BACKEND"] == "gpu-cluster" and "NVCF_INSTANCE_ID" in env
        assert [p["containerPort"] for p in c["ports"]] == [9000, 9001]
        assert c["readinessProbe"]["grpc"] == {"port": 9001} and c["readinessProbe"]["timeoutSeconds"] == 3
        assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
        assert c["securityContext"]["runAsNonRoot"] is True
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert "volumes" not in pod and cluster.secrets() == []
    finally:
        await backend.aclose()


async def test_secrets_are_a_secret_mounted_as_json(cluster, k8s_backend):
    spec = toy_spec(secrets={"NGC_API_KEY": "s3cret", "db": {"user": "u"}})
    t = Tracker(k8s_backend)
    await k8s_backend.apply(spec, 1)
    [secret] = cluster.secrets()
    assert orjson.loads(base64.b64decode(secret["data"]["secrets.json"])) == spec.secrets
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fngate"
    [dep] = cluster.deployments()
    assert container_of(dep)["volumeMounts"] == [{"name": "secrets", "mountPath": "/var/secrets", "readOnly": True}]
    assert dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
    # never a plain (or base64) env value in the pod spec: only the Secret holds the values
    dep_bytes = orjson.dumps(dep)
    assert b"s3cret" not in dep_bytes and base64.b64encode(b"s3cret") not in dep_bytes
    assert all("secretKeyRef" not in str(e.get("valueFrom")) for e in container_of(dep).get("env", []))
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    # new secret values roll the pods; dropping the secrets deletes the Secret
    await k8s_backend.apply(toy_spec(secrets={"NGC_API_KEY": "rotated"}), 1)
    [secret] = cluster.secrets()
    assert json.loads(base64.b64decode(secret["data"]["secrets.json"])) == {"NGC_API_KEY": "rotated"}
    await k8s_backend.apply(toy_spec(), 1)
    assert cluster.secrets() == []
    await k8s_backend.apply(spec, 1)
    await k8s_backend.remove("v1")
    assert cluster.deployments() == [] and cluster.secrets() == []
    await t.close()


async def test_telemetry_secrets_are_the_secrets_accounts_file(cluster, k8s_backend):
    """The account-level secrets of the function's telemetries reach the pod as NVCF's
    /var/secrets/accounts-secrets.json, from the Secret (never an env value), also when the
    function has no secrets of its own; a change rolls the pods."""
    spec = toy_spec(account_secrets={"datadog-key": "dd-s3cret"})
    await k8s_backend.apply(spec, 1)
    [secret] = cluster.secrets()
    assert set(secret["data"]) == {"accounts-secrets.json"}
    assert orjson.loads(base64.b64decode(secret["data"]["accounts-secrets.json"])) == {"datadog-key": "dd-s3cret"}
    [dep] = cluster.deployments()
    container = container_of(dep)
    assert container["volumeMounts"] == [{"name": "secrets", "mountPath": "/var/secrets", "readOnly": True}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FNGATE_ACCOUNTS_SECRETS_FILE"] == "/var/secrets/accounts-secrets.json" and "FNGATE_SECRETS_FILE" not in env
    assert b"dd-s3cret" not in orjson.dumps(dep)
    rolled_from = dep["spec"]["template"]["metadata"]["annotations"]["fngate.io/secrets-hash"]
    both = toy_spec(secrets={"HF_TOKEN": "hf"}, account_secrets={"datadog-key": "rotated"})
    await k8s_backend.apply(both, 1)
    [secret] = cluster.secrets()
    assert set(secret["data"]) == {"secrets.json", "accounts-secrets.json"}
    [dep] = cluster.deployments()
    assert dep["spec"]["template"]["metadata"]["annotations"]["fngate.io/secrets-hash"] != rolled_from
    await k8s_backend.apply(toy_spec(), 1)
    assert cluster.secrets() == []
    await k8s_backend.remove("v1")


async def test_every_api_call_is_one_the_role_is_told_about(cluster):
    """PERMISSIONS (which the shipped Role is checked against) covers every request made."""
    backend = KubernetesBackend("k8s", namespace=cluster.namespace, kubeconfig=str(cluster.kubeconfig), startup_timeout=1)
    t = Tracker(backend)
    try:
        await backend.apply(toy_spec(secrets={"k": "v"}), 1)
        await backend.apply(toy_spec(secrets={"k": "v2"}), 2)
        await backend.apply(toy_spec(secrets={"k": "v2"}), 1)
        await t.until(lambda: len(t.ready_of("v1")) == 1)
        cluster.api.drop_watches()
        await backend.apply(toy_spec(), 1)
        await backend.remove("v1")
    finally:
        await t.close()
        await backend.aclose()
    allowed = {(res, verb) for _, res, verbs in PERMISSIONS for verb in verbs}
    made = {(res, verb) for verb, res in cluster.api.requests}
    assert made <= allowed, f"not declared in PERMISSIONS: {made - allowed}"
    assert {
        ("deployments", "create"),
        ("deployments", "update"),
        ("deployments", "patch"),
        ("deployments", "delete"),
        ("pods", "list"),
        ("pods", "watch"),
        ("secrets", "create"),
        ("secrets", "delete"),
    } <= made


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown setting.*namespce"):
        KubernetesBackend.from_config("k8s", {"type": "kubernetes", "namespce": "x"})


async def test_unreachable_cluster_is_a_backend_error(tmp_path):
    backend = KubernetesBackend("k8s", kubeconfig=str(tmp_path / "missing.yaml"))
    with pytest.raises(BackendError, match="cannot connect to Kubernetes"):
        await backend.apply(toy_spec(), 1)
    await backend.aclose()
