"""Processes under test: start pinned, wait until they listen, account their CPU and memory.

CPU and memory come straight from /proc, summed over the whole process tree, so a
server that forks workers (nginx, `--workers 2`) is measured as one thing. A process
is pinned by starting it under `taskset -c`; its children inherit the mask.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fngate.proxy.config import LOOPBACK

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Layout:
    """Which cores the load generator, the upstream and the system under test run on.

    None means "not pinned". On a one-core machine nothing can be isolated, so every
    layout collapses to unpinned and the report says so.
    """

    name: str
    load: str | None
    upstream: str | None
    sut: str | None

    def describe(self) -> str:
        if self.load is None and self.upstream is None and self.sut is None:
            return "nothing pinned"
        return f"load@cpu{self.load}, upstream@cpu{self.upstream}, sut@cpu{self.sut}"


def layouts() -> dict[str, Layout]:
    if cpu_count() < 2:
        free = Layout("free", None, None, None)
        return {"direct": free, "iso": free, "shared": free, "free": free}
    return {
        # the server alone on its core, the load generator on the other
        "direct": Layout("direct", "0", "1", "1"),
        # the proxy alone on its core; load generator and upstream share the other
        "iso": Layout("iso", "0", "0", "1"),
        # upstream beside the proxy (used when the upstream is the bottleneck, e.g. gRPC)
        "shared": Layout("shared", "0", "1", "0"),
        "free": Layout("free", None, None, None),
    }


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return cmd if cpus is None else ["taskset", "-c", cpus, *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before listening:\n{proc.output_tail()}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout} s")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    tree = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given live processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


class Proc:
    """A server process started for the benchmark and stopped by it."""

    def __init__(self, name: str, cmd: list[str], cpus: str | None, log_dir: Path, env: dict | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 open for the process's life; stop() closes it
        self.popen = subprocess.Popen(
            pinned(cmd, cpus),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # so stop() can signal the whole group
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.tree())

    def rss(self) -> int:
        return rss_bytes(self.tree())

    def output_tail(self, n: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()
        else:
            # a forking server may leave children in its group after its leader exits
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()


class CpuMeter:
    """CPU time a process tree spends between start() and stop(), as cores used."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self._pids: list[int] = []
        self._cpu0 = self._t0 = 0.0

    def start(self) -> None:
        self._pids = self.proc.tree()
        self._cpu0, self._t0 = cpu_seconds(self._pids), time.monotonic()

    def stop(self) -> float:
        # a worker that appeared during the run counts from zero, which is what it used
        pids = sorted(set(self._pids) | set(self.proc.tree()))
        return (cpu_seconds(pids) - self._cpu0) / max(time.monotonic() - self._t0, 1e-9)
