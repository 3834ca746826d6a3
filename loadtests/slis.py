"""SLI evaluation of a finished Locust run, from the CSV files Locust wrote.

`load_stats(prefix)` reads `<prefix>_stats.csv` (one row per request entry) and
`<prefix>_failures.csv` (failure messages per entry) into `EntryStats`, whose metrics
are the SLIs: p50/p95/p99 latency, throughput, error rate, success rate and the share
of open-loop arrivals that had to be dropped. `evaluate(stats, rules)` checks them
against the thresholds of one scenario (see `slis.yaml`); a rule that matches no entry
fails, so a scenario that silently sent nothing cannot pass.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .checks import is_error

DEFAULT_SLIS = Path(__file__).with_name("slis.yaml")
METRICS = (
    "requests", "failures", "errors", "rps", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms",
    "error_rate", "success_rate", "dropped", "dropped_ratio",
)  # fmt: skip
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
_THRESHOLD = re.compile(r"^\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")
_RULE_KEYS = {"entry", "type", "kind"}
# a rule with `series` bounds a server-side series (server_metrics.py) instead of a Locust entry
SERIES_METRICS = ("max", "min", "mean", "last", "rises", "falls", "total", "settled")
KINDS = ("http", "sse", "grpc")  # what a rule's `kind` may name: the kind of function a soak drives


class SliConfigError(ValueError):
    """The thresholds file is malformed (unknown metric, bad comparison, unknown scenario)."""


@dataclasses.dataclass
class EntryStats:
    type: str
    name: str
    requests: int = 0
    failures: int = 0
    errors: int = 0
    rps: float = 0.0
    avg_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    dropped: int = 0
    avg_size: float = 0.0  # Locust's average content size (LLM entries: output tokens per response)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def success_rate(self) -> float:
        return (self.requests - self.failures) / self.requests if self.requests else 0.0

    @property
    def dropped_ratio(self) -> float:
        issued = self.requests + self.dropped
        return self.dropped / issued if issued else 0.0

    @property
    def label(self) -> str:
        return f"{self.type} {self.name}"

    def metrics(self) -> dict[str, float]:
        return {m: getattr(self, m) for m in METRICS}


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # Locust writes "N/A" for entries without samples
        return 0.0


def load_stats(prefix: str | Path) -> list[EntryStats]:
    """Entries of `<prefix>_stats.csv` (the Aggregated row included), with errors and drops attached."""
    prefix = str(prefix)
    errors: dict[tuple[str, str], int] = defaultdict(int)
    failures_csv = Path(prefix + "_failures.csv")
    if failures_csv.exists():
        with failures_csv.open(newline="") as f:
            for row in csv.DictReader(f):
                if is_error(row["Error"]):
                    errors[(row["Method"], row["Name"])] += int(row["Occurrences"])
    entries: list[EntryStats] = []
    with open(prefix + "_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            kind, name = row["Type"], row["Name"]
            entries.append(
                EntryStats(
                    type=kind,
                    name=name,
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    errors=errors.get((kind, name), 0),
                    rps=_number(row["Requests/s"]),
                    avg_ms=_number(row["Average Response Time"]),
                    p50_ms=_number(row["50%"]),
                    p95_ms=_number(row["95%"]),
                    p99_ms=_number(row["99%"]),
                    max_ms=_number(row["Max Response Time"]),
                    avg_size=_number(row.get("Average Content Size", "")),
                )
            )
    if any(e.name == "Aggregated" for e in entries):
        aggregated = next(e for e in entries if e.name == "Aggregated")
        aggregated.errors = sum(errors.values())
    dropped = {e.name: e.requests for e in entries if e.type == "DROPPED"}
    for e in entries:
        if e.type != "DROPPED":
            e.dropped = dropped.get(e.name, 0)
    return entries


@dataclasses.dataclass(frozen=True)
class Verdict:
    entry: str  # "<type> <name>", or the rule's pattern when nothing matched
    metric: str
    op: str
    limit: float
    value: float | None  # None: no entry matched the rule
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        shown = "no requests" if self.value is None else _fmt(self.value)
        return f"{'PASS' if self.passed else 'FAIL'}  {self.entry}: {self.metric} = {shown} (want {self.op} {_fmt(self.limit)})"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def load_rules(path: str | Path | None, scenario: str) -> list[dict[str, Any]]:
    """The rules of `scenario` from a thresholds file (default: loadtests/slis.yaml), validated."""
    path = Path(path) if path else DEFAULT_SLIS
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise SliConfigError(f"{path}: expected a mapping of scenario -> rules")
    if scenario not in config:
        raise SliConfigError(f"{path}: no thresholds for scenario {scenario!r} (it has {', '.join(sorted(config))})")
    rules = config[scenario] or []
    if not isinstance(rules, list):
        raise SliConfigError(f"{path}: scenario {scenario!r}: expected a list of rules")
    for rule in rules:
        _validate(path, scenario, rule)
    return rules


def for_kinds(rules: Iterable[Mapping[str, Any]], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rules that apply to a run over `kinds`: a rule with a `kind` only when that kind ran."""
    return [dict(r) for r in rules if r.get("kind") is None or r["kind"] in kinds]


