"""Run a scenario with Locust in its own process, then evaluate SLIs and write the report.

Locust (gevent) is only ever imported by the child process started here: importing it
next to kubernetes_asyncio in one process breaks, and its monkey-patching has no place
in the fngate CLI. Given a `Plan` (plan.py: users, arrival rate, workers, knobs), this
module writes the knobs into the child's environment, runs `python -m locust
--headless`, and turns the CSV files it leaves into the summary, plots and exit status.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import report, slis
from .localstack import LocalStack
from .plan import LoadTestError, Options, Plan, Target, make_plan
from .resources import DEFAULT_INTERVAL, ResourceSampler
from .scenarios import SCENARIOS, Scenario

__all__ = ["EXIT_RUN_FAILED", "EXIT_SLI_FAILED", "LoadTestError", "Options", "Target", "run", "run_locust"]

STOP_TIMEOUT = 10.0  # at the end, calls in flight may finish (and be counted) for this long
EXIT_SLI_FAILED = 1
EXIT_RUN_FAILED = 2
_PLOT_LOCK = threading.Lock()  # pyplot keeps global state: one figure at a time
USER_CLASSES = {"http": "ArrivalInvoker", "sse": "ArrivalSse", "grpc": "ArrivalGrpc"}  # soak.py's, per kind


def locust_command(plan: Plan, host: str, prefix: Path) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(plan.scenario.path), "--headless",
           "--host", host, "-u", str(plan.users), "-r", f"{plan.spawn_rate:g}", "-t", f"{math.ceil(plan.duration)}s",
           "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
           "--exit-code-on-error", "0", "--stop-timeout", f"{STOP_TIMEOUT:g}", "--loglevel", "WARNING"]  # fmt: skip
    if plan.workers > 1:
        cmd += ["--processes", str(plan.workers)]
    return cmd + [USER_CLASSES[kind] for kind in plan.rates]  # only the kinds this run drives


def locust_host(plan: Plan, target: Target) -> str:
    """The base URL the scenario's users talk to."""
    if plan.scenario.needs == "sse" and target.sse_url:
        return target.sse_url
    if plan.scenario.needs == "grpc":
        return f"http://{target.grpc_target.split(',')[0]}"
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


def run_scenario(scenario: Scenario, target: Target, opts: Options, results: Path, *, smoke: bool = False,
                 stack: LocalStack | None = None) -> dict:  # fmt: skip
    """Plan, run, evaluate and report one scenario; the summary document.

    With a local `stack` and a scenario over several kinds (soak), the stack's processes'
    resources are sampled for the whole run and reported beside the SLIs.
    """
    rules = slis.load_rules(opts.slis_file, scenario.name)  # a bad thresholds file fails before any load
    plan = make_plan(scenario, target, opts, smoke=smoke)
    rules = slis.for_kinds(rules, tuple(plan.rates)) if plan.rates else rules
    started = time.time()
    sampler = None
    if stack is not None and plan.rates:
        sampler = ResourceSampler(stack.processes(), opts.sample_interval or DEFAULT_INTERVAL)
        sampler.start()
    try:
        prefix = run_locust(plan, target, results)
    finally:
        if sampler is not None:
            sampler.stop()
    entries = slis.load_stats(prefix)
    verdicts = slis.evaluate(entries, rules)
    settings = {"target": locust_host(plan, target), **plan.settings(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}  # fmt: skip
    if stack is not None and stack.replicas > 1:
        settings["replicas"] = stack.replicas
        settings["requests_per_replica"] = stack.requests_served()
    doc = report.summary(scenario.name, settings, entries, verdicts, sampler.report() if sampler else None)
    report.write(results, doc)
    with _PLOT_LOCK:
        report.plot(Path(f"{prefix}_stats_history.csv"), results, scenario.name)
        if doc.get("resources"):
            report.plot_resources(doc["resources"], results, scenario.name)
    return doc


def target_from_stack(stack: LocalStack) -> Target:
    return Target(
        url=stack.http_url,
        key=stack.admin_key,
        function_ids=(stack.function_id("http"),),
        sse_function_id=stack.function_id("sse"),
        grpc_function_id=stack.function_id("grpc"),
        grpc_target=",".join(stack.grpc_targets),
        urls=tuple(stack.http_urls) if stack.replicas > 1 else (),
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
        with LocalStack(log_dir=results, replicas=opts.replicas, workers=opts.gateway_workers) as stack:
            return _run_all(names, target_from_stack(stack), opts, results, name == "smoke", out, stack)
    if opts.replicas > 1 or opts.gateway_workers > 1:
        raise LoadTestError("--replicas and --gateway-workers are for the local stack: without --target")
    return _run_all(names, target, opts, results, name == "smoke", out)


def _run_all(names: list[str], target: Target, opts: Options, results: Path, smoke: bool, out,
             stack: LocalStack | None = None) -> int:  # fmt: skip
    def one(scenario_name: str) -> dict:
        folder = results / scenario_name if smoke else results
        return run_scenario(SCENARIOS[scenario_name], target, opts, folder, smoke=smoke, stack=stack)

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
        print(
            f"  {e['type']} {e['name']}: {e['requests']} requests, {e['rps']:.1f}/s, p50/p95/p99 "
            f"{e['p50_ms']:g}/{e['p95_ms']:g}/{e['p99_ms']:g} ms, error rate {e['error_rate']:.2%}, "
            f"success rate {e['success_rate']:.2%}" + (f", dropped {e['dropped']}" if e["dropped"] else ""),
            file=out,
        )
    for p in (doc.get("resources") or {}).get("processes", []):
        print(f"  {report.resource_line(p)}", file=out)
    for t in doc["thresholds"]:
        print("  " + slis.Verdict(**t).describe(), file=out)
    out.flush()
