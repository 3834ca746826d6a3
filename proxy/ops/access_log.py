"""The access log: one JSON line per request, written by a thread, never by the event loop.

The loop's part is one `put` per finished request: a tuple appended to a bounded
buffer (a deque; appending is atomic in CPython, so no lock is taken on the loop). A
writer thread wakes every `interval` seconds, takes what is there, turns it into JSON
lines and writes them with one `write` per batch (whole lines: several `--workers`
processes appending to the same file do not cut each other's lines). A full buffer
(the disk or the reader of `-` cannot keep up) drops the entry and counts it in
`dropped`, shown as `fngate_access_log_dropped_total`: the gateway never waits on its log.

    log = AccessLog("/var/log/fngate/access.log")   # or "-" for standard output
    log.start(); ...; log.put(entry); ...; log.close()   # close writes what is left
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from datetime import UTC, datetime

import orjson

from fngate.proxy.calls.observation import FIELDS, AccessEntry

DEFAULT_CAPACITY = 65536  # entries held between two writes (~10 MB at worst)
_ROUND = {"queue_seconds", "instance_seconds", "total_seconds"}


def format_line(entry: AccessEntry) -> bytes:
    """One entry as a JSON line: `time` as RFC 3339 UTC, durations in seconds (µs precision)."""
    record: dict[str, object] = {}
    for name, value in zip(FIELDS, entry, strict=True):
        if name == "time":
            assert isinstance(value, float)
            record[name] = datetime.fromtimestamp(value, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        elif name in _ROUND:
            assert isinstance(value, float)
            record[name] = round(value, 6)
        else:
            record[name] = value
    return orjson.dumps(record) + b"\n"


class AccessLog:
    """A bounded buffer of entries and the thread that writes them (see the module docstring)."""

    def __init__(self, path: str, capacity: int = DEFAULT_CAPACITY, interval: float = 0.2) -> None:
        self.path = path
        self.capacity = capacity
        self.interval = interval
        self.dropped = 0  # entries lost to a full buffer
        self.written = 0
        self._buffer: deque[AccessEntry] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1

    def put(self, entry: AccessEntry) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            return
        self._buffer.append(entry)

    def start(self) -> None:
        """Open the file (append, created 0640) and start the writer."""
        if self.path == "-":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._thread = threading.Thread(target=self._run, name="fngate-access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer after it wrote everything queued (blocks briefly: call it off the loop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd >= 0 and self.path != "-":
            os.close(self._fd)
        self._fd = -1

    def metrics(self) -> str:
        return (
            "# HELP fngate_access_log_dropped_total Access log lines dropped because the writer fell behind.\n"
            "# TYPE fngate_access_log_dropped_total counter\n"
            f"fngate_access_log_dropped_total {self.dropped}\n"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write_batch()
        self._write_batch()

    def _write_batch(self) -> None:
        buffer = self._buffer
        lines: list[bytes] = []
        try:
            while True:
                lines.append(format_line(buffer.popleft()))
        except IndexError:
            pass
        if not lines:
            return
        data = memoryview(b"".join(lines))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            self.dropped += len(lines)  # a full disk, a closed pipe: counted, never raised into the gateway
            return
        self.written += len(lines)
