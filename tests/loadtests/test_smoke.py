"""`fngate loadtest` end to end, as a user runs it: a real subprocess, real Locust, real servers.

What is checked is that the SLIs are computed, reported and turned into the exit status,
never whether this machine meets a latency or throughput figure (several suites share
two cores here; real thresholds belong to `fngate loadtest`'s own reports). Each verdict
is driven with thresholds chosen for the purpose: lenient ones that any run that served
requests meets (exit 0), and an impossible one (exit 1, the failing SLI named). A
malformed thresholds file stops the run with status 2 before any load.

`make test` runs one scenario for a couple of seconds each way; the full smoke (every
scenario against a local fngate with the sample functions) is `slow` (`make test-all`).
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
# a bound no run can miss for each kind of metric the default rules use
LENIENT = {"_ms": "< 1e12", "success_rate": ">= 0", "error_rate": "<= 1", "dropped_ratio": "<= 1", "failures": ">= 0"}
IMPOSSIBLE = {"entry": "invoke", "type": "POST", "p50_ms": "< 0.001"}


def lenient(limit_of: str) -> str:
    return next(bound for suffix, bound in LENIENT.items() if limit_of.endswith(suffix))


def lenient_rules() -> dict[str, list[dict]]:
    """The default rules of every scenario (same entries, same metrics), with bounds any run meets;
    rules over server-side series stay as they are (a run without a metrics source skips them)."""
    rules = yaml.safe_load(DEFAULT_SLIS.read_text())
    return {
        scenario: [
            dict(rule) if "series" in rule else {k: (v if k in ("entry", "type", "kind") else lenient(k)) for k, v in rule.items()}
            for rule in scenario_rules
        ]
        for scenario, scenario_rules in rules.items()
    }


def write_slis(path: Path, rules: dict[str, list[dict]]) -> Path:
    path.write_text(yaml.safe_dump(rules))
    return path


def fngate_loadtest(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fngate", "loadtest", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def target_args(samples) -> list[str]:
    return ["--direct", "--target", samples["echo"].url, "--sse-target", samples["sse"].url,
            "--grpc-target", samples["grpc"].hostport]  # fmt: skip


def soak(target_args: list[str], slis_file: Path, results: Path) -> tuple[subprocess.CompletedProcess, dict]:
    done = fngate_loadtest("soak", *target_args, "--rate", "10", "--duration", "2s", "--slis", str(slis_file), "--results", str(results))
    summary = results / "summary.json"
    return done, json.loads(summary.read_text()) if summary.exists() else {}


def test_thresholds_every_run_meets_pass_and_exit_0(target_args, tmp_path: Path):
    done, doc = soak(target_args, write_slis(tmp_path / "slis.yaml", lenient_rules()), tmp_path / "soak")
    assert done.returncode == 0, done.stdout + done.stderr
    assert doc["passed"] is True and doc["settings"]["rates_per_s"] == {"http": 10.0, "sse": 10.0, "grpc": 10.0}
    # the default rules' four SLIs for each of the three functions, each computed from what Locust measured
    assert {t["metric"] for t in doc["thresholds"]} == {"p95_ms", "success_rate", "dropped_ratio", "failures"}
    assert {t["entry"] for t in doc["thresholds"]} == {"POST invoke", "SSE sse: stream", "gRPC Echo"}
    assert all(t["value"] is not None and t["passed"] for t in doc["thresholds"]), doc["thresholds"]
    invoke = next(e for e in doc["entries"] if (e["type"], e["name"]) == ("POST", "invoke"))
    assert invoke["requests"] > 0
    assert next(t for t in doc["thresholds"] if t["metric"] == "p95_ms")["value"] == invoke["p95_ms"]
    assert "# Load test `soak`: PASS" in (tmp_path / "soak" / "summary.md").read_text()
    assert "fngate loadtest: PASS" in done.stdout


def test_an_impossible_threshold_fails_the_run_and_names_the_sli(target_args, tmp_path: Path):
    rules = lenient_rules()
    rules["soak"].append(IMPOSSIBLE)
    done, doc = soak(target_args, write_slis(tmp_path / "slis.yaml", rules), tmp_path / "soak")
    assert done.returncode == 1, done.stdout + done.stderr
    assert doc["passed"] is False
    [failed] = [t for t in doc["thresholds"] if not t["passed"]]
    assert (failed["metric"], failed["op"], failed["limit"]) == ("p50_ms", "<", 0.001) and failed["value"] > 0
    failing_line = next(line for line in done.stdout.splitlines() if "p50_ms" in line)
    assert "FAIL" in failing_line, done.stdout
    assert "# Load test `soak`: FAIL" in (tmp_path / "soak" / "summary.md").read_text()
    assert "fngate loadtest: FAIL" in done.stdout


def test_soak_on_two_local_replicas_reports_every_function_and_every_process(tmp_path: Path):
    """No --target, --replicas 2: redis-server and two fngate serve on it (two gateway workers
    each), HTTP, SSE and gRPC driven at once over both gateways, and RSS/descriptors of every
    process in the report."""
    results = tmp_path / "soak"
    done = fngate_loadtest("soak", "--replicas", "2", "--gateway-workers", "2", "--rate", "4", "--duration", "4s", "--sample-interval", "1",
                           "--slis", str(write_slis(tmp_path / "slis.yaml", lenient_rules())), "--results", str(results))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    assert doc["settings"]["replicas"] == 2
    per_replica = doc["settings"]["requests_per_replica"]  # each gateway's own fngate_requests_total
    assert set(per_replica) == {"serve-a", "serve-b"}
    for replica, served in per_replica.items():
        assert served.get("http", 0) > 0 and served.get("sse", 0) > 0, (replica, per_replica)
    served = {(e["type"], e["name"]): e["requests"] for e in doc["entries"]}
    for entry in (("POST", "invoke"), ("SSE", "sse: stream"), ("SSE", "sse: ttft"), ("gRPC", "Echo")):
        assert served.get(entry, 0) > 0, (entry, served)
    assert {t["entry"] for t in doc["thresholds"]} == {"POST invoke", "SSE sse: stream", "gRPC Echo"}
    processes = doc["resources"]["processes"]
    labels = [p["label"] for p in processes]
    assert {"redis", "serve-a", "serve-b"} <= set(labels), labels
    for replica in ("serve-a", "serve-b"):
        assert labels.count(f"{replica}/gateway worker") == 2, labels
    for instance in ("/echo", "/sse", "/grpc_echo"):  # the sample instances, under the leading replica
        assert any(la.startswith("serve-") and la.endswith(instance) for la in labels), labels
    for p in processes:
        assert p["samples"] >= 2 and p["rss_end_bytes"] > 0 and p["fds_end"] > 0, p
        assert isinstance(p["rss_slope_bytes_per_h"], float) and isinstance(p["fds_slope_per_h"], float)
        assert len(p["series"]["seconds"]) == p["samples"]
    summary_md = (results / "summary.md").read_text()
    assert "## Resources per process" in summary_md and "RSS slope MiB/h" in summary_md
    for label in ("redis", "serve-a", "serve-b"):
        assert f"| {label} |" in summary_md
    for plot in ("latency.png", "throughput.png", "rss.png", "fds.png"):
        assert (results / plot).read_bytes().startswith(PNG)
    for log in ("serve-a.log", "serve-b.log"):
        assert "Traceback" not in (results / log).read_text()


def test_a_malformed_thresholds_file_stops_the_run_before_any_load(target_args, tmp_path: Path):
    thresholds = tmp_path / "slis.yaml"
    thresholds.write_text("soak:\n  - entry: invoke\n    latency: '< 5'\n")
    results = tmp_path / "bad"
    done = fngate_loadtest("soak", *target_args, "--duration", "2s", "--slis", str(thresholds), "--results", str(results))
    assert done.returncode == 2
    assert "unknown metric 'latency'" in done.stderr
    assert not (results / "soak_stats.csv").exists()


@pytest.mark.slow
def test_smoke_against_a_local_stack_evaluates_every_scenario_and_fails_on_a_broken_threshold(tmp_path: Path):
    """No --target: fngate serve with the sample functions is started, loaded and stopped.

    Every scenario's SLIs are evaluated with bounds any run meets, plus one impossible
    soak threshold: every other scenario must pass and the run must exit 1 because of that one.
    """
    rules = lenient_rules()
    rules["soak"].append(IMPOSSIBLE)
    slis_file = write_slis(tmp_path / "slis.yaml", rules)
    results = tmp_path / "smoke"
    done = fngate_loadtest("smoke", "--parallel", "--duration", "6s", "--slis", str(slis_file), "--results", str(results), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "starting a local fngate" in done.stdout and "fngate loadtest: FAIL" in done.stdout
    smoke_md = (results / "smoke.md").read_text()
    assert "skipped" not in done.stdout  # the local stack has an LLM function too
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
