"""`python -m fngate.bench` (`make bench`): fngate against nginx and against the direct path, in one run.

    python -m fngate.bench [--only http1,h2,grpc,...] [--runs 3] [--duration 10] [--out bench/results]

Every scenario starts its own servers on free ports, measures them with wrk / h2load
under taskset pinning, and stops them; then the micro benches run; the report
(markdown + JSON) goes to the output directory as bench-<time>.{md,json} and latest.*.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from fngate.bench import memory, replicas, scenarios, sse
from fngate.bench.micro import run_micro
from fngate.bench.procs import ROOT, cpu_count, layouts
from fngate.bench.report import compute_ratios, machine, markdown, targets, write
from fngate.bench.runner import Settings, say

SCENARIOS = ("http1", "echo", "h2", "grpc", "sse", "memory", "workers", "replicas", "micro")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fngate.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--runs", type=int, default=3, help="measured runs per target (alternating order); the median is reported")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded warm-up seconds per target")
    p.add_argument("--sizes", default="small,1k,1m", help="HTTP/1.1 response sizes: small (100 B), 1k, 1m")
    p.add_argument("--connections", type=int, default=64, help="wrk -c")
    p.add_argument("--sse-streams", type=int, default=10_000, help="concurrent SSE streams to hold through one gateway")
    p.add_argument("--idle-connections", type=int, default=1000, help="idle keep-alive connections for the memory figure")
    p.add_argument("--micro-max-time", type=float, default=None, help="pytest-benchmark --benchmark-max-time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="report directory")
    p.add_argument(
        "--no-profile", action="store_true", help="skip the extra py-spy run per fngate row (whose top frames go into the report)"
    )
    p.add_argument("--no-fngate", action="store_true", help="measure only the direct and nginx rows")
    p.add_argument(
        "--tracing",
        action="store_true",
        help="http1-small gets an 'fngate (tracing on)' row: every request traced to a discarding OTLP/HTTP receiver, plus the access log",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    return args


def raise_fd_limit() -> None:
    """Thousands of held streams need as many descriptors in the gateway, the sample and here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
            return
        except (ValueError, OSError):
            continue


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _data_plane() -> str:
    """The build the gateway rows run (proxy/ops/build_mode.py), as a gateway process loads it."""
    try:
        import fngate.proxy.server  # noqa: F401 every per-request module
        from fngate.proxy.ops.build_mode import describe_build
    except ImportError as e:
        return f"not importable ({e})"
    return describe_build()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (timeout, CI) unwinds like Ctrl-C, so every started server is stopped
    signal.signal(signal.SIGTERM, _interrupted)
    only = args.only.split(",")
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="fngate-bench-"))
    work.chmod(0o755)  # nginx workers may run as another user
    logs = work / "logs"
    logs.mkdir()
    settings = Settings(
        runs=args.runs,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        sse_streams=args.sse_streams,
        idle_connections=args.idle_connections,
        work=work,
        logs=logs,
        fngate=not args.no_fngate,
        profile=not args.no_profile,
        tracing=args.tracing,
    )
    doc: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": {
            "runs": args.runs,
            "duration": args.duration,
            "warmup": args.warmup,
            "only": only,
            "connections": args.connections,
            "sse_streams": args.sse_streams,
            "idle_connections": args.idle_connections,
            "tracing": args.tracing,
            "layouts": {k: v.describe() for k, v in layouts().items()},
        },
        "rows": [],
        "skipped": {},
        "failed": {},
        "notes": [],
    }
    if cpu_count() < 2:
        doc["notes"].append("fewer than 2 CPUs available: nothing could be pinned apart, figures are indicative only")
    rows = []
    steps = {
        "http1": lambda: rows.extend(scenarios.http1(settings, doc["skipped"], tuple(args.sizes.split(",")))),
        "echo": lambda: rows.extend(scenarios.http1_echo(settings, doc["skipped"])),
        "h2": lambda: rows.extend(scenarios.h2(settings, doc["skipped"])),
        "grpc": lambda: rows.extend(scenarios.grpc(settings, doc["skipped"])),
        "workers": lambda: rows.extend(scenarios.workers(settings, doc["skipped"])),
        "sse": lambda: doc.__setitem__("sse", sse.sse(settings, doc["skipped"])),
        "memory": lambda: doc.__setitem__("memory", memory.idle_connections(settings, doc["skipped"])),
        "replicas": lambda: doc.__setitem__("replicas", replicas.key_propagation(settings, doc["skipped"])),
        "micro": lambda: doc.__setitem__("micro", run_micro(work / "micro.json", layouts()["direct"].sut, args.micro_max_time)),
    }
    try:
        for name in SCENARIOS:
            if name not in only:
                continue
            say(f"scenario {name}")
            try:
                steps[name]()
            except Exception as e:  # one broken scenario must not lose the others' figures
                doc["failed"][name] = f"{type(e).__name__}: {e}"
                say(f"scenario {name} failed:\n{traceback.format_exc()}")
        compute_ratios(rows)
        doc["rows"] = [r.to_dict() for r in rows]
        doc["targets"] = targets(doc)
        doc["notes"] += [f"{name} failed: {why}" for name, why in doc["failed"].items()]
        if "workers" in only and cpu_count() <= 2:
            doc["notes"].append(
                "http1-workers: on a 2-core machine wrk and the upstream share both cores with the "
                "gateway's workers, so 2 workers cannot reach 2× here; compare req/s per SUT core"
            )
        if settings.fngate:  # the gateway processes run what this interpreter loads (same files, same environment)
            doc["notes"].append(f"fngate data plane: {_data_plane()}; FNGATE_PURE_PYTHON=1 measures it as pure Python")
        if "grpc" in only:
            doc["notes"].append(
                "gRPC: the instance keeps cpu1 to itself in every row; nginx grpc_pass and the gateway share cpu0 with "
                "h2load; h2load cannot read grpc-status, so one grpcio call per target checked status OK first"
            )
        json_path, md_path = write(doc, args.out)
        print(markdown(doc))
        say(f"report: {md_path} and {json_path}")
    finally:
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
