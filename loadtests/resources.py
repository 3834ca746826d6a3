"""Resident memory and open descriptors of every process of a local stack, sampled over a run.

A soak is about what grows: a leak shows as a steady rise of RSS or of open file
descriptors while the load stays flat. `ResourceSampler` reads /proc every `interval`
seconds for each root process it is given (a `fngate serve` replica, redis-server) and
every descendant of it (gateway workers, function instances), in a thread of its own so
the load generator is not involved. `slope_per_hour` is the least-squares slope of one
series, the figure the report shows next to its first and last value; `late_slope_per_hour` is
the same over the run's second half, past the warm-up of pools and caches.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROC = Path("/proc")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_INTERVAL = 5.0


def slope_per_hour(seconds: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of values over time, in units per hour (0 with fewer than two distinct times)."""
    if len(seconds) != len(values):
        raise ValueError(f"{len(seconds)} times but {len(values)} values")
    n = len(seconds)
    if n < 2:
        return 0.0
    mean_t = sum(seconds) / n
    mean_v = sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in seconds)
    if spread == 0:
        return 0.0
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(seconds, values, strict=True))
    return covariance / spread * 3600.0


def late_slope_per_hour(seconds: Sequence[float], values: Sequence[float]) -> float:
    """The slope over the second half of the run only. Pools and caches grow while a run warms
    up and then hold; a leak keeps its slope to the end, so this is the figure that tells them apart."""
    if not seconds:
        return 0.0
    half = seconds[0] + (seconds[-1] - seconds[0]) / 2
    start = next(i for i, t in enumerate(seconds) if t >= half)
    return slope_per_hour(seconds[start:], values[start:])


@dataclasses.dataclass
class Series:
    """One process's samples: seconds since the sampler started, RSS bytes, open descriptors."""

    label: str
    pid: int
    seconds: list[float] = dataclasses.field(default_factory=list)
    rss_bytes: list[int] = dataclasses.field(default_factory=list)
    fds: list[int] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "pid": self.pid,
            "samples": len(self.seconds),
            "rss_start_bytes": self.rss_bytes[0] if self.rss_bytes else None,
            "rss_end_bytes": self.rss_bytes[-1] if self.rss_bytes else None,
            "rss_slope_bytes_per_h": slope_per_hour(self.seconds, self.rss_bytes),
            "rss_late_slope_bytes_per_h": late_slope_per_hour(self.seconds, self.rss_bytes),
            "fds_start": self.fds[0] if self.fds else None,
            "fds_end": self.fds[-1] if self.fds else None,
            "fds_slope_per_h": slope_per_hour(self.seconds, self.fds),
            "fds_late_slope_per_h": late_slope_per_hour(self.seconds, self.fds),
            "series": {"seconds": self.seconds, "rss_bytes": self.rss_bytes, "fds": self.fds},
        }


def _read_rss(pid: int) -> int | None:
    try:
        fields = (PROC / str(pid) / "statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * PAGE_SIZE


def _count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return None


def _parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (2nd field) is in parentheses and may hold spaces: split after its last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                tree.setdefault(parent, []).append(int(entry.name))
    return tree


GATEWAY_WORKER = "fngate.proxy.ops.workers"  # the module `fngate serve --workers N` runs each gateway worker as


def describe(pid: int) -> str:
    """A short name for a descendant: a gateway worker, `python -m X` -> X's last part, else the program."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in argv if a]
    if not args:
        return "?"
    if "-m" in args[:-1] and args[args.index("-m") + 1] == GATEWAY_WORKER:
        return "gateway worker"
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1].rsplit(".", 1)[-1]
    return Path(args[0]).name


class ResourceSampler:
    """Samples the process trees under `roots` (label -> pid) every `interval` seconds until stopped."""

    def __init__(self, roots: Mapping[str, int], interval: float = DEFAULT_INTERVAL) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.series: dict[int, Series] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None
            self.sample()  # the end of the run, whatever the phase of the interval

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def processes(self) -> dict[int, str]:
        """pid -> label of every live process of the trees: the root's label, `root/name` below it."""
        tree = _children()
        found: dict[int, str] = {}
        for label, root in self.roots.items():
            if not (PROC / str(root)).exists():
                continue
            found[root] = label
            todo = list(tree.get(root, []))
            while todo:
                pid = todo.pop()
                found[pid] = f"{label}/{describe(pid)}"
                todo.extend(tree.get(pid, []))
        return found

    def sample(self) -> None:
        now = round(time.monotonic() - self._started, 3)
        for pid, label in self.processes().items():
            rss, fds = _read_rss(pid), _count_fds(pid)
            if rss is None or fds is None:
                continue  # it ended between the listing and the read
            series = self.series.setdefault(pid, Series(label, pid))
            series.seconds.append(now)
            series.rss_bytes.append(rss)
            series.fds.append(fds)

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.series.values(), key=lambda s: (s.label, s.pid))
        return {"interval_s": self.interval, "processes": [s.as_dict() for s in ordered]}
