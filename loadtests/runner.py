"""Run a scenario with Locust in its own process, then evaluate SLIs and write the report.

Locust (gevent) is only ever imported by the child process started here: importing it
next to kubernetes_asyncio in one process breaks, and its monkey-patching has no place
in the fngate CLI. This module decides the load (users, arrival rate, workers), writes
the knobs into the child's environment, runs `python -m locust --headless`, and turns
the CSV files it leaves into the summary, plots and exit status.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import report, slis
from .knobs import Knobs
from .localstack import LocalStack
from .scenarios import SCENARIOS, SMOKE_OVERRIDES, SMOKE_SECONDS, Scenario

RATE_PER_PROCESS = 3000.0  # arrivals/s one Locust process issues comfortably (it tops out near 7,700 here)
USERS_PER_PROCESS = 500  # closed-loop users per Locust process before it spends its core on scheduling
STOP_TIMEOUT = 10.0  # at the end, calls in flight may finish (and be counted) for this long
EXIT_SLI_FAILED = 1
EXIT_RUN_FAILED = 2
_PLOT_LOCK = threading.Lock()  # pyplot keeps global state: one figure at a time


class LoadTestError(RuntimeError):
    """The run itself failed (Locust crashed, bad options): exit status 2, not an SLI verdict."""


@dataclasses.dataclass
class Target:
    """Where the load goes: a gateway (or, with `direct`, instances) and what to call there."""

    url: str = ""
    key: str = ""
    function_ids: tuple[str, ...] = ()
    sse_function_id: str = ""
    grpc_function_id: str = ""
    grpc_target: str = ""
    sse_url: str = ""  # only when direct: the SSE instance, if not the same as url
    direct: bool = False


@dataclasses.dataclass
class Options:
    """What the user asked for; None means the scenario's default."""

    users: int | None = None
    rate: float | None = None
    duration: float | None = None
    workers: int | None = None  # None/0: automatic
    body_size: int | None = None
    response_size: int | None = None
    delay: float | None = None
    stream_length: int | None = None
    poll_seconds: int | None = None
    steps: tuple[int, ...] | None = None
    think_time: float | None = None
    max_inflight: int | None = None
    ramp_up: float | None = None
    routing: str | None = None
    domain: str | None = None
    path: str | None = None
    slis_file: Path | None = None
    results: Path | None = None
    parallel: bool = False  # smoke: run the scenarios at once (quicker; they share the target)


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h30m' -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {text!r}: use e.g. 30s, 10m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclasses.dataclass
class Plan:
    scenario: Scenario
    users: int
    spawn_rate: float
    duration: float
    workers: int
    rate: float
    knobs: Knobs

    def settings(self) -> dict[str, Any]:
        k = self.knobs
        out: dict[str, Any] = {"duration_s": self.duration, "workers": self.workers}
        if self.scenario.model == "open":
            out.update(rate_per_s=self.rate, ramp_up_s=k.ramp_up, scheduler_users=self.users,
                       max_inflight_per_user=k.max_inflight)
        elif self.scenario.model == "ramp":
            out.update(steps=list(k.steps), step_seconds=round(k.step_seconds, 3))
        else:
            out.update(users=self.users)
        out.update(body_size=k.body_size, response_size=k.response_size, delay_s=k.delay)
        if self.scenario.needs in ("sse", "grpc"):
            out["stream_length"] = k.stream_length
        if k.poll_seconds:
            out["poll_seconds"] = k.poll_seconds
        if self.scenario.needs in ("http", "pexec"):
            out["functions"] = len(k.function_ids)
            out["routing"] = "instance (direct)" if k.direct else k.routing
        return out


