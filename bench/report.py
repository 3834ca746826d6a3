"""Rows, medians, ratios, and the report (markdown + JSON) written to bench/results/.

A Row is one target in one scenario with its runs. Its figures are those of the
median run by requests/s (p50/p99 from that same run, as in the baseline); the CPU is
the median over runs. Ratios compare rows of the same scenario and the same
invocation only: to the nginx proxy row, per core to the nginx proxy row, and to the
direct row (the upstream or instance called without a proxy).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fngate.bench.loadgen import Sample

DIRECT, NGINX, FNGATE = "direct", "nginx", "fngate"
CEILING = "ceiling"  # bench/minimal_proxy.py, minimal_h2_proxy.py: the design's machinery without fngate's features
ANCHOR = "anchor"  # another production proxy beside nginx (nghttpx, haproxy in the h2c scenario)


@dataclass
class Row:
    scenario: str
    target: str
    role: str  # DIRECT | NGINX | ANCHOR | CEILING | FNGATE
    layout: str
    load: str  # the load generator command shape, e.g. "wrk -t1 -c64"
    samples: list[Sample] = field(default_factory=list)
    baseline: str | None = None  # another target in the scenario to compare with (e.g. 1 worker)
    ratios: dict[str, float | None] = field(default_factory=dict)
    profile: dict | None = None  # py-spy summary of an extra run (--profile)

    @property
    def median(self) -> Sample:
        ordered = sorted(self.samples, key=lambda s: s.rps)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def rps(self) -> float:
        return self.median.rps

    @property
    def sut_cpu(self) -> float:
        return statistics.median(s.sut_cpu for s in self.samples)

    @property
    def load_cpu(self) -> float:
        return statistics.median(s.load_cpu for s in self.samples)

    @property
    def rps_per_core(self) -> float | None:
        cpu = self.sut_cpu
        return self.rps / cpu if cpu > 0.01 else None

    def to_dict(self) -> dict:
        m = self.median
        return {
            "scenario": self.scenario,
            "target": self.target,
            "role": self.role,
            "layout": self.layout,
            "load": self.load,
            "runs": len(self.samples),
            "rps": round(self.rps, 1),
            "rps_min": round(min(s.rps for s in self.samples), 1),
            "rps_max": round(max(s.rps for s in self.samples), 1),
            "p50_ms": m.p50_ms,
            "p99_ms": m.p99_ms,
            "errors": sum(s.errors for s in self.samples),
            "sut_cpu": round(self.sut_cpu, 3),
            "load_cpu": round(self.load_cpu, 3),
            "rps_per_core": None if self.rps_per_core is None else round(self.rps_per_core, 1),
            "ratios": {k: None if v is None else round(v, 3) for k, v in self.ratios.items()},
            "samples": [s.to_dict() for s in self.samples],
            "profile": self.profile,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compute_ratios(rows: list[Row]) -> None:
    """Fill each row's ratios from the other rows of its scenario (measured figures only)."""
    by_scenario: dict[str, list[Row]] = {}
    for r in rows:
        by_scenario.setdefault(r.scenario, []).append(r)
    for group in by_scenario.values():
        nginx = next((r for r in group if r.role == NGINX), None)
        direct = next((r for r in group if r.role == DIRECT), None)
        named = {r.target: r for r in group}
        for r in group:
            r.ratios = {
                "vs_nginx": _ratio(r.rps, nginx.rps) if nginx else None,
                "vs_nginx_per_core": _ratio(r.rps_per_core, nginx.rps_per_core) if nginx else None,
                "vs_direct": _ratio(r.rps, direct.rps) if direct else None,
            }
            if r.baseline and r.baseline in named:
                r.ratios[f"vs_{r.baseline}"] = _ratio(r.rps, named[r.baseline].rps)


