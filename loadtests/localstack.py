"""A throwaway local fngate for `fngate loadtest` runs without `--target`.

Starts `fngate serve` as a child process on free ports (port 0 everywhere) with its own
data directory, waits for its `--ready-file`, finds the sample functions it deployed
(`fngate/echo`, `fngate/sse`, `fngate/grpc-echo`) through the management API, waits
until they are ACTIVE, and stops the whole process group afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from fngate.proxy.config import LOOPBACK

SAMPLE_IMAGES = {"http": "fngate/echo", "sse": "fngate/sse", "grpc": "fngate/grpc-echo"}
INVOKABLE = {"ACTIVE", "DEGRADING"}


class StackError(RuntimeError):
    """The local stack did not come up; the message says what was missing."""


class LocalStack:
    def __init__(self, *, workers: int = 1, startup_timeout: float = 90.0, log_dir: Path | None = None) -> None:
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.log_dir = log_dir
        self.ready: dict[str, Any] = {}
        self.functions: dict[str, dict[str, Any]] = {}  # "http" | "sse" | "grpc" -> function version doc
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    # -- what the load run needs -------------------------------------------------

    @property
    def admin_key(self) -> str:
        return self.ready.get("admin_key", "")

    @property
    def http_url(self) -> str:
        return self.ready.get("http_url") or f"http://{LOOPBACK}:{self.ready['http_port']}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.ready['grpc_port']}" if self.ready.get("grpc_port") else ""

    def function_id(self, kind: str) -> str:
        return self.functions.get(kind, {}).get("id", "")

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="fngate-loadtest-")
        data_dir = Path(self._tmp.name)
        ready_file = data_dir / "ready.json"
        log_path = (self.log_dir or data_dir) / "fngate-serve.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        cmd = [sys.executable, "-m", "fngate", "serve", "--host", LOOPBACK, "--api-port", "0", "--http-port", "0",
               "--grpc-port", "0", "--admin-port", "0", "--data-dir", str(data_dir), "--ready-file", str(ready_file),
               "--workers", str(self.workers)]  # fmt: skip
        env = {**os.environ, "FNGATE_ADMIN_KEY": secrets.token_urlsafe(24)}
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while not ready_file.exists():
            self._check_alive(log_path)
            if time.monotonic() > deadline:
                raise StackError(f"fngate serve wrote no ready file within {self.startup_timeout:.0f}s (log: {log_path})")
            time.sleep(0.1)
        self.ready = json.loads(ready_file.read_text())
        if not self.ready.get("http_port") and not self.ready.get("http_url"):
            raise StackError(f"fngate serve runs no invocation gateway (ready file: {sorted(self.ready)})")
        self._wait_for_samples(deadline, log_path)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- helpers ---------------------------------------------------------------------

    def _check_alive(self, log_path: Path) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise StackError(f"fngate serve exited with {self._proc.returncode}:\n{tail}")

    def _api(self, path: str) -> Any:
        req = urllib.request.Request(self.ready["api_url"] + path, headers={"Authorization": f"Bearer {self.admin_key}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def _wait_for_samples(self, deadline: float, log_path: Path) -> None:
        """Poll the function list until each sample image has an invokable version."""
        while True:
            self._check_alive(log_path)
            found: dict[str, dict[str, Any]] = {}
            for fn in self._api("/v2/nvcf/functions").get("functions", []):
                for kind, image in SAMPLE_IMAGES.items():
                    if fn.get("containerImage", "").split(":")[0] == image and fn.get("status") in INVOKABLE:
                        found.setdefault(kind, fn)
            if len(found) == len(SAMPLE_IMAGES):
                self.functions = found
                return
            if time.monotonic() > deadline:
                missing = sorted(set(SAMPLE_IMAGES) - set(found))
                raise StackError(f"sample functions not ACTIVE within {self.startup_timeout:.0f}s: {missing} (log: {log_path})")
            time.sleep(0.25)
