"""The benchmark harness end to end, with tiny durations, against nginx and the direct path.

No timing is asserted (figures on a shared machine mean nothing here): the test checks
that one `python -m fngate.bench` run produces a report with the expected rows, and that the
ratios in it are the ones the measured figures give.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in ("nginx", "wrk", "h2load", "taskset")),
    reason="needs nginx, wrk, h2load and taskset (make bench installs them)",
)


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
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "latest.json").read_text())
    return doc, (out / "latest.md").read_text(), out


def _rows(doc: dict, scenario: str) -> dict[str, dict]:
    return {r["role"]: r for r in doc["rows"] if r["scenario"] == scenario}


def test_report_has_direct_and_nginx_rows_for_each_scenario(report):
    doc, _, out = report
    expected = {"http1-small": {"direct", "nginx", "ceiling"}, "h2c-small": {"direct", "nginx"}}
    for scenario in ("http1-small", "h2c-small"):
        rows = _rows(doc, scenario)
        assert set(rows) == expected[scenario], scenario
        for r in rows.values():
            assert r["runs"] == 2 and len(r["samples"]) == 2
            assert r["rps"] > 0 and r["errors"] == 0
            assert 0 < r["p50_ms"] <= r["p99_ms"]
            assert r["sut_cpu"] > 0, "the server's CPU time was read from /proc"
    assert doc["skipped"]["http1"].endswith("disabled by --no-fngate")
    assert list(out.glob("bench-*.json")) and list(out.glob("bench-*.md"))


def test_ratios_come_from_the_measured_figures(report):
    doc, _, _ = report
    for scenario in ("http1-small", "h2c-small"):
        rows = _rows(doc, scenario)
        nginx, direct = rows["nginx"], rows["direct"]
        for r in rows.values():
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
    for r in doc["rows"]:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {r['scenario']} | {r['target']} |"))
        assert f"{r['ratios']['vs_nginx']:.2f}" in line
        direct = r["ratios"]["vs_direct"]  # None where the scenario has no direct row (http1-latency)
        assert (f"{direct:.2f}" if direct is not None else "| – |") in line


def test_targets_without_fngate_rows_are_not_judged(report):
    doc, md, _ = report
    by_name = {t["target"]: t for t in doc["targets"]}
    assert by_name["HTTP/1.1 small: req/s per core vs nginx"]["goal"] == 0.8
    assert all(t["value"] is None and t["met"] is None for t in doc["targets"]), "no fngate row was measured"
    assert "## Targets" in md