def _row(rows: list[dict], scenario: str, target: str | None = None, role: str = FNGATE) -> dict | None:
    return next((r for r in rows if r["scenario"] == scenario and r["role"] == role and (target is None or r["target"] == target)), None)


def targets(doc: dict) -> list[dict]:
    """The issue's targets, each read off this report's measured figures (None: not measured)."""
    rows, out = doc["rows"], []

    def add(
        name: str, value: Any, goal: float, unit: str, higher_is_better: bool = True
    ) -> None:  # value: a number, or falsy when not measured
        met = None if value is None else (value >= goal if higher_is_better else value <= goal)
        out.append({"target": name, "value": None if value is None else round(value, 3), "goal": goal, "unit": unit, "met": met})

    fn, ng = _row(rows, "http1-small", "fngate"), _row(rows, "http1-small", role=NGINX)  # not the tracing-on row
    add("HTTP/1.1 small: req/s per core vs nginx", fn and fn["ratios"].get("vs_nginx_per_core"), 0.8, "×")
    # added latency from the one-connection rows when measured (no queueing), else under load
    lf, lg = _row(rows, "http1-latency", "fngate"), _row(rows, "http1-latency", role=NGINX)
    if lf and lg:
        add("HTTP/1.1 p50 added over nginx's (one connection)", lf["p50_ms"] - lg["p50_ms"], 0.3, "ms", False)
    else:
        add("HTTP/1.1 small: p50 added over nginx's", fn and ng and fn["p50_ms"] - ng["p50_ms"], 0.3, "ms", False)
    h2 = _row(rows, "h2c-small")
    # the HTTP/2 engine on libnghttp2 (issue 13) raised these two goals from 0.3 and 0.8
    add("h2c: req/s per core vs nginx", h2 and h2["ratios"].get("vs_nginx_per_core"), 0.35, "×")
    g = _row(rows, "grpc-unary")
    add("gRPC unary: calls/s vs the instance directly", g and g["ratios"].get("vs_direct"), 0.9, "×")
    add("gRPC unary: calls/s per core vs nginx grpc_pass", g and g["ratios"].get("vs_nginx_per_core"), 0.8, "×")
    latency = (doc.get("sse") or {}).get("latency") or []
    through = next((x for x in latency if "added_p50_ms" in x), None)
    add("SSE: added latency per event (p50)", through and through["added_p50_ms"], 1.0, "ms", False)
    holds = (doc.get("sse") or {}).get("hold") or []
    best = max(holds, key=lambda h: h["held"], default=None)
    add(
        "SSE: concurrent streams held by one process"
        + (f" ({best['transport']}, {best['connections']:,} client connections)" if best else ""),
        best and best["held"],
        10_000,
        "streams",
    )
    w = _row(rows, "http1-workers", "fngate 2w")
    add("--workers 2 vs 1 (req/s)", w and w["ratios"].get("vs_fngate 1w"), 1.7, "×")
    return out


