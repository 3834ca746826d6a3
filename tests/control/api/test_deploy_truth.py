"""Deploy-time truth, against a real `fngate serve`: a deployment its backend can never run
is refused at deploy with the reason, also with minInstances 0; a stored one that can no
longer run (after a restart) goes to ERROR with the reason.

Regression test for the silent-ACTIVE finding: an image missing from the local catalog,
deployed with minInstances 0, went ACTIVE with no healthInfo, and every call then waited out
its poll window for an empty 504.
"""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.support.serve_api import ServeApi as Api


@pytest.fixture
def api(fngate_serve, tmp_path):
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static"}])
    return Api(fngate_serve("--config", str(config)))


def deploy(api: Api, fid: str, vid: str, **spec) -> httpx.Response:
    body = {"deploymentSpecifications": [{"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1, **spec}]}
    return httpx.post(f"{api.sp.api_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", json=body, headers=api.headers)


def assert_refused(api: Api, fid: str, vid: str, resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    detail = resp.json()["detail"]
    assert detail.startswith(f"Function id '{fid}', version '{vid}'") and all(w in detail for w in words), detail
    assert api.status(fid, vid) == "INACTIVE"
    gone = httpx.get(f"{api.sp.api_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=api.headers)
    assert gone.status_code == 404  # nothing was recorded


def test_an_image_missing_from_the_local_catalog_is_refused_at_deploy_even_at_zero(api):
    fid, vid = api.create("unknown-image", image="nvcr.io/acme/not-in-catalog:1.0")
    assert_refused(api, fid, vid, deploy(api, fid, vid), "unknown container image 'nvcr.io/acme/not-in-catalog:1.0'", "fngate/echo")
    # the same function deploys once it names an image the catalog has... in a new version
    ok_fid, ok_vid = api.create("known-image", image="fngate/echo")
    assert deploy(api, ok_fid, ok_vid).status_code == 200


def test_helm_and_models_only_functions_are_refused_at_deploy(api):
    helm = api.call(
        "POST",
        "/v2/nvcf/functions",
        {"name": "helm", "inferenceUrl": "/", "helmChart": "https://charts/x-1.0.tgz", "helmChartServiceName": "svc"},
    )
    fid, vid = helm["function"]["id"], helm["function"]["versionId"]
    assert_refused(api, fid, vid, deploy(api, fid, vid), "Helm")
    models = api.call(
        "POST", "/v2/nvcf/functions", {"name": "models", "inferenceUrl": "/", "models": [{"name": "m", "version": "1", "uri": "s3://m"}]}
    )
    fid, vid = models["function"]["id"], models["function"]["versionId"]
    assert_refused(api, fid, vid, deploy(api, fid, vid), "containerImage")


def test_a_static_backend_spec_without_endpoints_is_refused_at_deploy(api):
    fid, vid = api.create("static-no-endpoints")
    assert_refused(api, fid, vid, deploy(api, fid, vid, backend="edge"), "endpoints")


def test_a_stored_deployment_whose_image_left_the_catalog_goes_to_error_after_a_restart(fngate_serve, tmp_path):
    """A deployment that was fine when made, but that the backend can no longer run (the
    image is gone from the local catalog after a restart with another config), must not sit
    ACTIVE: it goes to ERROR with the reason, at zero instances and with running ones alike."""
    data_dir = tmp_path / "restarted"
    command = f"{sys.executable} -m fngate.backends.samples.echo --host {{host}} --port {{port}}"
    with_image = write_config(tmp_path / "with.yaml", catalog={"acme/vanishing": command})
    # the second start has neither the image nor the H100 instance type
    l40s_only = {"gpus": {"L40S": 8}, "instanceTypes": [{"name": "NCP.GPU.L40S_1x", "gpu": "L40S", "gpuCount": 1}]}
    without = write_config(tmp_path / "without.yaml", catalog={}, inventory=l40s_only)
    first = Api(fngate_serve("--config", str(with_image), data_dir=data_dir))
    at_zero = first.create("vanishing-at-zero", image="acme/vanishing")
    running = first.create("vanishing-running", image="acme/vanishing")
    kept = first.create("still-in-catalog", image="fngate/echo")
    on_h100 = first.create("h100-goes-away", image="fngate/echo")
    for (fid, vid), lowest in ((at_zero, 0), (running, 1), (kept, 0)):
        assert deploy(first, fid, vid, minInstances=lowest).status_code == 200
    assert deploy(first, *on_h100, gpu="H100", instanceType="NCP.GPU.H100_1x").status_code == 200
    first.wait_status(*on_h100, "ACTIVE")
    first.wait_status(*at_zero, "ACTIVE")
    first.wait_status(*running, "ACTIVE")
    first.wait_status(*kept, "ACTIVE")
    first.sp.stop()

    second = Api(fngate_serve("--config", str(without), data_dir=data_dir))
    for (fid, vid), reason in (
        (at_zero, "unknown container image 'acme/vanishing'"),
        (running, "unknown container image 'acme/vanishing'"),
        (on_h100, "unknown instance type 'NCP.GPU.H100_1x'"),
    ):
        second.wait_status(fid, vid, "ERROR")
        dep = httpx.get(f"{second.sp.api_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=second.headers).json()
        errors = [item["error"] for item in dep["deployment"]["healthInfo"]]
        assert errors and all(reason in e for e in errors), dep
        assert not second.ready_instances(fid, vid)
    assert second.status(*kept) == "ACTIVE"  # a deployment the backend can still run is left alone
