"""deploy/grafana and deploy/prometheus against Debian's real Prometheus scraping a real
`fngate serve --workers 2` under load (HTTP, 5xx, SSE, gRPC, refused keys, an instance
killed mid-request): every PromQL expression of every dashboard panel returns data, the
alert rules pass `promtool check rules`, and the 5xx alert fires.

The shipped prometheus.yml is the test's config, with the ports, the key file and a 1 s
scrape interval filled in; the shipped rules are loaded with their `for:` set to 0 s, so
the alert fires without waiting minutes (its expression is the one shipped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from fngate.backends.samples import grpc_echo_pb2, grpc_echo_pb2_grpc
from tests.conftest import REPO, ServeProcess, start_serve
from tests.e2e.helpers import instance_pid
from tests.support.net import free_port
from tests.support.serve_api import ServeApi

GRAFANA = REPO / "deploy" / "grafana"
PROMETHEUS = REPO / "deploy" / "prometheus"
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval, with margin


def _tool(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus; `make test` does this as root)")
    return found


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expression) for every target of every panel."""
    out = []
    for path in sorted(GRAFANA.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


def _promql(expr: str) -> str:
    """Grafana's variables as a dashboard user would have them: every function ("All")."""
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$function", ".+")


def test_dashboards_cover_the_four_views_and_reference_real_metric_names() -> None:
    names = {p.name for p in GRAFANA.glob("*.json")}
    assert names == {"fngate-overview.json", "fngate-function.json", "fngate-gateway.json", "fngate-control-plane.json"}
    uids = [json.loads((GRAFANA / n).read_text())["uid"] for n in sorted(names)]
    assert len(set(uids)) == 4
    for name, title, expr in panel_queries():
        assert expr.strip(), (name, title)
        assert "${datasource}" not in expr and "$" not in _promql(expr), (name, title, expr)


def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yaml")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())["groups"] for r in g["rules"]}
    assert {
        "FngateHigh5xxRate",
        "FngateQueueGrowing",
        "FngateFunctionDegraded",
        "FngateNoReadyInstance",
        "FngateP99OverSLO",
        "FngateDrainCutByTimeout",
    } <= alerts
    # the shipped scrape config, with a key file where it expects one
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (tmp_path / "fngate.key").write_text("nvapi-example")
    config["scrape_configs"][1]["authorization"]["credentials_file"] = str(tmp_path / "fngate.key")
    config["rule_files"] = [str(PROMETHEUS / "alerts.yaml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


class Load:
    """Traffic of every kind the panels show, from threads, until stopped."""

    def __init__(self, sp: ServeProcess, ids: dict[str, str]) -> None:
        self.sp, self.ids = sp, ids
        self.api = ServeApi(sp)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def _loop(self, step: Any) -> None:
        try:
            with httpx.Client(timeout=30) as client:
                while not self.stop.is_set():
                    step(client)
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> None:
        gw, key = self.api.gateway, self.sp.admin_key
        auth = {"Authorization": f"Bearer {key}"}

        def echo(client: httpx.Client) -> None:
            for path in ("/echo", "/echo", "/echo", "/echo?status=500"):  # 25 % 5xx: the alert's threshold is 5 %
                client.post(gw + path, headers={**auth, "function-id": self.ids["echo"]}, content=b"hello")

        def sse(client: httpx.Client) -> None:
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "tokens": 5, "interval": 0.05}
            with client.stream("POST", gw + "/v1/chat/completions", headers={**auth, "function-id": self.ids["sse"]}, json=body) as r:
                for _ in r.iter_bytes():
                    pass

        def refused(client: httpx.Client) -> None:
            client.post(gw + "/echo", headers={"Authorization": "Bearer nvapi-not-a-key", "function-id": self.ids["echo"]})
            client.get(self.sp.api_url + "/v2/nvcf/functions/00000000-0000-0000-0000-000000000000/versions", headers=auth)
            client.get(self.sp.api_url + "/v2/nvcf/functions", headers=auth)
            time.sleep(0.05)

        def grpc_calls(_: httpx.Client) -> None:
            meta = [("function-id", self.ids["grpc-echo"]), ("authorization", f"Bearer {key}")]
            with grpc.insecure_channel(f"127.0.0.1:{self.sp.ready['grpc_port']}") as channel:
                stub = grpc_echo_pb2_grpc.EchoStub(channel)
                while not self.stop.is_set():
                    stub.Echo(grpc_echo_pb2.EchoRequest(message="hello"), metadata=meta, timeout=10)
                    time.sleep(0.02)

        for step in (echo, echo, sse, refused, grpc_calls):
            t = threading.Thread(target=self._loop, args=(step,), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not self.errors, self.errors


def _upstream_error(api: ServeApi, sp: ServeProcess, fid: str, vid: str) -> threading.Thread:
    """Kill the instance under a request that waits for its answer: the gateway sees the
    connection reset (fngate_upstream_errors_total) and retries (fngate_retries_total).
    Returns the request's thread, once the gateway has counted the error."""
    [instance] = api.ready_instances(fid, vid)
    slow = threading.Thread(target=lambda: api.invoke(fid, "/echo?delay=2", timeout=30), daemon=True)
    slow.start()
    time.sleep(0.5)
    os.kill(instance_pid(sp.data_dir, vid, instance["instanceId"]), signal.SIGKILL)

    def counted() -> bool:
        text = httpx.get(f"http://127.0.0.1:{sp.ready['admin_port']}/metrics", timeout=5).text
        return any(line.startswith("fngate_upstream_errors_total{") for line in text.splitlines())

    api.wait(counted, "the gateway to count the reset", timeout=15)
    return slow


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


@pytest.fixture
def prometheus_and_fngate(tmp_path: Path):
    prometheus = _tool("prometheus")
    sp = start_serve(tmp_path / "fngate", "--workers", "2", samples=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # Prometheus starts scraping only some seconds after it is ready (its target updates are
        # batched): start it while fngate still deploys the samples
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
        key_file = tmp_path / "fngate.key"
        key_file.write_text(sp.admin_key)
        gateway_job, control_job = config["scrape_configs"]
        gateway_job["static_configs"] = [{"targets": [f"127.0.0.1:{sp.ready['admin_port']}"]}]
        control_job["static_configs"] = [{"targets": [f"127.0.0.1:{sp.ready['api_port']}"]}]
        control_job["authorization"]["credentials_file"] = str(key_file)
        rules = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = "0s"
        (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(tmp_path / "alerts.yaml")]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process below)
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        prom = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(prom + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.1)
        deadline = time.monotonic() + 90
        while "fngate: sample functions:" not in sp.output():
            assert sp.proc.poll() is None and time.monotonic() < deadline, sp.output()
            time.sleep(0.2)
        yield sp, prom
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sp.stop()


def test_every_panel_returns_data_under_load_and_the_5xx_alert_fires(prometheus_and_fngate) -> None:
    sp, prom = prometheus_and_fngate
    api = ServeApi(sp)
    summary = re.search(r"fngate: sample functions: (.*)", sp.output())
    assert summary is not None
    ids = dict(re.findall(r"(echo|sse|grpc-echo) ([0-9a-f-]{36}) ACTIVE", summary.group(1)))
    assert set(ids) == {"echo", "sse", "grpc-echo"}, summary.group(1)
    victim, victim_version = api.create("victim")
    api.deploy(victim, victim_version)
    api.wait_status(victim, victim_version, "ACTIVE")

    load = Load(sp, ids)
    load.start()
    slow: threading.Thread | None = None
    try:
        slow = _upstream_error(api, sp, victim, victim_version)
        # enough samples for every rate() window, from both jobs
        # scrapes come every second once Prometheus has applied its targets; a panel whose series
        # the load only just created needs two samples in its window: ask until every panel has
        # data, and fail naming the ones that never got any
        enough = 'min(count_over_time(up{job=~"fngate-.*"}[1m])) >= 3'
        api.wait(lambda: _query(prom, enough), "3 scrapes of each job", timeout=60, interval=0.5)
        targets = httpx.get(prom + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        assert {t["labels"]["job"]: t["health"] for t in targets} == {"fngate-gateway": "up", "fngate-control": "up"}, targets
        queries = panel_queries()
        assert len(queries) > 40
        empty: list[str] = []
        deadline = time.monotonic() + 20
        with ThreadPoolExecutor(8) as pool:
            while True:
                answers = list(pool.map(lambda q: _query(prom, _promql(q[2])), queries))
                empty = [f"{name} / {title}: {expr}" for (name, title, expr), result in zip(queries, answers, strict=True) if not result]
                if not empty or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        assert not empty, "panels without data:\n" + "\n".join(empty)
        values = httpx.get(prom + "/api/v1/label/function_id/values", params={"match[]": "nvcf_function_info"}, timeout=10).json()["data"]
        assert set(ids.values()) | {victim} <= set(values)  # the Function variable's choices

        def firing() -> list[dict[str, Any]]:
            alerts = httpx.get(prom + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "FngateHigh5xxRate" and a["state"] == "firing"]

        fired = api.wait(firing, "FngateHigh5xxRate firing", timeout=30, interval=0.5)
        assert {a["labels"]["function_id"] for a in fired} == {ids["echo"]}
        assert "of answers are 5xx" in fired[0]["annotations"]["summary"]
    finally:
        load.finish()
        if slow is not None:
            slow.join(30)