def make_plan(scenario: Scenario, target: Target, opts: Options, *, smoke: bool = False) -> Plan:
    overrides = dict(SMOKE_OVERRIDES.get(scenario.name, {})) if smoke else {}
    knob_values: dict[str, Any] = dict(scenario.knobs)
    knob_values.update({k: v for k, v in overrides.items() if k in {f.name for f in dataclasses.fields(Knobs)}})
    for name in ("body_size", "response_size", "delay", "stream_length", "poll_seconds", "steps", "think_time",
                 "max_inflight", "routing", "domain", "path", "ramp_up"):  # fmt: skip
        value = getattr(opts, name)
        if value is not None:
            knob_values[name] = value
    duration = opts.duration or (SMOKE_SECONDS if smoke else scenario.duration)
    duration = max(duration, float(overrides.get("min_duration", 0)))
    ids = target.function_ids
    if scenario.needs in ("http", "pexec") and not ids and not target.direct:
        raise LoadTestError(f"scenario {scenario.name} needs --function-id (an HTTP function such as the echo sample)")
    if scenario.needs == "sse" and not (target.sse_function_id or target.direct):
        raise LoadTestError("scenario sse needs --sse-function-id (a streaming function such as the SSE sample)")
    if scenario.needs == "grpc" and not (target.grpc_target and (target.grpc_function_id or target.direct)):
        raise LoadTestError("scenario grpc needs --grpc-target HOST:PORT and --grpc-function-id")
    if scenario.needs == "pexec" and target.direct:
        raise LoadTestError("scenario pexec needs a gateway: pexec polling is the gateway's, not an instance's")

    workers = opts.workers or 0
    rate = 0.0
    if scenario.model == "open":
        rate = float(opts.rate if opts.rate is not None else overrides.get("rate", scenario.rate))
        if scenario.per_function:
            rate *= max(len(ids), 1)
        if rate <= 0:
            raise LoadTestError("--rate must be positive")
        workers = workers or min(os.cpu_count() or 1, math.ceil(rate / RATE_PER_PROCESS))
        users = max(workers, 1)
        knob_values["rate_per_user"] = rate / users
        if scenario.ramps and opts.ramp_up is None:
            knob_values["ramp_up"] = duration
        spawn_rate = float(users)
    elif scenario.model == "ramp":
        steps = tuple(knob_values.get("steps") or (1,))
        knob_values["step_seconds"] = duration / len(steps)
        users = max(steps)
        workers = workers or min(os.cpu_count() or 1, math.ceil(users / USERS_PER_PROCESS))
        spawn_rate = float(users)
    else:
        users = int(opts.users if opts.users is not None else overrides.get("users", scenario.users))
        if users <= 0:
            raise LoadTestError("--users must be positive")
        workers = workers or min(os.cpu_count() or 1, math.ceil(users / USERS_PER_PROCESS))
        spawn_rate = float(users)
    knobs = Knobs(
        key=target.key,
        function_ids=ids,
        sse_function_id=target.sse_function_id,
        grpc_function_id=target.grpc_function_id,
        grpc_target=target.grpc_target,
        direct=target.direct,
        **knob_values,
    )
    return Plan(scenario, users, spawn_rate, duration, max(workers, 1), rate, knobs)


def locust_command(plan: Plan, host: str, prefix: Path) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(plan.scenario.path), "--headless",
           "--host", host, "-u", str(plan.users), "-r", f"{plan.spawn_rate:g}", "-t", f"{math.ceil(plan.duration)}s",
           "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
           "--exit-code-on-error", "0", "--stop-timeout", f"{STOP_TIMEOUT:g}", "--loglevel", "WARNING"]  # fmt: skip
    if plan.workers > 1:
        cmd += ["--processes", str(plan.workers)]
    return cmd


def locust_host(plan: Plan, target: Target) -> str:
    """The base URL the scenario's users talk to."""
    if plan.scenario.needs == "sse" and target.sse_url:
        return target.sse_url
    if plan.scenario.needs == "grpc":
        return f"http://{target.grpc_target}"
    return target.url


def run_locust(plan: Plan, target: Target, results: Path) -> Path:
    """Run Locust to completion; the CSV prefix it wrote. Its console output goes to locust.log."""
    results.mkdir(parents=True, exist_ok=True)
    prefix = results / plan.scenario.name
    host = locust_host(plan, target)
    env = {**os.environ, **plan.knobs.env()}
    log_path = results / "locust.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(locust_command(plan, host, prefix), stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=plan.duration + STOP_TIMEOUT + 90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise LoadTestError(f"locust did not stop in time (log: {log_path})") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0 or not Path(f"{prefix}_stats.csv").exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise LoadTestError(f"locust failed (exit {code}), log {log_path}:\n{tail}")
    return prefix


