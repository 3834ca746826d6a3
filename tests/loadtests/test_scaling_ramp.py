"""`fngate loadtest scaling-ramp` on the local stack: NVCF's long scaling ramp drives the real
autoscaler up and down, and the report shows it from the server's side (ready instances,
in flight, queue depth, 429s from fngate's /metrics) next to Locust's view.

`make test` runs three short steps (1 -> 16 -> 1 users, 12 s each; the stack's autoscaler
window is scaled to the step); the default ten-minute ramp (2 -> 10 -> 4 -> 1 -> 20 users) is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_smoke import PNG, fngate_loadtest, lenient_rules, write_slis


def check_run(results: Path, done, last: int) -> dict:
    """`last`: the instances the run ends with (the load stops at the last step's users)."""
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    ready = doc["server"]["stats"]["ready_instances"]
    # the echo sample runs 1..2 instances: the ramp took it to 2 and back to 1
    assert (ready["min"], ready["max"], ready["last"]) == (1, 2, last) and ready["rises"] >= 1 and ready["falls"] >= 1
    assert doc["server"]["stats"]["responses_429_per_s"]["total"] == 0
    assert doc["server"]["stats"]["in_flight"]["max"] >= 8 and doc["server"]["stats"]["in_flight"]["settled"] == 0
    verdicts = {(t["entry"], t["metric"]): t["passed"] for t in doc["thresholds"]}
    assert verdicts[("server ready_instances", "rises")] and verdicts[("server ready_instances", "falls")]
    assert (results / "server.png").read_bytes().startswith(PNG)
    return doc


@pytest.mark.timeout(300)  # the run may take its 240 s on a loaded machine: past pytest's default 120
def test_a_short_scaling_ramp_scales_the_echo_sample_up_and_down(tmp_path: Path):
    results = tmp_path / "scaling"
    slis = write_slis(tmp_path / "slis.yaml", lenient_rules())
    done = fngate_loadtest("scaling-ramp", "--duration", "36s", "--steps", "1,16,1", "--scrape-interval", "0.5",
                           "--slis", str(slis), "--results", str(results), timeout=240)  # fmt: skip
    doc = check_run(results, done, last=1)
    assert doc["settings"]["steps"] == [1, 16, 1] and doc["settings"]["ramp_fraction"] == 0.25


@pytest.mark.slow
@pytest.mark.timeout(960)  # ten minutes of load, the stack's start and the report
def test_the_default_scaling_ramp(tmp_path: Path):
    results = tmp_path / "scaling"
    done = fngate_loadtest("scaling-ramp", "--results", str(results), timeout=900)
    doc = check_run(results, done, last=2)  # it ends on its 20-user peak
    # up in the 10-user stage, down in the 4-user one, up again in the last
    ready = doc["server"]["stats"]["ready_instances"]
    assert ready["rises"] >= 2 and ready["falls"] >= 1
    assert doc["settings"]["steps"] == [2, 10, 4, 1, 20] and doc["passed"]
