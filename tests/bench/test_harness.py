"""The benchmark harness end to end, with tiny durations, against nginx and the direct path.

No timing is asserted (figures on a shared machine mean nothing here): the test checks
that one `python -m fngate.bench` run produces a report with the expected rows, and that the
ratios in it are the ones the measured figures give.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TOOLS = ("nginx", "wrk", "h2load", "nghttpx", "haproxy", "taskset")
pytestmark = [
    pytest.mark.slow,  # every anchor row of two scenarios; `make test` runs test_harness_quick.py
    pytest.mark.skipif(
        not all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in TOOLS),
        reason=f"needs {', '.join(TOOLS)} (make bench installs them: apt-get install nginx wrk nghttp2-client nghttp2-proxy haproxy util-linux)",
    ),
]

# the rows each scenario must have without fngate: (role, target)
EXPECTED = {
    "http1-small": {("direct", "nginx static (direct)"), ("nginx", "nginx proxy"), ("ceiling", "minimal Python proxy (no features)")},
    "h2c-small": {
        ("direct", "nginx static h2c (direct)"),
        ("nginx", "nginx proxy h2c→h1"),
        ("anchor", "nghttpx h2c→h1"),
        ("anchor", "haproxy h2c→h1"),
        ("ceiling", "minimal Python h2 proxy (ngh2, no features)"),
    },
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("bench-results")
    cmd = [
        sys.executable,
        "-m",
        "fngate.bench",
        "--only",
        "http1,h2",
        "--sizes",
        "small",
        "--runs",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--no-fngate",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "latest.json").read_text())
    return doc, (out / "latest.md").read_text(), out


def _rows(doc: dict, scenario: str) -> list[dict]:
    return [r for r in doc["rows"] if r["scenario"] == scenario]


def _role(doc: dict, scenario: str, role: str) -> dict:
    (row,) = [r for r in _rows(doc, scenario) if r["role"] == role]
    return row


def test_report_has_the_anchor_and_ceiling_rows_of_each_scenario(report):
    doc, _, out = report
    for scenario, expected in EXPECTED.items():
        rows = _rows(doc, scenario)
        assert {(r["role"], r["target"]) for r in rows} == expected, scenario
        for r in rows:
            assert r["runs"] == 2 and len(r["samples"]) == 2, r["target"]
            assert r["rps"] > 0 and r["errors"] == 0, r["target"]
            assert 0 < r["p50_ms"] <= r["p99_ms"], r["target"]
            assert r["sut_cpu"] > 0, f"{r['target']}: the server's CPU time was read from /proc"
    assert doc["skipped"]["http1"].endswith("disabled by --no-fngate")
    assert not any(key.startswith("h2-") for key in doc["skipped"]), doc["skipped"]
    assert list(out.glob("bench-*.json")) and list(out.glob("bench-*.md"))


def test_h2c_anchors_are_pinned_like_the_nginx_row(report):
    doc, _, _ = report
    nginx = _role(doc, "h2c-small", "nginx")
    for r in _rows(doc, "h2c-small"):
        if r["role"] in ("anchor", "ceiling"):
            assert (r["layout"], r["load"]) == (nginx["layout"], nginx["load"]), r["target"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert nginx["layout"] == "load@cpu0, upstream@cpu0, sut@cpu1"


def test_ratios_come_from_the_measured_figures(report):
    doc, _, _ = report
    for scenario in EXPECTED:
        nginx, direct = _role(doc, scenario, "nginx"), _role(doc, scenario, "direct")
        for r in _rows(doc, scenario):
            median = sorted(s["rps"] for s in r["samples"])[0]  # the median of two runs is the lower one
            assert r["rps"] == pytest.approx(median, rel=1e-3)
            assert r["ratios"]["vs_nginx"] == pytest.approx(r["rps"] / nginx["rps"], rel=1e-2)
            assert r["ratios"]["vs_direct"] == pytest.approx(r["rps"] / direct["rps"], rel=1e-2)
            per_core = r["rps_per_core"] / nginx["rps_per_core"]
            assert r["ratios"]["vs_nginx_per_core"] == pytest.approx(per_core, rel=1e-2)
        assert nginx["ratios"]["vs_nginx"] == pytest.approx(1.0)
        assert direct["ratios"]["vs_direct"] == pytest.approx(1.0)


def test_markdown_report_shows_the_rows(report):
    doc, md, _ = report
    assert "| scenario | target |" in md
    assert "nghttpx nghttp2/" in md and "HAProxy version" in md, "the anchors' versions are in the header"
    for r in doc["rows"]:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {r['scenario']} | {r['target']} |"))
        assert f"{r['ratios']['vs_nginx']:.2f}" in line
        per_core = r["ratios"]["vs_nginx_per_core"]
        assert per_core is not None and f"| {per_core:.2f} |" in line, r["target"]
        direct = r["ratios"]["vs_direct"]  # None where the scenario has no direct row (http1-latency)
        assert (f"{direct:.2f}" if direct is not None else "| – |") in line


def test_targets_without_fngate_rows_are_not_judged(report):
    doc, md, _ = report
    by_name = {t["target"]: t for t in doc["targets"]}
    assert by_name["HTTP/1.1 small: req/s per core vs nginx"]["goal"] == 0.8
    assert all(t["value"] is None and t["met"] is None for t in doc["targets"]), "no fngate row was measured"
    assert "## Targets" in md
