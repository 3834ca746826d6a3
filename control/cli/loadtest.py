"""`fngate loadtest SCENARIO`: Locust scenarios with SLI thresholds against fngate.

Without `--target` it starts a local fngate with the sample functions, runs the
scenario and stops everything; with `--target` it loads your deployment. Exit status:
0 all thresholds passed, 1 a threshold failed, 2 the run itself failed. The work is in
`loadtests.runner`, which runs Locust in a child process (never imported here).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _duration(text: str) -> float:
    from fngate.loadtests.plan import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad steps {text!r}: use e.g. 5,25,100") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("steps must be positive user counts")
    return steps


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = sorted(set(kinds) - {"http", "sse", "grpc"})
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"bad kinds {text!r}: use some of http,sse,grpc")
    return kinds


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fngate.loadtests.scenarios import SCENARIOS

    names = ["smoke", *SCENARIOS]
    p = sub.add_parser(
        "loadtest",
        help="run a load/soak scenario with SLI thresholds (Locust)",
        description="Scenarios: smoke (every scenario for a few seconds), "
        + "; ".join(f"{s.name} ({s.about})" for s in SCENARIOS.values()),
    )
    p.add_argument("scenario", choices=names, metavar="SCENARIO", help=" | ".join(names))
    t = p.add_argument_group("target (default: a local fngate with the sample functions)")
    t.add_argument("--target", help="gateway invocation URL, e.g. https://invocation.example.com")
    t.add_argument("--key", default=os.environ.get("FNGATE_KEY"), help="API key with invoke_function (env FNGATE_KEY)")
    t.add_argument("--function-id", action="append", default=[], help="HTTP function to invoke (repeatable)")
    t.add_argument("--sse-function-id", default="", help="streaming (SSE) function for the sse scenario")
    t.add_argument("--grpc-function-id", default="", help="gRPC Echo function for the grpc scenario")
    t.add_argument("--grpc-target", default="", help="HOST:PORT of the gateway's gRPC listener")
    t.add_argument("--sse-target", default="", help="with --direct: URL of the SSE instance")
    t.add_argument("--llm-function-id", default="", help="llm: the LLM function (chat calls send model FUNCTION_ID/MODEL)")
    t.add_argument("--model", default="", help="llm: the model name the function serves (default fngate-llm, the fngate/llm sample's)")
    t.add_argument("--metrics-url", action="append", default=[], help="a gateway's admin /metrics, scraped during the run (repeatable)")
    t.add_argument("--api-metrics-url", default="", help="the control plane's /metrics (ready instances; sent with --key)")
    t.add_argument("--direct", action="store_true", help="the targets are instances, not a gateway (baselines)")
    t.add_argument("--domain", help="Host-routed requests use {function-id}.DOMAIN (default invocation.localhost)")
    t.add_argument("--routing", choices=("host", "header", "both"), help="HTTP routing mode (default both)")
    t.add_argument("--replicas", type=int, default=1, help="local stack: N fngate serve replicas on a Redis of its own (default 1)")
    t.add_argument("--gateway-workers", type=int, default=1, help="local stack: gateway worker processes per replica (default 1)")
    load = p.add_argument_group("load")
    load.add_argument("--users", type=int, help="closed-loop users")
    load.add_argument("--rate", type=float, help="open-loop arrivals/s (soak: per function)")
    load.add_argument("--kinds", type=_kinds, help="soak: functions to drive, e.g. http,sse,grpc (default: each one the target names)")
    load.add_argument("--http-rate", type=float, help="soak: HTTP arrivals/s per function (default --rate)")
    load.add_argument("--sse-rate", type=float, help="soak: SSE streams opened per second (default --rate)")
    load.add_argument("--grpc-rate", type=float, help="soak: unary gRPC calls per second (default --rate)")
    load.add_argument("--duration", type=_duration, help="e.g. 30s, 10m, 1h")
    load.add_argument("--steps", type=_steps, help="ramp: users per step, e.g. 5,25,100,500,1000")
    load.add_argument("--think-time", type=float, help="closed-loop pause between calls, seconds (default 0)")
    load.add_argument("--ramp-up", type=_duration, help="open loop: rise to --rate over this time (hammer: the run)")
    load.add_argument("--max-inflight", type=int, help="open loop: in-flight arrivals per generator before dropping")
    load.add_argument("--workers", type=int, default=0, help="Locust processes (default: as the load needs, ≤ cores)")
    shape = p.add_argument_group("request shape")
    shape.add_argument("--path", help="HTTP invocation path (default /echo, the echo sample's)")
    shape.add_argument("--body-size", type=_size, help="request body, e.g. 64, 1MiB")
    shape.add_argument("--response-size", type=_size, help="response body asked of the echo function")
    shape.add_argument("--delay", type=float, help="instance delay before answering / between SSE events, seconds")
    shape.add_argument("--stream-length", type=int, help="SSE events or gRPC stream replies per call")
    shape.add_argument("--poll-seconds", type=int, help="NVCF-POLL-SECONDS sent with invocations")
    shape.add_argument("--stream", choices=("true", "false", "both"), help="llm: streamed calls, non-streamed, or both alternating")
    out = p.add_argument_group("report")
    out.add_argument("--results", type=Path, help="results folder (default loadtests/results/tmp-SCENARIO-TIME)")
    out.add_argument("--parallel", action="store_true", help="smoke: run the scenarios at once (quicker)")
    out.add_argument("--sample-interval", type=float, help="local stack: seconds between RSS/descriptor samples (default 5)")
    out.add_argument("--slis", dest="slis_file", type=Path, help="thresholds file (default loadtests/slis.yaml)")
    out.add_argument("--scrape-interval", type=float, help="seconds between scrapes of fngate's /metrics (default 1)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fngate.loadtests import runner
    from fngate.loadtests.localstack import StackError
    from fngate.loadtests.slis import SliConfigError

    target = None
    if args.target or args.direct or args.grpc_target or args.llm_function_id:
        target = runner.Target(
            url=(args.target or "").rstrip("/"),
            key=args.key or "",
            function_ids=tuple(args.function_id),
            sse_function_id=args.sse_function_id,
            grpc_function_id=args.grpc_function_id,
            grpc_target=args.grpc_target,
            sse_url=args.sse_target.rstrip("/"),
            direct=args.direct,
            llm_function_id=args.llm_function_id,
            llm_model=args.model,
            metrics_urls=tuple(args.metrics_url),
            api_metrics_url=args.api_metrics_url,
        )
    opts = runner.Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(runner.Options)})
    try:
        return runner.run(args.scenario, target, opts)
    except (runner.LoadTestError, StackError, SliConfigError, OSError) as exc:
        print(f"fngate loadtest: {exc}", file=sys.stderr)
        return runner.EXIT_RUN_FAILED
