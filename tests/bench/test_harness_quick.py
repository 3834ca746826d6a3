"""The benchmark harness, short: one scenario (HTTP/1.1 small, without fngate), one run of
one second per row. The full harness test (every anchor row, two runs) is test_harness.py,
marked slow.

As there, no timing is asserted: the report must have the scenario's rows, measured, and
ratios that are the ones the measured figures give.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("nginx", "wrk", "taskset")

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in TOOLS),
    reason=f"needs {', '.join(TOOLS)} (make bench installs them)",
)


def test_one_scenario_one_run_gives_measured_rows_and_their_ratios(tmp_path):
    cmd = [sys.executable, "-m", "fngate.bench", "--only", "http1", "--sizes", "small", "--runs", "1", "--duration", "1",
           "--warmup", "0", "--connections", "8", "--no-fngate", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    rows = {r["role"]: r for r in doc["rows"] if r["scenario"] == "http1-small"}
    assert set(rows) == {"direct", "nginx", "ceiling"}, [r["target"] for r in doc["rows"]]
    for r in rows.values():
        assert r["runs"] == 1 and len(r["samples"]) == 1, r["target"]
        assert r["rps"] > 0 and r["errors"] == 0, r["target"]
        assert r["rps"] == pytest.approx(r["samples"][0]["rps"], rel=1e-3)
        assert r["ratios"]["vs_nginx"] == pytest.approx(r["rps"] / rows["nginx"]["rps"], rel=1e-2)
        assert r["ratios"]["vs_direct"] == pytest.approx(r["rps"] / rows["direct"]["rps"], rel=1e-2)
    assert doc["skipped"]["http1"].endswith("disabled by --no-fngate")
    md = (tmp_path / "latest.md").read_text()
    for r in rows.values():
        assert any(line.startswith(f"| http1-small | {r['target']} |") for line in md.splitlines()), r["target"]
