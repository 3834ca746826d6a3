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
from .server_metrics import DEFAULT_INTERVAL as SCRAPE_INTERVAL
from .server_metrics import ServerScraper, Sources
from .tokens import token_figures

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


def driven_functions(plan: Plan, target: Target) -> tuple[str, ...]:
    """The functions a run calls: whose ready instances the server-side series count."""
    needs = plan.scenario.needs
    if plan.rates:
        ids = {"http": target.function_ids, "sse": (target.sse_function_id,), "grpc": (target.grpc_function_id,)}
        return tuple(f for kind in plan.rates for f in ids[kind] if f)
    if needs == "sse":
        return (target.sse_function_id,) if target.sse_function_id else ()
    if needs == "grpc":
        return (target.grpc_function_id,) if target.grpc_function_id else ()
    if needs == "llm":
        return (target.llm_function_id,) if target.llm_function_id else ()
    return target.function_ids


def server_sources(plan: Plan, target: Target) -> Sources:
    return Sources(tuple(target.metrics_urls), target.api_metrics_url, target.key, driven_functions(plan, target))


def rules_for_plan(rules: list[dict], plan: Plan, smoke: bool = False) -> list[dict]:
    """An llm run that only streams (or never does) has no entries of the other kind to bound;
    a smoke run (seconds, the stack's default autoscaler) cannot see instances come and go."""
    if smoke:
        rules = [r for r in rules if r.get("series") != "ready_instances"]
    if plan.scenario.needs != "llm" or plan.knobs.llm_stream == "both":
        return rules
    unused = ("chat: completion",) if plan.knobs.llm_stream == "true" else ("chat: stream", "chat: ttft", "chat: itl")
    return [r for r in rules if r.get("entry") not in unused]


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
    rules = rules_for_plan(rules, plan, smoke)
    started = time.time()
    sampler = None
    if stack is not None and plan.rates:
        sampler = ResourceSampler(stack.processes(), opts.sample_interval or DEFAULT_INTERVAL)
        sampler.start()
    sources = server_sources(plan, target)
    scraper = ServerScraper(sources, opts.scrape_interval or SCRAPE_INTERVAL) if sources else None
    if scraper is not None:
        scraper.start()
    try:
        prefix = run_locust(plan, target, results)
    finally:
        if sampler is not None:
            sampler.stop()
        if scraper is not None:
            scraper.stop()
    entries = slis.load_stats(prefix)
    verdicts = slis.evaluate(entries, rules)
    server: dict | None = None
    if scraper is not None:
        server = scraper.report()
        verdicts += slis.evaluate_series(server, slis.series_rules(rules))
    elif slis.series_rules(rules):
        server = {"seconds": [], "note": "Server-side SLIs not checked: no metrics source (`--metrics-url`, `--api-metrics-url`)."}
    settings = {"target": locust_host(plan, target), **plan.settings(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}  # fmt: skip
    if stack is not None and stack.replicas > 1:
        settings["replicas"] = stack.replicas
        settings["requests_per_replica"] = stack.requests_served()
    extra = {"tokens": token_figures(entries, plan.duration)} if scenario.needs == "llm" else None
    doc = report.summary(scenario.name, settings, entries, verdicts, sampler.report() if sampler else None, server, extra)
    report.write(results, doc)
    with _PLOT_LOCK:
        report.plot(Path(f"{prefix}_stats_history.csv"), results, scenario.name)
        if server is not None:
            report.plot_server(server, results, scenario.name, Path(f"{prefix}_stats_history.csv"))
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
        llm_function_id=stack.function_id("llm"),
        metrics_urls=tuple(stack.metrics_urls),
        api_metrics_url=stack.api_metrics_url,
    )


def stack_config(names: list[str], opts: Options) -> dict | None:
    """The local stack's config for a run: for a scenario that `scales`, an autoscaler whose
    window and scale-down stabilisation fit in one of its steps (NVCF's 60 s window and 30 s
    against 20 min stages; here a step may last a few seconds), so it can follow them."""
    if len(names) != 1 or not SCENARIOS[names[0]].scales:
        return None
    scenario = SCENARIOS[names[0]]
    steps = opts.steps or dict(scenario.knobs).get("steps") or (1,)
    step = (opts.duration or scenario.duration) / len(steps)  # type: ignore[arg-type]  # knobs hold a tuple here
    window = min(max(step / 4, 2.0), 60.0)
    return {"autoscaler": {"interval": min(max(window / 4, 0.5), 2.0), "window": window, "downStabilization": min(window / 2, 30.0)}}


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
    if name == "smoke" and target is not None and not target.llm_function_id:
        # a target of your own may have no LLM function (the local stack always has one)
        skipped = [n for n in names if SCENARIOS[n].needs == "llm"]
        names = [n for n in names if n not in skipped]
        print(f"fngate loadtest: skipped: {', '.join(skipped)} (no LLM function: --target with --llm-function-id)", file=out)
    if target is None:
        print("fngate loadtest: starting a local fngate with the sample functions ...", file=out, flush=True)
        config = stack_config(names, opts)
        llm = any(SCENARIOS[n].needs == "llm" for n in names)
        with LocalStack(log_dir=results, replicas=opts.replicas, workers=opts.gateway_workers, config=config, llm=llm) as stack:
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
