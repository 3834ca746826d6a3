"""`fngate loadtest` end to end, as a user runs it: a real subprocess, real Locust, real servers.

The smoke starts a local fngate with the sample functions, runs every scenario against
it for a few seconds (at once, `--parallel`, to keep this short) and must write, per
scenario, Locust's CSV and HTML, the summary and the plots, with every threshold
evaluated. A deliberately impossible threshold must fail the run with exit status 1,
and a malformed thresholds file must stop it with status 2 before any load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fngate.loadtests.scenarios import SCENARIOS
from fngate.loadtests.slis import DEFAULT_SLIS

from .conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def fngate_loadtest(*args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fngate", "loadtest", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def target_args(samples) -> list[str]:
    return ["--direct", "--target", samples["echo"].url, "--sse-target", samples["sse"].url,
            "--grpc-target", samples["grpc"].hostport]  # fmt: skip


def test_smoke_against_a_local_stack_evaluates_every_scenario_and_fails_on_a_broken_threshold(tmp_path: Path):
    """No --target: fngate serve with the sample functions is started, loaded and stopped.

    The thresholds are the defaults plus one impossible soak threshold, so every other
    scenario must pass and the run must still exit 1 because of that one.
    """
    thresholds = yaml.safe_load(DEFAULT_SLIS.read_text())
    thresholds["soak"].append({"entry": "invoke", "type": "POST", "p50_ms": "< 0.001"})
    slis_file = tmp_path / "slis.yaml"
    slis_file.write_text(yaml.safe_dump(thresholds))
    results = tmp_path / "smoke"
    done = fngate_loadtest("smoke", "--parallel", "--duration", "6s", "--slis", str(slis_file), "--results", str(results))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "starting a local fngate" in done.stdout and "fngate loadtest: FAIL" in done.stdout
    smoke_md = (results / "smoke.md").read_text()
    for name in SCENARIOS:
        folder = results / name
        doc = json.loads((folder / "summary.json").read_text())
        assert doc["scenario"] == name
        assert doc["thresholds"] and all(t["value"] is not None for t in doc["thresholds"]), doc["thresholds"]
        assert any(e["requests"] > 0 for e in doc["entries"] if e["name"] != "Aggregated")
        for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", ".html"):
            assert (folder / f"{name}{suffix}").stat().st_size > 0
        for plot in ("latency.png", "throughput.png"):
            assert (folder / plot).read_bytes().startswith(PNG)
        if name == "soak":
            assert doc["passed"] is False and "FAIL  soak" in smoke_md
            assert [t["metric"] for t in doc["thresholds"] if not t["passed"]] == ["p50_ms"]
            assert "# Load test `soak`: FAIL" in (folder / "summary.md").read_text()
        else:
            assert doc["passed"] is True, (name, doc["thresholds"])
            assert f"PASS  {name}" in smoke_md
    sse = json.loads((results / "sse" / "summary.json").read_text())
    assert {e["name"] for e in sse["entries"]} >= {"sse: ttft", "sse: gap", "sse: stream"}
    pexec = json.loads((results / "pexec" / "summary.json").read_text())
    polls = next(e for e in pexec["entries"] if e["name"] == "pexec: poll")
    assert polls["requests"] > 0  # the instance outlived the poll window: 202, then status polls
    assert not (results / "fngate-serve.log").read_text().count("Traceback")


def test_the_default_thresholds_pass_on_a_healthy_instance(target_args, tmp_path: Path):
    results = tmp_path / "soak"
    done = fngate_loadtest("soak", *target_args, "--rate", "20", "--duration", "2s", "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    assert doc["passed"] is True and doc["settings"]["rate_per_s"] == 20.0
    assert {t["metric"] for t in doc["thresholds"]} == {"p95_ms", "success_rate", "dropped_ratio"}
    assert "fngate loadtest: PASS" in done.stdout


def test_a_malformed_thresholds_file_stops_the_run_before_any_load(target_args, tmp_path: Path):
    thresholds = tmp_path / "slis.yaml"
    thresholds.write_text("soak:\n  - entry: invoke\n    latency: '< 5'\n")
    results = tmp_path / "bad"
    done = fngate_loadtest("soak", *target_args, "--duration", "2s", "--slis", str(thresholds), "--results", str(results))
    assert done.returncode == 2
    assert "unknown metric 'latency'" in done.stderr
    assert not (results / "soak_stats.csv").exists()
