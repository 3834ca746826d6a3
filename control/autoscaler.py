"""Autoscaler: per function version and GPU spec, a replica count within
[minInstances, maxInstances], written to the `scale` kind for the reconciler.

Inputs come from the gateways' LoadReports (the LoadBoard): utilisation is busy
slot-seconds over the window divided by (ready instances x maxRequestConcurrency x
window), floored by what is in flight right now; queue depth counts as saturation.
Policy (NVCF defaults, overridable per spec by autoscalingConfiguration):
  above 70 %  -> ceil(n x 1.2)    below 30 % -> floor(n x 0.8), never below 1
  0 instances and a request waiting -> scale from zero (at least 1)
  minInstances 0, no request for idle_timeout and nothing in flight -> 0
Scaling down only lowers the target: the reconciler drains the chosen instances
and stops them once no request is in flight on them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fngate.control import records as R
from fngate.control.loadboard import LoadBoard
from fngate.control.records import Deployment, FunctionVersion, GpuSpec, InstanceRecord, ScaleDecision
from fngate.control.states import State
from fngate.control.store.base import Conflict, StateStore
from fngate.control.tasks import cancel_until_done
from fngate.proxy.routing.snapshot import VersionLoad

log = logging.getLogger("fngate.autoscaler")

SCALING_STATES = frozenset({State.DEPLOYING, State.ACTIVE, State.DEGRADING, State.DEGRADED})


@dataclass(frozen=True)
class AutoscalerConfig:
    interval: float = 2.0  # seconds between passes
    window: float = 60.0  # utilisation window
    up_threshold: float = 70.0
    up_factor: float = 1.2
    down_threshold: float = 30.0
    down_factor: float = 0.8
    down_stabilization: float = 30.0  # no scale-down sooner than this after any change
    idle_timeout: float = 1800.0  # scale to zero after this long without requests (minInstances 0)

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> AutoscalerConfig:
        names = {f: f for f in cls.__dataclass_fields__}
        names.update(
            {
                "upThreshold": "up_threshold",
                "upFactor": "up_factor",
                "downThreshold": "down_threshold",
                "downFactor": "down_factor",
                "idleTimeout": "idle_timeout",
                "downStabilization": "down_stabilization",
            }
        )
        values: dict[str, float] = {}
        for k, v in (cfg or {}).items():
            norm = names.get(k) or names.get(k.replace("-", "_"))
            if norm is None:
                raise ValueError(f"unknown autoscaler setting {k!r}; known: {', '.join(sorted(cls.__dataclass_fields__))}")
            values[norm] = float(v)
        return cls(**values)


@dataclass(frozen=True)
class Policy:
    up_threshold: float
    up_factor: float
    down_threshold: float
    down_factor: float

    @classmethod
    def of(cls, cfg: AutoscalerConfig, spec: GpuSpec) -> Policy:
        custom = spec.autoscaling
        up, down = custom.get("scaleUpDetails") or {}, custom.get("scaleDownDetails") or {}
        return cls(
            float(up.get("threshold", cfg.up_threshold)),
            float(up.get("factor", cfg.up_factor)),
            float(down.get("threshold", cfg.down_threshold)),
            float(down.get("factor", cfg.down_factor)),
        )


def decide(
    current: int,
    ready: int,
    utilisation: float,
    queue: int,
    cold_waiting: int,
    idle_for: float,
    lo: int,
    hi: int,
    policy: Policy,
    idle_timeout: float,
) -> tuple[int, str]:
    """The pure decision: (replicas, reason)."""
    if ready == 0 and current == 0:
        if queue > 0 or cold_waiting > 0:
            return min(max(1, lo), hi), "scale from zero: a request is waiting"
        return max(lo, 0), "idle at zero"
    if ready == 0:
        return current, "waiting for instances to become ready"
    if utilisation > policy.up_threshold or queue > 0:
        if ready < current:
            return current, "waiting for instances already starting"
        want = max(math.ceil(current * policy.up_factor), current + 1)
        return min(want, hi), f"utilisation {utilisation:.0f}% > {policy.up_threshold:.0f}%" + (f", {queue} queued" if queue else "")
    if utilisation < policy.down_threshold and ready >= current:
        if current > 1:
            return max(math.floor(current * policy.down_factor), 1, lo), f"utilisation {utilisation:.0f}% < {policy.down_threshold:.0f}%"
        if lo == 0 and idle_for >= idle_timeout:
            return 0, f"scale to zero: no request for {idle_for:.0f}s"
    return min(max(current, lo), hi), "steady"


class Autoscaler:
    def __init__(
        self, store: StateStore, loadboard: LoadBoard, config: AutoscalerConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.loadboard = loadboard
        self.config = config or AutoscalerConfig()
        self.clock = clock
        self._samples: dict[str, deque[tuple[float, float]]] = {}  # vid -> (t, busy seconds)
        self._changed_at: dict[str, float] = {}  # scale key -> last change
        self._started = clock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="autoscaler")

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_until_done([self._task])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval)
            try:
                await self.tick()
            except Exception:
                log.exception("autoscaler pass")

    def utilisation(self, vid: str, slots: int, now: float) -> float:
        load = self.loadboard.version_load(vid)
        samples = self._samples.setdefault(vid, deque())
        if samples and load.busy_seconds < samples[-1][1]:
            samples.clear()  # a gateway went away and its counter with it: start over
        samples.append((now, load.busy_seconds))
        while len(samples) > 2 and now - samples[1][0] >= self.config.window:
            samples.popleft()
        instant = 100.0 * load.in_flight / slots if slots else 0.0
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        windowed = 100.0 * (b1 - b0) / (slots * (t1 - t0)) if slots and t1 > t0 else 0.0
        return max(windowed, instant)

    async def tick(self) -> None:
        now = self.clock()
        functions = {r.key: FunctionVersion.parse(r.value) for r in await self.store.list(R.FUNCTIONS)}
        for rec in await self.store.list(R.DEPLOYMENTS):
            fn = functions.get(rec.key)
            dep = Deployment.parse(rec.value)
            if fn is None or fn.status not in SCALING_STATES or dep.graceful:
                continue
            vid = rec.key.split("/", 1)[1]
            instances = [InstanceRecord.parse(r.value) for r in await self.store.list(R.INSTANCES, vid + "/")]
            load = self.loadboard.version_load(vid)
            for spec in dep.specs:
                await self._scale_spec(vid, spec, instances, load, now)

    async def _scale_spec(self, vid: str, spec: GpuSpec, instances: list[InstanceRecord], load: VersionLoad, now: float) -> None:
        gsid = spec.id
        key = R.scale_key(vid, gsid)
        lo, hi = spec.min_instances, spec.max_instances
        rec = await self.store.get(R.SCALE, key)
        current = spec.clamp(ScaleDecision.parse(rec.value).replicas if rec else lo)
        ready = sum(1 for i in instances if i.gpu_spec_id == gsid and i.active and not i.draining)
        slots = ready * spec.max_request_concurrency
        util = self.utilisation(vid, slots, now)
        last = load.last_request_at or self._started
        replicas, reason = decide(
            current,
            ready,
            util,
            load.queue_depth + (load.cold_waiting if ready == 0 else 0),
            load.cold_waiting,
            now - last if load.in_flight == 0 else 0.0,
            lo,
            hi,
            Policy.of(self.config, spec),
            self.config.idle_timeout,
        )
        if replicas < current and now - self._changed_at.get(key, self._started) < self.config.down_stabilization:
            return
        if replicas == current and rec is not None:
            return
        if replicas != current:
            log.info("version %s spec %s: %d -> %d instances (%s)", vid, gsid, current, replicas, reason)
            self._changed_at[key] = now
        try:
            decision = ScaleDecision(replicas, reason, R.iso_at(now))
            await self.store.put(R.SCALE, key, decision.to_doc(), expect=rec.revision if rec else 0)
        except Conflict:
            pass  # written meanwhile (an undeploy, another pass): decide again next time
