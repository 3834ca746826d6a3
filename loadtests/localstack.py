"""A throwaway local fngate for `fngate loadtest` runs without `--target`.

Starts `fngate serve` as a child process on free ports (port 0 everywhere) with its own
data directory, waits for its `--ready-file`, finds the sample functions it deployed
(`fngate/echo`, `fngate/sse`, `fngate/grpc-echo`) through the management API, waits
until they are ACTIVE, and stops the whole process group afterwards.

With `replicas=N` (N > 1) it runs a redis-server of its own and N `fngate serve`
replicas on it, sharing `FNGATE_ADMIN_KEY` and `FNGATE_SECRETS_KEY` as the README's
"Several replicas on one Redis" says; the first deploys the samples, the others serve
the same functions from the store. `http_urls` / `grpc_targets` name every replica's
gateway, so a load can be spread over them, and `processes()` every root process, so
their resources can be sampled.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from fngate.proxy.config import LOOPBACK

SAMPLE_IMAGES = {"http": "fngate/echo", "sse": "fngate/sse", "grpc": "fngate/grpc-echo"}
LLM_IMAGE = "fngate/llm"  # the OpenAI-compatible sample behind the LLM gateway


LLM_MODEL = "fngate-llm"  # the model of the LLM function `fngate serve` deploys with its samples
LLM_FUNCTION = {
    "name": "loadtest-llm",
    "inferenceUrl": "/",
    "containerImage": LLM_IMAGE,
    "functionType": "LLM",
    "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT10S", "expectedStatusCode": 200},
    "models": [{"name": LLM_MODEL, "llmConfig": {"uris": ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"]}}],
}
LLM_DEPLOYMENT = {"deploymentSpecifications": [{"gpu": "H100", "instanceType": "NCP.GPU.H100_1x", "minInstances": 1,
                                                "maxInstances": 1, "maxRequestConcurrency": 16}]}  # fmt: skip
INVOKABLE = {"ACTIVE", "DEGRADING"}
# one series of the counter; with --workers N it also carries a `worker` label
_REQUESTS_TOTAL = re.compile(r'^fngate_requests_total\{[^}]*?function_id="(?P<fid>[^"]*)"[^}]*\} (?P<n>\S+)$', re.M)


class StackError(RuntimeError):
    """The local stack did not come up; the message says what was missing."""


class LocalStack:
    def __init__(self, *, workers: int = 1, replicas: int = 1, startup_timeout: float = 90.0, log_dir: Path | None = None,
                 config: dict[str, Any] | None = None, llm: bool = False) -> None:  # fmt: skip
        if replicas < 1:
            raise StackError("--replicas must be at least 1")
        self.config = config  # written to a --config file for every replica (e.g. autoscaler knobs)
        self.llm = llm  # also deploy an LLM function on the fngate/llm sample
        self.workers = workers
        self.replicas = replicas
        self.startup_timeout = startup_timeout
        self.log_dir = log_dir
        self.ready: dict[str, Any] = {}  # the first replica's ready file
        self.replica_ready: list[dict[str, Any]] = []
        self.functions: dict[str, dict[str, Any]] = {}  # "http" | "sse" | "grpc" -> function version doc
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._procs: list[tuple[str, subprocess.Popen, Path]] = []  # (name, process, log) in start order
        self._logs: list[BinaryIO] = []

    # -- what the load run needs -------------------------------------------------

    @property
    def admin_key(self) -> str:
        return self.ready.get("admin_key", "")

    @property
    def http_url(self) -> str:
        return self.http_urls[0]

    @property
    def http_urls(self) -> list[str]:
        return [r.get("http_url") or f"http://{LOOPBACK}:{r['http_port']}" for r in self.replica_ready]

    @property
    def grpc_target(self) -> str:
        return self.grpc_targets[0] if self.grpc_targets else ""

    @property
    def grpc_targets(self) -> list[str]:
        return [f"{LOOPBACK}:{r['grpc_port']}" for r in self.replica_ready if r.get("grpc_port")]

    @property
    def metrics_urls(self) -> list[str]:
        """Each replica's gateway admin /metrics (queue depth, in flight, requests by status)."""
        return [f"http://{LOOPBACK}:{r['admin_port']}/metrics" for r in self.replica_ready if r.get("admin_port")]

    @property
    def api_metrics_url(self) -> str:
        """The control plane's /metrics (ready instances); it takes the admin key."""
        return self.ready["api_url"] + "/metrics" if self.ready.get("api_url") else ""

    def function_id(self, kind: str) -> str:
        return self.functions.get(kind, {}).get("id", "")

    def processes(self) -> dict[str, int]:
        """name -> pid of each process this stack started (its children are theirs to find)."""
        return {name: proc.pid for name, proc, _ in self._procs if proc.poll() is None}

    def requests_served(self) -> dict[str, dict[str, int]]:
        """Replica -> kind of sample -> invocations its gateway answered (its `fngate_requests_total`):
        how the load was spread over the replicas."""
        kinds = {fn["id"]: kind for kind, fn in self.functions.items()}
        served: dict[str, dict[str, int]] = {}
        names = [name for name, _, _ in self._procs if name.startswith("serve")]
        for name, ready in zip(names, self.replica_ready, strict=True):
            counts = served.setdefault(name, {})
            url = f"http://{LOOPBACK}:{ready['admin_port']}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            for match in _REQUESTS_TOTAL.finditer(text):
                kind = kinds.get(match["fid"], "other")
                counts[kind] = counts.get(kind, 0) + int(float(match["n"]))
        return served

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
        root = Path(self._tmp.name)
        deadline = time.monotonic() + self.startup_timeout
        env = {**os.environ, "FNGATE_ADMIN_KEY": secrets.token_urlsafe(24)}
        store: list[str] = []
        if self.config:
            config_file = root / "fngate.json"  # JSON is YAML: `--config` reads it
            config_file.write_text(json.dumps(self.config))
            store += ["--config", str(config_file)]
        if self.replicas > 1:
            env["FNGATE_SECRETS_KEY"] = base64.b64encode(os.urandom(32)).decode()
            store = ["--store", self._start_redis(root, deadline)]
        for index in range(self.replicas):
            name = "serve" if self.replicas == 1 else f"serve-{chr(ord('a') + index)}"
            samples = [] if index == 0 else ["--no-samples"]  # one replica deploys them; the store shares them
            self.replica_ready.append(self._start_serve(name, root / name, store + samples, env, deadline))
        self.ready = self.replica_ready[0]
        self._wait_for_samples(deadline, self._procs[-self.replicas][2])
        for url in self.http_urls[1:]:
            self._wait_for_gateway(url, deadline)
        if self.llm:
            self.functions["llm"] = self._deploy_llm(deadline)

    def _wait_for_gateway(self, url: str, deadline: float) -> None:
        """Until another replica's gateway serves the echo sample (its routing comes through Redis)."""
        headers = {"Authorization": f"Bearer {self.admin_key}", "function-id": self.function_id("http")}
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "/echo", data=b"x", headers=headers), timeout=10) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"the gateway at {url} did not serve the echo sample within {self.startup_timeout:.0f}s")
            time.sleep(0.25)

    def _log_path(self, name: str, root: Path) -> Path:
        path = (self.log_dir or root) / ("fngate-serve.log" if name == "serve" else f"{name}.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], root: Path) -> Path:
        log_path = self._log_path(name, root)
        log = log_path.open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._procs.append((name, proc, log_path))
        return log_path

    def _start_redis(self, root: Path, deadline: float) -> str:
        binary = shutil.which("redis-server") or next(
            (p for p in ("/usr/sbin/redis-server", "/usr/bin/redis-server") if Path(p).exists()), None
        )
        if binary is None:
            raise StackError("--replicas needs redis-server (apt-get install redis-server)")
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
        log_path = self._spawn("redis", [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                                         "--dir", str(root)], dict(os.environ), root)  # fmt: skip
        while True:
            self._check_alive()
            try:
                with socket.create_connection((LOOPBACK, port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return f"redis://{LOOPBACK}:{port}/0"
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"redis-server did not answer within {self.startup_timeout:.0f}s (log: {log_path})")
            time.sleep(0.05)

    def _start_serve(self, name: str, data_dir: Path, extra: list[str], env: dict[str, str], deadline: float) -> dict[str, Any]:
        data_dir.mkdir(parents=True, exist_ok=True)
        ready_file = data_dir / "ready.json"
        cmd = [sys.executable, "-m", "fngate", "serve", "--host", LOOPBACK, "--api-port", "0", "--http-port", "0",
               "--grpc-port", "0", "--admin-port", "0", "--data-dir", str(data_dir), "--ready-file", str(ready_file),
               "--workers", str(self.workers), *extra]  # fmt: skip
        log_path = self._spawn(name, cmd, env, data_dir)
        while not ready_file.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"fngate serve wrote no ready file within {self.startup_timeout:.0f}s (log: {log_path})")
            time.sleep(0.1)
        ready = json.loads(ready_file.read_text())
        if not ready.get("http_port") and not ready.get("http_url"):
            raise StackError(f"fngate serve runs no invocation gateway (ready file: {sorted(ready)})")
        return dict(ready)

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for _, proc, _ in reversed(procs):  # the replicas first, redis last
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        self._logs = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- helpers ---------------------------------------------------------------------

    def _check_alive(self) -> None:
        for name, proc, path in self._procs:
            if proc.poll() is not None:
                tail = path.read_text(errors="replace")[-2000:]
                raise StackError(f"{name} exited with {proc.returncode} (log: {path}):\n{tail}")

    def _api(self, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.ready["api_url"] + path, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def _deploy_llm(self, deadline: float) -> dict[str, Any]:
        """An LLM function on the fngate/llm sample, ACTIVE: what `loadtest llm` calls through the
        gateway's llm.<domain> endpoints: the one `fngate serve` deploys with its samples, else
        (started with --no-samples, or that function deleted) one deployed here."""
        listed = self._api("/v2/nvcf/functions").get("functions", [])
        fn = next((f for f in listed if f.get("containerImage", "").split(":")[0] == LLM_IMAGE and f.get("functionType") == "LLM"), None)
        if fn is None:
            fn = self._api("/v2/nvcf/functions", LLM_FUNCTION)["function"]
            self._api(f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}", LLM_DEPLOYMENT)
        while True:
            self._check_alive()
            got = self._api(f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}")["function"]
            if got.get("status") in INVOKABLE:
                return dict(got)
            if got.get("status") == "ERROR" or time.monotonic() > deadline:
                raise StackError(
                    f"the LLM function on {LLM_IMAGE} did not become ACTIVE ({got.get('status')}: {got.get('healthInfo', '')})"
                )
            time.sleep(0.25)

    def _wait_for_samples(self, deadline: float, log_path: Path) -> None:
        """Poll the function list until each sample image has an invokable version."""
        while True:
            self._check_alive()
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
