"""Where the gateway's time goes: py-spy attached during one extra, unrecorded run.

py-spy samples the gateway process (and its workers) from outside, on the load
generator's core, and writes collapsed stacks; the summary is the functions with the
most samples on top of the stack (self time) and the ones on the stack at all
(inclusive time), which goes into the report.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

from fngate.bench.procs import PYTHON, pinned


def py_spy() -> str | None:
    local = Path(PYTHON).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, cpus: str | None) -> subprocess.Popen | None:
    binary = py_spy()
    if binary is None:
        return None
    cmd = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(int(seconds), 1)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(out),
        "--subprocesses",
        "--nonblocking",
    ]
    return subprocess.Popen(pinned(cmd, cpus), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frame(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')').split(':')[0]).name})" if where else name


def summarise(raw: Path, top: int = 15) -> dict:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if frames:
            own[frames[-1]] += n
            for f in set(frames):
                inclusive[f] += n
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    # the entry chain (runpy, main, the event loop's run) is on every stack: it says nothing
    root = max(inclusive.values(), default=0)
    spread = [(f, c) for f, c in inclusive.most_common() if c < root][:top]
    return {
        "samples": total,
        "self": [{"frame": f, "pct": pct(c)} for f, c in own.most_common(top)],
        "inclusive": [{"frame": f, "pct": pct(c)} for f, c in spread],
    }