def machine() -> dict:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": None, "cpu_model": None}
    try:
        import os

        info["cpus"] = os.cpu_count()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    for tool, args in (("nginx", ["-v"]), ("wrk", ["-v"]), ("h2load", ["--version"]), ("nghttpx", ["--version"]), ("haproxy", ["-v"])):
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
        if path:
            out = subprocess.run([path, *args], capture_output=True, text=True)
            info[tool] = (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else ""
    return info


def _f(v, fmt: str = "{:,.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(doc: dict) -> str:
    m = doc["machine"]
    out = [
        "# fngate benchmark report",
        "",
        f"Taken {doc['started']} on {m.get('cpus')} × {m.get('cpu_model')}, {m.get('mem_gib')} GiB, "
        f"Python {m.get('python')}; "
        + "; ".join(str(m[tool]) for tool in ("nginx", "wrk", "h2load", "nghttpx", "haproxy") if m.get(tool))
        + ".",
        f"Method: {doc['settings']['runs']} alternating runs of {doc['settings']['duration']} s per target "
        f"(after a {doc['settings']['warmup']} s warm-up); each row is the median run by requests/s, with p50/p99 "
        "from that run and the median CPU. CPU is (utime+stime of the process tree)/wall time, from /proc. "
        "Ratios compare rows of the same scenario in this invocation only.",
        "",
    ]
    if doc.get("skipped"):
        out += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in doc["skipped"].items()), ""]
    if doc.get("targets"):
        out += ["## Targets (from the figures below)", "", "| target | measured | goal | met |", "|---|---|---|---|"]
        for t in doc["targets"]:
            sign = "≥" if t["unit"] in ("×", "streams") else "≤"
            met = "–" if t["met"] is None else ("yes" if t["met"] else "no")
            fmt = "{:,.0f}" if t["unit"] == "streams" else "{:,.2f}"
            out.append(f"| {t['target']} | {_f(t['value'], fmt)} {t['unit']} | {sign} {t['goal']:,} {t['unit']} | {met} |")
        out.append("")
    if doc["rows"]:
        out += [
            "## Throughput and latency",
            "",
            "| scenario | target | layout | load | req/s | p50 / p99 ms | SUT cores | load cores | req/s per SUT core | vs nginx | vs nginx per core | vs direct | other | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in doc["rows"]:
            ra = r["ratios"]
            other = ", ".join(
                f"{k} {v:.2f}" for k, v in ra.items() if k not in ("vs_nginx", "vs_nginx_per_core", "vs_direct") and v is not None
            )
            out.append(
                f"| {r['scenario']} | {r['target']} | {r['layout']} | {r['load']} | {_f(r['rps'])} "
                f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['sut_cpu']:.2f} | {r['load_cpu']:.2f} "
                f"| {_f(r['rps_per_core'])} | {_f(ra.get('vs_nginx'), '{:.2f}')} | {_f(ra.get('vs_nginx_per_core'), '{:.2f}')} "
                f"| {_f(ra.get('vs_direct'), '{:.2f}')} | {other or '–'} | {r['errors']} |"
            )
        out.append("")
    profiled = [r for r in doc["rows"] if r.get("profile")]
    if profiled:
        out += [
            "## Where fngate's time goes (py-spy, one extra run per row)",
            "",
            "Self time of `Runner.run` is the event loop's own C code (uvloop: socket syscalls, "
            "callback dispatch); inclusive figures leave out the entry chain every stack shares.",
            "",
        ]
        for r in profiled:
            prof = r["profile"]
            # CPU per request from the measured runs; a frame's share of it is its share of the samples
            per_request = r["sut_cpu"] / r["rps"] * 1e6 if r["rps"] else None

            def frames(kind: str, prof: dict = prof, per_request: float | None = per_request) -> str:
                return ", ".join(
                    f"`{f['frame']}` {f['pct']}%" + ("" if per_request is None else f" ({f['pct'] * per_request / 100:.1f} µs)")
                    for f in prof[kind][:8]
                )

            cost = "" if per_request is None else f", {per_request:.1f} µs of CPU per request"
            out.append(
                f"- **{r['scenario']} / {r['target']}** ({prof['samples']:,} samples{cost}), self: "
                + frames("self")
                + "; inclusive: "
                + frames("inclusive")
            )
        out.append("")
    if doc.get("sse"):
        out += ["## SSE", "", "| target | streams | events | delay p50 / p99 ms | added p50 / p99 ms |", "|---|---|---|---|---|"]
        for s in doc["sse"].get("latency", []):
            out.append(
                f"| {s['target']} | {s['streams']} | {s['events']} | {s['p50_ms']:.3f} / {s['p99_ms']:.3f} "
                f"| {_f(s.get('added_p50_ms'), '{:.3f}')} / {_f(s.get('added_p99_ms'), '{:.3f}')} |"
            )
        holds = doc["sse"].get("hold")
        if holds:
            out += _sse_holding(holds)
        out.append("")
    if doc.get("memory"):
        out += [
            "## Memory per idle connection",
            "",
            "| target | idle connections | RSS before → after MiB | KiB per connection |",
            "|---|---|---|---|",
        ]
        for mrow in doc["memory"]:
            out.append(
                f"| {mrow['target']} | {mrow['held']:,} | {mrow['rss_before_mib']:.1f} → {mrow['rss_after_mib']:.1f} "
                f"| {_f(mrow.get('kib_per_connection'), '{:.1f}')} |"
            )
        out.append("")
    if doc.get("replicas"):
        from fngate.bench.replicas import markdown as replicas_markdown

        out += replicas_markdown(doc["replicas"])
    micro = doc.get("micro")
    if micro:
        out += ["## Micro benchmarks (pytest-benchmark)", ""]
        if micro.get("error"):
            out += [f"Failed: {micro['error']}", ""]
        if micro.get("benchmarks"):
            out += ["| benchmark | median µs | mean µs | ops/s | rounds |", "|---|---|---|---|---|"]
            for b in micro["benchmarks"]:
                out.append(f"| {b['name']} | {b['median_us']:.2f} | {b['mean_us']:.2f} | {_f(b['ops'])} | {b['rounds']} |")
            out.append("")
    if doc.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    if doc.get("analysis"):
        out += [
            "## Where the remaining time goes (analysis)",
            "",
            "Written by hand from a profiled run (`bench/analysis.md`); check it against the figures above.",
            "",
            doc["analysis"].strip(),
            "",
        ]
    return "\n".join(out)


