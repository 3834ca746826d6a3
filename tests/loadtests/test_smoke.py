"""`fngate loadtest` end to end, as a user runs it: a real subprocess, real Locust, real servers.

The smoke runs every scenario for a few seconds (at once, `--parallel`, to keep this
short) and must write, per scenario, Locust's CSV and HTML, the summary and the plots,
with every threshold evaluated. A deliberately impossible threshold must fail the run
with exit status 1, and a malformed thresholds file must stop it with status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.scenarios import SCENARIOS

from .conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def fngate_loadtest(*args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control", "loadtest", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def target_args(samples) -> list[str]:
    return ["--direct", "--target", samples["echo"].url, "--sse-target", samples["sse"].url,
            "--grpc-target", samples["grpc"].hostport]  # fmt: skip


def test_smoke_runs_every_scenario_and_writes_the_report(target_args, tmp_path: Path):
    results = tmp_path / "smoke"
    done = fngate_loadtest("smoke", *target_args, "--parallel", "--duration", "4s", "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    ran = ["ramp", "hammer", "soak", "large-request", "large-response", "sse", "grpc"]  # pexec needs a gateway
    assert set(ran) <= set(SCENARIOS)
    smoke_md = (results / "smoke.md").read_text()
    for name in ran:
        assert f"PASS  {name}" in smoke_md
        folder = results / name
        doc = json.loads((folder / "summary.json").read_text())
        assert doc["scenario"] == name and doc["passed"] is True
        assert doc["thresholds"] and all(t["value"] is not None for t in doc["thresholds"])
        assert any(e["requests"] > 0 for e in doc["entries"] if e["name"] != "Aggregated")
        assert f"# Load test `{name}`: PASS" in (folder / "summary.md").read_text()
        for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", ".html"):
            assert (folder / f"{name}{suffix}").stat().st_size > 0
        for plot in ("latency.png", "throughput.png"):
            assert (folder / plot).read_bytes().startswith(PNG)
    sse = json.loads((results / "sse" / "summary.json").read_text())
    assert {e["name"] for e in sse["entries"]} >= {"sse: ttft", "sse: gap", "sse: stream"}
    assert "fngate loadtest: PASS" in done.stdout


def test_a_failing_threshold_fails_the_run(target_args, tmp_path: Path):
    thresholds = tmp_path / "slis.yaml"
    thresholds.write_text("soak:\n  - entry: invoke\n    type: POST\n    success_rate: '> 0.5'\n    p50_ms: '< 0.001'\n")
    results = tmp_path / "soak"
    done = fngate_loadtest("soak", *target_args, "--rate", "20", "--duration", "2s", "--slis", str(thresholds),
                           "--results", str(results))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    assert doc["passed"] is False
    verdicts = {t["metric"]: t["passed"] for t in doc["thresholds"]}
    assert verdicts == {"success_rate": True, "p50_ms": False}
    assert "FAIL  POST invoke: p50_ms" in done.stdout


def test_a_malformed_thresholds_file_stops_the_run_before_any_load(target_args, tmp_path: Path):
    thresholds = tmp_path / "slis.yaml"
    thresholds.write_text("soak:\n  - entry: invoke\n    latency: '< 5'\n")
    results = tmp_path / "bad"
    done = fngate_loadtest("soak", *target_args, "--duration", "2s", "--slis", str(thresholds), "--results", str(results))
    assert done.returncode == 2
    assert "unknown metric 'latency'" in done.stderr
    assert not (results / "soak_stats.csv").exists()
