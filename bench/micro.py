"""The pytest-benchmark micro benches (`bench/bench_*.py`), run in a subprocess and summarised."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fngate.bench.procs import PYTHON, ROOT, pinned
from fngate.bench.runner import say


def run_micro(json_path: Path, cpus: str | None, max_time: float | None = None, timeout: float = 900) -> dict:
    """`pytest bench/ --benchmark-json` pinned to `cpus`; returns {benchmarks: [...]} or {error}."""
    cmd = [
        PYTHON,
        "-m",
        "pytest",
        str(ROOT / "bench"),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
        "--benchmark-disable-gc",
        "--benchmark-warmup=on",
    ]
    if max_time is not None:
        cmd.append(f"--benchmark-max-time={max_time}")
    say("micro benches: " + " ".join(cmd[2:]))
    proc = subprocess.run(pinned(cmd, cpus), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    result: dict = {"command": "pytest bench/ --benchmark-json", "benchmarks": []}
    if proc.returncode != 0:
        tail = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))] or proc.stdout.splitlines()[-5:]
        result["error"] = f"pytest exited {proc.returncode}: " + "; ".join(tail)[:1000]
    if json_path.exists():
        doc = json.loads(json_path.read_text())
        for b in doc.get("benchmarks", []):
            s = b["stats"]
            result["benchmarks"].append(
                {
                    "name": b["fullname"].rsplit("/", 1)[-1],
                    "group": b.get("group"),
                    "median_us": s["median"] * 1e6,
                    "mean_us": s["mean"] * 1e6,
                    "min_us": s["min"] * 1e6,
                    "ops": s["ops"],
                    "rounds": s["rounds"],
                }
            )
    return result
