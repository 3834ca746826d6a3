"""The report of a run: summary (JSON + markdown) and plots, next to Locust's CSV and HTML.

Files in the results folder (`<name>` is the scenario):
- `<name>_stats.csv`, `<name>_stats_history.csv`, `<name>_failures.csv`, `<name>.html` (Locust's own);
- `summary.json` / `summary.md`: the run's settings, every entry's SLIs, each threshold's verdict;
- `latency.png` (p50/p95/p99 over time) and `throughput.png` (requests/s, failures/s and users);
- with resource samples (soak on the local stack): `rss.png` and `fds.png`, one line per process,
  and in the summary a table of each process's first and last value and least-squares slope;
- with fngate's /metrics scraped during the run (server_metrics.py; every scenario on the local
  stack, or `--metrics-url`): `server.png`, the server-side series on Locust's time axis
  (queue depth, in-flight requests, ready instances, requests/s and 429s/s), and in the summary
  each series' figures and the verdicts of the server-side SLIs;
- for the LLM scenario, the token figures: time to first token, inter-token gaps, tokens/s.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from .slis import EntryStats, Verdict


def machine() -> dict[str, Any]:
    """What the run ran on, so a committed reference run can be judged against another box."""
    cpu = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "locust": metadata.version("locust"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


MIB = 1024 * 1024


def summary(
    scenario: str,
    settings: Mapping[str, Any],
    entries: Iterable[EntryStats],
    verdicts: Iterable[Verdict],
    resources: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    verdicts = list(verdicts)
    doc = {
        "scenario": scenario,
        "passed": bool(verdicts) and all(v.passed for v in verdicts),
        "settings": dict(settings),
        "machine": machine(),
        "entries": [{"type": e.type, "name": e.name, **e.metrics()} for e in entries],
        "thresholds": [v.as_dict() for v in verdicts],
    }
    if resources is not None:
        doc["resources"] = dict(resources)
    if server is not None:
        doc["server"] = dict(server)
    for key, value in (extra or {}).items():
        doc[key] = value
    return doc


def resource_line(p: Mapping[str, Any]) -> str:
    """One process's figures on one line: RSS and descriptors, first -> last, slope per hour."""
    return (
        f"{p['label']} (pid {p['pid']}): RSS {_mib(p['rss_start_bytes'])} -> {_mib(p['rss_end_bytes'])} MiB "
        f"({p['rss_slope_bytes_per_h'] / MIB:+.2f} MiB/h, 2nd half {p['rss_late_slope_bytes_per_h'] / MIB:+.2f}), "
        f"fds {p['fds_start']} -> {p['fds_end']} ({p['fds_slope_per_h']:+.1f}/h, 2nd half {p['fds_late_slope_per_h']:+.1f})"
    )


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / MIB:.1f}"


