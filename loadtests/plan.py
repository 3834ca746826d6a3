"""How a scenario and the user's options become one Locust run: users, rate, workers, knobs.

Nothing here starts a process; `runner` does that with the `Plan` made here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

from .knobs import Knobs
from .scenarios import SMOKE_OVERRIDES, SMOKE_SECONDS, Scenario

RATE_PER_PROCESS = 3000.0  # arrivals/s one Locust process issues comfortably (it tops out near 7,700 here)
USERS_PER_PROCESS = 500  # closed-loop users per Locust process before it spends its core on scheduling


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
    grpc_target: str = ""  # HOST:PORT, or several comma-separated (calls alternate over them)
    sse_url: str = ""  # only when direct: the SSE instance, if not the same as url
    urls: tuple[str, ...] = ()  # several gateways (replicas): HTTP and SSE calls alternate over them
    direct: bool = False
    llm_function_id: str = ""  # the llm scenario's function (model "<id>/<llm_model>")
    llm_model: str = ""  # "" : the knobs' default
    # fngate's /metrics, scraped during the run for the server-side series (server_metrics.py)
    metrics_urls: tuple[str, ...] = ()  # each gateway's admin /metrics
    api_metrics_url: str = ""  # the control plane's /metrics (ready instances; takes the key)


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
    kinds: tuple[str, ...] | None = None  # soak: which functions to drive (default: each one the target names)
    http_rate: float | None = None  # soak: per-kind rates (default: --rate)
    sse_rate: float | None = None
    grpc_rate: float | None = None
    replicas: int = 1  # local stack: fngate serve replicas on one Redis
    gateway_workers: int = 1  # local stack: `fngate serve --workers` of each replica
    sample_interval: float | None = None  # local stack: seconds between resource samples
    stream: str | None = None  # llm: true | false | both
    scrape_interval: float | None = None  # seconds between /metrics scrapes (default 1)


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
    rates: dict[str, float] = dataclasses.field(default_factory=dict)  # soak: arrivals/s per kind of function

    def settings(self) -> dict[str, Any]:
        k = self.knobs
        out: dict[str, Any] = {"duration_s": self.duration, "workers": self.workers}
        if self.rates:
            out.update(rates_per_s=dict(self.rates))
        if self.scenario.model == "open":
            out.update(rate_per_s=self.rate, ramp_up_s=k.ramp_up, scheduler_users=self.users, max_inflight_per_user=k.max_inflight)
        elif self.scenario.model == "ramp":
            out.update(steps=list(k.steps), step_seconds=round(k.step_seconds, 3))
        else:
            out.update(users=self.users)
        out.update(body_size=k.body_size, response_size=k.response_size, delay_s=k.delay)
        if self.scenario.needs in ("sse", "grpc") or "sse" in self.rates:
            out["stream_length"] = k.stream_length
        if k.poll_seconds:
            out["poll_seconds"] = k.poll_seconds
        if self.scenario.needs == "llm":
            out.update(model=f"{k.llm_function_id}/{k.llm_model}", stream=k.llm_stream, max_tokens=k.stream_length)
        if self.scenario.model == "ramp" and k.ramp_fraction != Knobs.ramp_fraction:
            out["ramp_fraction"] = k.ramp_fraction
        if self.scenario.needs in ("http", "pexec") and (not self.rates or "http" in self.rates):
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
    if scenario.kinds:
        return _plan_kinds(scenario, target, opts, knob_values, duration, smoke=smoke)
    if scenario.needs in ("http", "pexec") and not ids and not target.direct:
        raise LoadTestError(f"scenario {scenario.name} needs --function-id (an HTTP function such as the echo sample)")
    if scenario.needs == "sse" and not (target.sse_function_id or target.direct):
        raise LoadTestError("scenario sse needs --sse-function-id (a streaming function such as the SSE sample)")
    if scenario.needs == "grpc" and not (target.grpc_target and (target.grpc_function_id or target.direct)):
        raise LoadTestError("scenario grpc needs --grpc-target HOST:PORT and --grpc-function-id")
    if scenario.needs == "llm" and not (target.llm_function_id or target.direct):
        raise LoadTestError("scenario llm needs --llm-function-id (an LLM function; the model is --model)")
    if opts.stream is not None:
        knob_values["llm_stream"] = opts.stream
    if target.llm_model:
        knob_values["llm_model"] = target.llm_model
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
    knobs = _knobs(target, knob_values)
    return Plan(scenario, users, spawn_rate, duration, max(workers, 1), rate, knobs)


def _knobs(target: Target, knob_values: dict[str, Any]) -> Knobs:
    return Knobs(
        key=target.key,
        function_ids=target.function_ids,
        sse_function_id=target.sse_function_id,
        grpc_function_id=target.grpc_function_id,
        grpc_target=target.grpc_target,
        llm_function_id=target.llm_function_id,
        urls=target.urls,
        sse_urls=(target.sse_url,) if target.direct and target.sse_url else (),
        direct=target.direct,
        **knob_values,
    )


def available_kinds(target: Target) -> tuple[str, ...]:
    """The kinds of function the target names: HTTP with --function-id, SSE, gRPC with a target and id."""
    kinds = []
    if target.function_ids or target.direct:
        kinds.append("http")
    if target.sse_function_id or (target.direct and target.sse_url):
        kinds.append("sse")
    if target.grpc_target and (target.grpc_function_id or target.direct):
        kinds.append("grpc")
    return tuple(kinds)


def _plan_kinds(scenario: Scenario, target: Target, opts: Options, knob_values: dict[str, Any], duration: float,
                *, smoke: bool) -> Plan:  # fmt: skip
    """Open loop over several kinds of function at once: one scheduler user per kind and Locust process."""
    known = available_kinds(target)
    kinds = tuple(opts.kinds) if opts.kinds else known
    unknown = sorted(set(kinds) - set(scenario.kinds))
    if unknown:
        raise LoadTestError(f"unknown --kinds {', '.join(unknown)}: choose from {', '.join(scenario.kinds)}")
    needs = {"http": "--function-id", "sse": "--sse-function-id", "grpc": "--grpc-target HOST:PORT and --grpc-function-id"}
    missing = [k for k in kinds if k not in known]
    if missing or not kinds:
        wanted = ", ".join(needs[k] for k in missing or scenario.kinds)
        raise LoadTestError(f"scenario {scenario.name} needs {wanted} (or --kinds without the functions it lacks)")
    overrides = SMOKE_OVERRIDES.get(scenario.name, {}) if smoke else {}
    rate = float(opts.rate if opts.rate is not None else overrides.get("rate", scenario.rate))
    given = {"http": opts.http_rate, "sse": opts.sse_rate, "grpc": opts.grpc_rate}
    rates = {k: rate if (own := given[k]) is None else float(own) for k in kinds}
    if "http" in rates and scenario.per_function:
        rates["http"] *= max(len(target.function_ids), 1)
    if min(rates.values()) <= 0:
        raise LoadTestError("--rate (and each --http-rate, --sse-rate, --grpc-rate) must be positive")
    total = sum(rates.values())
    workers = opts.workers or min(os.cpu_count() or 1, math.ceil(total / RATE_PER_PROCESS))
    workers = max(workers, 1)
    knob_values.update(
        kinds=kinds,
        users_per_kind=workers,
        rate_per_user=rates.get("http", 0.0) / workers,
        sse_rate_per_user=rates.get("sse", 0.0) / workers,
        grpc_rate_per_user=rates.get("grpc", 0.0) / workers,
    )
    users = workers * len(kinds)
    return Plan(scenario, users, float(users), duration, workers, total, _knobs(target, knob_values), rates)