def _validate(path: Path, scenario: str, rule: Any) -> None:
    where = f"{path}: scenario {scenario!r}"
    if isinstance(rule, dict) and "series" in rule:
        _validate_series(where, rule)
        return
    if not isinstance(rule, dict) or "entry" not in rule:
        raise SliConfigError(f"{where}: each rule needs an 'entry' (a request name, globs allowed)")
    if rule.get("kind") not in (None, *KINDS):
        raise SliConfigError(f"{where}: kind {rule['kind']!r} is not one of {', '.join(KINDS)}")
    for key, value in rule.items():
        if key in _RULE_KEYS:
            continue
        if key not in METRICS:
            raise SliConfigError(f"{where}: unknown metric {key!r} (known: {', '.join(METRICS)})")
        if not _THRESHOLD.match(str(value)):
            raise SliConfigError(f"{where}: {key}: {value!r} is not a comparison like '< 5000'")


def _validate_series(where: str, rule: dict[str, Any]) -> None:
    from .server_metrics import SERIES

    if rule["series"] not in SERIES:
        raise SliConfigError(f"{where}: series {rule['series']!r} is not one of {', '.join(SERIES)}")
    for key, value in rule.items():
        if key in ("series", "kind"):
            continue
        if key not in SERIES_METRICS:
            raise SliConfigError(f"{where}: series {rule['series']}: unknown metric {key!r} (known: {', '.join(SERIES_METRICS)})")
        if not _THRESHOLD.match(str(value)):
            raise SliConfigError(f"{where}: {key}: {value!r} is not a comparison like '< 5000'")


def entry_rules(rules: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rules if "series" not in r]


def series_rules(rules: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rules if "series" in r]


def evaluate_series(server: Mapping[str, Any], rules: Iterable[Mapping[str, Any]]) -> list[Verdict]:
    """Verdicts of the server-side rules over a run's series (server_metrics.series_report):
    a series the run did not record fails its rules, as an entry with no requests does."""
    verdicts = []
    stats = server.get("stats") or {}
    for rule in rules:
        figures = stats.get(rule["series"])
        for metric, spec in rule.items():
            if metric in ("series", "kind"):
                continue
            match = _THRESHOLD.match(str(spec))
            assert match is not None  # rules were validated when loaded
            op, limit = match.groups()
            value = None if figures is None else figures.get(metric)
            label = f"server {rule['series']}"
            if value is None:
                verdicts.append(Verdict(label, metric, op, float(limit), None, False))
            else:
                verdicts.append(Verdict(label, metric, op, float(limit), float(value), _OPS[op](float(value), float(limit))))
    return verdicts


def _matches(rule: Mapping[str, Any], entry: EntryStats) -> bool:
    if entry.type == "DROPPED" and rule.get("type") != "DROPPED":
        return False
    if "type" in rule and rule["type"] != entry.type:
        return False
    return fnmatch.fnmatchcase(entry.name, str(rule["entry"]))


def evaluate(entries: Iterable[EntryStats], rules: Iterable[Mapping[str, Any]]) -> list[Verdict]:
    entries = list(entries)
    verdicts: list[Verdict] = []
    for rule in entry_rules(rules):
        matched = [e for e in entries if _matches(rule, e) and e.requests + e.dropped > 0]
        for metric, spec in rule.items():
            if metric in _RULE_KEYS:
                continue
            match = _THRESHOLD.match(str(spec))
            assert match is not None  # rules were validated when loaded
            op, limit = match.groups()
            limit_value = float(limit)
            if not matched:
                pattern = f"{rule.get('type', '*')} {rule['entry']}"
                verdicts.append(Verdict(pattern, metric, op, limit_value, None, False))
            for e in matched:
                value = float(getattr(e, metric))
                verdicts.append(Verdict(e.label, metric, op, limit_value, value, _OPS[op](value, limit_value)))
    return verdicts