def _resource_table(resources: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Resources per process",
        "",
        f"Sampled from /proc every {resources['interval_s']:g} s; slope: least squares over the run, per hour; "
        "2nd half: the same over the run's second half, once pools and caches have warmed up (a leak keeps its slope).",
        "",
        "| process | pid | samples | RSS start MiB | RSS end MiB | RSS slope MiB/h | 2nd half | fds start | fds end | fds slope /h | 2nd half |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in resources["processes"]:
        lines.append(
            f"| {p['label']} | {p['pid']} | {p['samples']} | {_mib(p['rss_start_bytes'])} | {_mib(p['rss_end_bytes'])} "
            f"| {p['rss_slope_bytes_per_h'] / MIB:+.2f} | {p['rss_late_slope_bytes_per_h'] / MIB:+.2f} "
            f"| {p['fds_start']} | {p['fds_end']} | {p['fds_slope_per_h']:+.1f} | {p['fds_late_slope_per_h']:+.1f} |"
        )
    return [*lines, ""]


SERIES_LABELS = {
    "queue_depth": "queue depth",
    "in_flight": "in-flight requests",
    "ready_instances": "ready instances",
    "requests_per_s": "requests/s (server)",
    "responses_429_per_s": "429s/s",
}


def _fig(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _server_table(server: Mapping[str, Any]) -> list[str]:
    lines = ["## Server-side series (fngate /metrics)", ""]
    if not server.get("seconds"):
        return [*lines, server.get("note") or "No server-side series: no metrics source (local stack, or `--metrics-url`).", ""]
    lines += [
        f"Scraped every {server['interval_s']:g} s ({len(server['seconds'])} readings, {server.get('scrape_errors', 0)} failed); "
        "`settled`: in flight once the load stopped (NVCF: pending above 0 at steady state means pressure); "
        "`total`: the counter's increase over the run.",
        "",
        "| series | max | min | mean | last | rises | falls | total / settled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, st in server["stats"].items():
        tail = st.get("total", st.get("settled"))
        lines.append(
            f"| {SERIES_LABELS.get(name, name)} | {_fig(st['max'])} | {_fig(st['min'])} | {_fig(st['mean'])} | {_fig(st['last'])} "
            f"| {st['rises']} | {st['falls']} | {_fig(tail)} |"
        )
    return [*lines, ""]


def _token_lines(tokens: Mapping[str, Any]) -> list[str]:
    return [
        "## Tokens",
        "",
        f"- output tokens: {tokens['output_tokens']} over {tokens['responses']} responses ({tokens['streams']} streamed)",
        f"- throughput: {tokens['tokens_per_s']:.1f} tokens/s over the run",
        f"- per stream: p50 {_fig(tokens.get('stream_tokens_per_s_p50'))} tokens/s, p95 time to first token "
        f"{_fig(tokens.get('ttft_p95_ms'))} ms, p95 inter-token gap {_fig(tokens.get('itl_p95_ms'))} ms",
        "",
    ]


def markdown(doc: Mapping[str, Any]) -> str:
    verdict = "PASS" if doc["passed"] else "FAIL"
    lines = [f"# Load test `{doc['scenario']}`: {verdict}", ""]
    lines += ["## Settings", ""] + [f"- {k}: `{v}`" for k, v in doc["settings"].items()] + [""]
    if doc.get("machine"):
        lines += ["## Machine", ""] + [f"- {k}: `{v}`" for k, v in doc["machine"].items()] + [""]
    lines += [
        "## SLIs per entry",
        "",
        "| type | name | requests | rps | p50 ms | p95 ms | p99 ms | max ms | error rate | success rate | dropped |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in doc["entries"]:
        lines.append(
            f"| {e['type'] or ''} | {e['name']} | {e['requests']} | {e['rps']:.1f} | {e['p50_ms']:g} | {e['p95_ms']:g} "
            f"| {e['p99_ms']:g} | {e['max_ms']:.0f} | {e['error_rate']:.4%} | {e['success_rate']:.4%} | {e['dropped']} |"
        )
    lines += ["", "## Thresholds", "", "| verdict | entry | metric | value | want |", "|---|---|---|---:|---|"]
    for t in doc["thresholds"]:
        value = "no requests" if t["value"] is None else f"{t['value']:.6g}"
        lines.append(f"| {'PASS' if t['passed'] else 'FAIL'} | {t['entry']} | {t['metric']} | {value} | {t['op']} {t['limit']:g} |")
    lines.append("")
    plots = "`latency.png`, `throughput.png`"
    if doc.get("tokens"):
        lines += _token_lines(doc["tokens"])
    if doc.get("server") is not None:
        lines += _server_table(doc["server"])
        if doc["server"].get("seconds"):
            plots += ", `server.png`"
    if doc.get("resources"):
        lines += _resource_table(doc["resources"])
        plots += ", `rss.png`, `fds.png`"
    lines += [f"Plots: {plots}. Locust's report: the `.html` file; raw data: the CSV files.", ""]
    return "\n".join(lines)


def write(results: Path, doc: Mapping[str, Any]) -> None:
    (results / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    (results / "summary.md").write_text(markdown(doc))


def _history(path: Path) -> list[dict[str, str]]:
    """Rows of the Aggregated series of `_stats_history.csv`, in time order."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["Name"] == "Aggregated"]


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _per_second(seconds: list[int], rows: list[dict[str, str]]) -> tuple[list[int], list[float], list[float]]:
    """Completed requests and failures per second, from the growth of the running totals.

    (Locust's own Requests/s column is a 10 s moving average, which smears ramps.)
    """
    times, done, failed = [], [], []
    prev_t, prev_n, prev_f = None, 0.0, 0.0
    for t, r in zip(seconds, rows, strict=True):
        n, f = _num(r["Total Request Count"]) or 0.0, _num(r["Total Failure Count"]) or 0.0
        if prev_t is not None and t > prev_t:
            times.append(t)
            done.append((n - prev_n) / (t - prev_t))
            failed.append((f - prev_f) / (t - prev_t))
        if prev_t is None or t > prev_t:
            prev_t, prev_n, prev_f = t, n, f
    return times, done, failed


def plot(history_csv: Path, results: Path, title: str) -> list[Path]:
    """latency.png and throughput.png from the Aggregated rows of the history CSV."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = _history(history_csv)
    if not rows:
        return []
    t0 = int(rows[0]["Timestamp"])
    seconds = [int(r["Timestamp"]) - t0 for r in rows]
    written = []

    fig, ax = plt.subplots(figsize=(9, 4.5))
    sampled = [(t, r) for t, r in zip(seconds, rows, strict=True) if (_num(r["Total Request Count"]) or 0) > 0]
    for column, label in (("50%", "p50"), ("95%", "p95"), ("99%", "p99")):
        ax.plot([t for t, _ in sampled], [_num(r[column]) for _, r in sampled], label=label)  # type: ignore[arg-type]  # None draws as a gap
    ax.set(title=f"{title}: latency percentiles (last 10 s window)", xlabel="seconds", ylabel="ms")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(results / "latency.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    times, done, failed = _per_second(seconds, rows)
    ax.plot(times, done, label="requests/s")
    ax.plot(times, failed, label="failures/s")
    ax.set(title=f"{title}: throughput (completed per second)", xlabel="seconds", ylabel="per second")
    ax.grid(alpha=0.3)
    users = ax.twinx()
    users.plot(seconds, [_num(r["User Count"]) for r in rows], color="grey", linestyle=":", label="users")  # type: ignore[arg-type]  # None draws as a gap
    users.set_ylabel("users")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = users.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper left")
    fig.tight_layout()
    written.append(results / "throughput.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def plot_resources(resources: Mapping[str, Any], results: Path, title: str) -> list[Path]:
    """rss.png and fds.png: one line per sampled process over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, scale, ylabel, name in (("rss_bytes", MIB, "RSS MiB", "rss.png"), ("fds", 1, "open descriptors", "fds.png")):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for p in resources["processes"]:
            series = p["series"]
            ax.plot(series["seconds"], [v / scale for v in series[key]], label=f"{p['label']} ({p['pid']})")
        ax.set(title=f"{title}: {ylabel} per process", xlabel="seconds", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        written.append(results / name)
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def plot_server(server: Mapping[str, Any], results: Path, title: str, history_csv: Path | None = None) -> Path | None:
    """server.png: the server-side series in three panels, with Locust's users (from its
    history CSV, aligned on wall-clock time) beside the first, so client and server views of
    the run read together."""
    if not server.get("seconds"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds, series = server["seconds"], server["series"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    panels = (("queue_depth", "in_flight"), ("ready_instances",), ("requests_per_s", "responses_429_per_s"))
    for ax, names in zip(axes, panels, strict=True):
        for name in names:
            if name in series:
                ax.plot(
                    seconds, series[name], label=SERIES_LABELS[name], drawstyle="steps-post" if name == "ready_instances" else "default"
                )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    rows = _history(history_csv) if history_csv is not None else []
    if rows and server.get("started_at"):
        users = axes[0].twinx()
        users.plot([int(r["Timestamp"]) - server["started_at"] for r in rows], [_num(r["User Count"]) for r in rows],
                   color="grey", linestyle=":", label="Locust users")  # fmt: skip
        users.set_ylabel("users")
        users.legend(loc="upper right", fontsize="small")
    axes[0].set(title=f"{title}: server-side series (fngate /metrics)", ylabel="requests")
    axes[1].set(ylabel="instances")
    axes[2].set(ylabel="per second", xlabel="seconds")
    fig.tight_layout()
    path = results / "server.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
