"""A reader of the Prometheus text exposition format (version 0.0.4), for what fngate's own
gateway renders on its admin port: `name{label="value",...} number` lines, `#` comments.

Samples that differ only in the labels a caller drops (the `worker` label that a
`--workers N` gateway adds) are summed, so one reading covers every worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs


class ExpositionError(ValueError):
    """A line that is not a sample of the text format."""


def _parse_labels(text: str, line: str) -> tuple[Labels, str]:
    """`a="x",b="y"} rest` -> ((("a","x"),("b","y")), " rest")."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " ,":
            i += 1
        if i < len(text) and text[i] == "}":
            return tuple(sorted(pairs)), text[i + 1 :]
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= len(text) or text[eq + 1] != '"':
            raise ExpositionError(f"bad labels in {line!r}")
        name = text[i:eq].strip()
        j, value = eq + 2, []
        while j < len(text) and text[j] != '"':
            if text[j] == "\\" and j + 1 < len(text):
                j += 1
                value.append({"n": "\n"}.get(text[j], text[j]))
            else:
                value.append(text[j])
            j += 1
        if j >= len(text):
            raise ExpositionError(f"unterminated label value in {line!r}")
        pairs.append((name, "".join(value)))
        i = j + 1


def parse_line(line: str) -> tuple[str, Labels, float]:
    brace, space = line.find("{"), line.find(" ")
    if brace >= 0 and (space < 0 or brace < space):
        name = line[:brace]
        labels, rest = _parse_labels(line[brace + 1 :], line)
    else:
        if space < 0:
            raise ExpositionError(f"no value in {line!r}")
        name, labels, rest = line[:space], (), line[space:]
    parts = rest.split()
    if not name or not parts:
        raise ExpositionError(f"no value in {line!r}")
    try:
        value = float(parts[0])  # "+Inf", "NaN" and exponents are what float() reads
    except ValueError:
        raise ExpositionError(f"bad value in {line!r}") from None
    return name, labels, value


@dataclass(slots=True)
class Exposition:
    """Samples by metric name, then by label set."""

    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, drop: Iterable[str] = ("worker",)) -> Exposition:
        dropped = frozenset(drop)
        out: dict[str, dict[Labels, float]] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, labels, value = parse_line(line)
            if dropped:
                labels = tuple(p for p in labels if p[0] not in dropped)
            family = out.setdefault(name, {})
            family[labels] = family.get(labels, 0.0) + value
        return cls(out)

    def series(self, name: str) -> Mapping[Labels, float]:
        return self.samples.get(name, {})

    # the metric name is positional-only: `name` is also a label (NVCF's state metrics have one)
    def total(self, metric: str, /, **match: str) -> float:
        """The sum of `metric` over the samples whose labels include `match`."""
        return sum(v for labels, v in self.series(metric).items() if _matches(labels, match))

    def by(self, metric: str, label: str, /, **match: str) -> dict[str, float]:
        """The sum of `metric` per value of `label` (samples without it are left out)."""
        out: dict[str, float] = {}
        for labels, v in self.series(metric).items():
            if _matches(labels, match):
                key = dict(labels).get(label)
                if key is not None:
                    out[key] = out.get(key, 0.0) + v
        return out

    def buckets(self, metric: str, /, **match: str) -> list[tuple[float, float]]:
        """A histogram's cumulative buckets `metric_bucket{le=...}` as sorted (bound, count)."""
        return sorted((_bound(le), n) for le, n in self.by(metric + "_bucket", "le", **match).items())


def _bound(le: str) -> float:
    return math.inf if le in ("+Inf", "Inf", "inf") else float(le)


def _matches(labels: Labels, match: Mapping[str, str]) -> bool:
    if not match:
        return True
    have = dict(labels)
    return all(have.get(k) == v for k, v in match.items())


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram (bound, count), interpolated linearly inside
    its bucket as Prometheus' histogram_quantile does; None without observations. An answer in
    the +Inf bucket is the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower
