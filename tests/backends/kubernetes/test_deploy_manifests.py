"""deploy/kubernetes: the manifests parse, hang together, and the Role allows exactly
what the kubernetes backend calls (PERMISSIONS, which test_objects checks against
the requests the backend really makes)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from fngate.backends.kubernetes import PERMISSIONS, KubernetesBackend
from fngate.control.config import from_args

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def fngate_config(objects) -> dict:
    return yaml.safe_load(objects[("ConfigMap", "fngate-config")]["data"]["fngate.yaml"])


def test_kustomization_lists_every_file():
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


def test_role_allows_what_the_backend_does_in_its_namespace(objects):
    role = objects[("Role", "fngate-backend")]
    backend_cfg = next(b for b in fngate_config(objects)["backends"] if b["type"] == "kubernetes")
    assert role["metadata"]["namespace"] == backend_cfg["namespace"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    needed = {(g, r, v) for g, r, verbs in PERMISSIONS for v in verbs}
    assert granted == needed, f"missing: {needed - granted}; more than needed: {granted - needed}"
    binding = objects[("RoleBinding", "fngate-backend")]
    assert binding["roleRef"]["name"] == "fngate-backend"
    [subject] = binding["subjects"]
    pod = objects[("Deployment", "fngate")]["spec"]["template"]["spec"]
    assert (subject["kind"], subject["name"]) == ("ServiceAccount", pod["serviceAccountName"])
    assert objects[("ServiceAccount", subject["name"])]["metadata"]["namespace"] == subject["namespace"]


def test_fngate_runs_replicated_on_redis_with_readiness_on_the_admin_port(objects, tmp_path):
    dep = objects[("Deployment", "fngate")]
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    [c] = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    # the config file in the ConfigMap is one `fngate serve` accepts, and matches the ports
    path = tmp_path / "fngate.yaml"
    path.write_text(objects[("ConfigMap", "fngate-config")]["data"]["fngate.yaml"])
    cfg = from_args(argparse.Namespace(config=path))
    assert cfg.store_is_redis and cfg.host == "0.0.0.0"
    assert ports == {"http": cfg.http_port, "grpc": cfg.grpc_port, "api": cfg.api_port, "admin": cfg.admin_port}
    redis_host = cfg.store.split("//")[1].split(".")[0]
    assert ("Service", redis_host) in objects and ("Deployment", redis_host) in objects
    [backend_cfg] = [b for b in cfg.sections["backends"] if b["type"] == "kubernetes"]
    backend = KubernetesBackend.from_config(backend_cfg["name"], backend_cfg)
    types = backend_cfg["inventory"]["instanceTypes"]
    assert {c["name"] for c in backend.capacity()} == {t["name"] for t in types}
    assert backend.node_selectors == {t["name"]: t["nodeSelector"] for t in types}


def test_services_reach_named_ports_of_their_pods(objects):
    pods = {d["metadata"]["name"]: d["spec"]["template"] for (k, _), d in objects.items() if k == "Deployment"}
    services = [d for (k, _), d in objects.items() if k == "Service"]
    assert {"fngate-invoke", "fngate-api", "fngate-redis"} <= {s["metadata"]["name"] for s in services}
    for svc in services:
        [template] = [t for t in pods.values() if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        named = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in named, f"{svc['metadata']['name']}: no container port {port['targetPort']}"