def run_scenario(scenario: Scenario, target: Target, opts: Options, results: Path, *, smoke: bool = False) -> dict:
    """Plan, run, evaluate and report one scenario; the summary document."""
    rules = slis.load_rules(opts.slis_file, scenario.name)  # a bad thresholds file fails before any load
    plan = make_plan(scenario, target, opts, smoke=smoke)
    started = time.time()
    prefix = run_locust(plan, target, results)
    entries = slis.load_stats(prefix)
    verdicts = slis.evaluate(entries, rules)
    settings = {"target": locust_host(plan, target), **plan.settings(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}  # fmt: skip
    doc = report.summary(scenario.name, settings, entries, verdicts)
    report.write(results, doc)
    with _PLOT_LOCK:
        report.plot(Path(f"{prefix}_stats_history.csv"), results, scenario.name)
    return doc


def target_from_stack(stack: LocalStack) -> Target:
    return Target(
        url=stack.http_url,
        key=stack.admin_key,
        function_ids=(stack.function_id("http"),),
        sse_function_id=stack.function_id("sse"),
        grpc_function_id=stack.function_id("grpc"),
        grpc_target=stack.grpc_target,
    )


def default_results(name: str) -> Path:
    return Path("loadtests/results") / f"tmp-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(name: str, target: Target | None, opts: Options, out=sys.stdout) -> int:
    """`fngate loadtest NAME`: 0 when every threshold passed, 1 when one failed, 2 when the run broke."""
    if name != "smoke" and name not in SCENARIOS:
        raise LoadTestError(f"unknown scenario {name!r}; choose from smoke, {', '.join(SCENARIOS)}")
    results = opts.results or default_results(name)
    if opts.parallel and name != "smoke":
        raise LoadTestError("--parallel is for smoke only: a scenario's SLIs need the target to itself")
    names = list(SCENARIOS) if name == "smoke" else [name]
    if name == "smoke" and target is not None and target.direct:
        names = [n for n in names if SCENARIOS[n].needs != "pexec"]  # polling is a gateway feature
    if target is None:
        print("fngate loadtest: starting a local fngate with the sample functions ...", file=out, flush=True)
        with LocalStack(log_dir=results) as stack:
            return _run_all(names, target_from_stack(stack), opts, results, name == "smoke", out)
    return _run_all(names, target, opts, results, name == "smoke", out)


def _run_all(names: list[str], target: Target, opts: Options, results: Path, smoke: bool, out) -> int:
    def one(scenario_name: str) -> dict:
        folder = results / scenario_name if smoke else results
        return run_scenario(SCENARIOS[scenario_name], target, opts, folder, smoke=smoke)

    if opts.parallel:
        for scenario_name in names:
            print(f"fngate loadtest: {scenario_name}: {SCENARIOS[scenario_name].about}", file=out, flush=True)
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            docs = list(pool.map(one, names))
        for doc in docs:
            _print_summary(doc, out)
    else:
        docs = []
        for scenario_name in names:
            print(f"fngate loadtest: {scenario_name}: {SCENARIOS[scenario_name].about}", file=out, flush=True)
            docs.append(one(scenario_name))
            _print_summary(docs[-1], out)
    passed = all(d["passed"] for d in docs)
    if smoke:
        lines = [f"{'PASS' if d['passed'] else 'FAIL'}  {d['scenario']}" for d in docs]
        (results / "smoke.md").write_text("# Smoke run\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    print(f"fngate loadtest: {'PASS' if passed else 'FAIL'} ({results})", file=out, flush=True)
    return 0 if passed else EXIT_SLI_FAILED


def _print_summary(doc: dict, out) -> None:
    print(f"{doc['scenario']}: {'PASS' if doc['passed'] else 'FAIL'}", file=out)
    for e in doc["entries"]:
        if e["name"] == "Aggregated" or e["type"] == "DROPPED":
            continue
        print(f"  {e['type']} {e['name']}: {e['requests']} requests, {e['rps']:.1f}/s, p50/p95/p99 "
              f"{e['p50_ms']:g}/{e['p95_ms']:g}/{e['p99_ms']:g} ms, error rate {e['error_rate']:.2%}, "
              f"success rate {e['success_rate']:.2%}" + (f", dropped {e['dropped']}" if e["dropped"] else ""), file=out)
    for t in doc["thresholds"]:
        print("  " + slis.Verdict(**t).describe(), file=out)
    out.flush()