def _sse_holding(holds: list[dict]) -> list[str]:
    out = [
        "",
        "Concurrent open streams through one gateway process (a fresh gateway and instance per transport; "
        "a stream counts once its first event arrived and while it stays open):",
        "",
        "| transport | client connections | held / asked | opened in s | gateway RSS before → after MiB "
        "| KiB per stream | gateway descriptors / limit | streams at the instance | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in holds:
        failures = "; ".join(f"{n} × {kind}" for kind, n in h["error_kinds"].items()) or "–"
        out.append(
            f"| {h['transport']} | {h['connections']:,} | {h['held']:,} / {h['asked']:,} | {h['opened_in_s']:.1f} "
            f"| {h['rss_before_mib']:.1f} → {h['rss_after_mib']:.1f} | {_f(h.get('kib_per_stream'), '{:.1f}')} "
            f"| {_f(h.get('gateway_fds'))} / {_f(h.get('gateway_fd_limit'))} | {_f(h.get('instance_active'))} "
            f"| {failures} |"
        )
    h1 = next((h for h in holds if h["transport"] == "HTTP/1.1" and h["held"] < h["asked"]), None)
    if h1 and h1.get("gateway_fd_limit"):
        out += [
            "",
            f"HTTP/1.1 stops short of {h1['asked']:,}: each stream holds two gateway descriptors (client and "
            f"instance connection) and the gateway's open-files limit is {h1['gateway_fd_limit']:,} (the gateway "
            "lifts its soft limit to the hard one at start; a higher hard limit would let more in), so fewer than "
            f"{h1['gateway_fd_limit'] // 2:,} streams fit beside the gateway's own descriptors. Over HTTP/2 a "
            "stream holds one gateway descriptor.",
        ]
    return out


ANALYSIS = Path(__file__).with_name("analysis.md")


def write(doc: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if "analysis" not in doc and ANALYSIS.exists():
        doc["analysis"] = ANALYSIS.read_text()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path, md_path = out_dir / f"bench-{stamp}.json", out_dir / f"bench-{stamp}.md"
    json_path.write_text(json.dumps(doc, indent=1))
    md_path.write_text(markdown(doc))
    shutil.copyfile(json_path, out_dir / "latest.json")
    shutil.copyfile(md_path, out_dir / "latest.md")
    return json_path, md_path
