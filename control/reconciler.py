"""Reconciler: drives the backends towards the deployments in the store, and sets
function states from what the backends report.

Level-triggered: every pass over a version reads the desired state (function,
deployment, the autoscaler's `scale` decision) and the observed instances, and
makes one idempotent call per GPU spec. Passes are triggered by store changes,
by backend events and by a periodic resync, so a missed trigger only costs
latency. Passes go through a keyed work queue served by a few workers: passes for
one version never overlap, passes for different versions run side by side, and a
pass still running after `slow_pass` seconds (a backend call that hangs) goes on in
its own task while its worker takes the next version, so one slow or failing
deployment never delays another. Draining (graceful undeploy, scale-down) runs in
its own task per version.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypedDict

from fngate.backends.base import Backend, BackendError, InstanceEvent, InstanceSpec
from fngate.backends.base import InstanceEventKind as K
from fngate.control import records as R
from fngate.control.counters import ControlCounters
from fngate.control.instance_spec import instance_spec
from fngate.control.loadboard import LoadBoard
from fngate.control.records import Deployment, FunctionVersion, GpuSpec, InstanceRecord, ScaleDecision, now_iso, parse_iso
from fngate.control.states import DEPLOYED, Event, InvalidTransition, State, fact_event, next_state
from fngate.control.store.base import Compacted, Conflict, Delete, Op, Put, Record, StateStore
from fngate.control.tasks import cancel_until_done
from fngate.control.workqueue import KeyedQueue

log = logging.getLogger("fngate.reconciler")

RETRY_FIRST = 0.5  # seconds before a failed pass runs again (doubling, up to the resync interval)
DRAIN_TIMEOUT = 3600.0  # an hour, the longest poll window NVCF allows; reconciler.drainTimeout


class HealthItem(TypedDict):
    """One entry of a deployment's healthInfo (why it failed)."""

    icmsRequestId: str
    gpu: str
    backend: str
    instanceType: str
    error: str


class Reconciler:
    def __init__(
        self,
        store: StateStore,
        backends: Mapping[str, Backend],
        loadboard: LoadBoard | None = None,
        *,
        resync_interval: float = 5.0,
        drain_timeout: float = DRAIN_TIMEOUT,
        drain_settle: float = 1.0,
        drain_poll: float = 0.2,
        error_ttl: float = 7 * 86400,  # NVCF cleans up errored deployments after 7 days
        workers: int = 8,
        slow_pass: float = 1.0,
        counters: ControlCounters | None = None,
        inherit_grace: float = 0.0,
        sole: bool = False,
    ) -> None:
        if not backends:
            raise ValueError("the reconciler needs at least one backend")
        self.store = store
        self.backends = dict(backends)
        self.default_backend = next(iter(self.backends))
        self.loadboard = loadboard
        self.resync_interval = resync_interval
        self.drain_timeout = drain_timeout  # 0: a drain waits as long as requests run
        self.counters = counters or ControlCounters()  # drain_timeouts: drains that hit drain_timeout
        self.drain_settle = drain_settle  # gateways report load every ~0.5 s: wait for a fresh report
        self.drain_poll = drain_poll
        self.error_ttl = error_ttl
        self.workers = max(1, workers)
        self.slow_pass = slow_pass
        self._observed: dict[str, dict[str, tuple[str, InstanceEvent]]] = {}  # vid -> iid -> (backend, event)
        self._failures: dict[str, list[HealthItem]] = {}  # vid -> healthInfo items not yet acted on
        self._function_of: dict[str, str] = {}  # vid -> fid
        self._specs: dict[tuple[str, str], InstanceSpec] = {}  # (vid, gpu spec id) -> what the backend runs
        self._draining_ids: set[str] = set()
        self._drains: dict[str, asyncio.Task[None]] = {}  # vid -> graceful undeploy drain
        self._scale_downs: dict[tuple[str, str], asyncio.Task[None]] = {}  # (vid, gpu spec id) -> scale-down drain
        # instance docs a previous leader left: iid -> (vid, draining); see start()
        self.inherit_grace = inherit_grace
        # the only replica on its store (SQLite): instances of a per-replica backend (local) a
        # previous run left died with it (their backend stops what survived): drop their docs
        self.sole = sole
        self._inherited: dict[str, tuple[str, bool]] = {}
        # (vid, gpu spec id, backend) -> inherited instances a shared backend (Kubernetes) is
        # expected to replay: no apply() for that spec until it has, or inherit_grace passed,
        # lest a count decided without them (a drain under way) removes a busy one
        self._awaiting_replay: dict[tuple[str, str, str], set[str]] = {}
        self._resumed: set[str] = set()  # inherited instances that were draining, whose drain goes on here
        self._letting_go: set[asyncio.Task[None]] = set()  # drains of instances another replica runs
        self._queue: KeyedQueue[str] = KeyedQueue()
        self._passes: set[asyncio.Task[None]] = set()  # running passes, detached ones included
        self._failed_passes: dict[str, int] = {}  # vid -> passes that failed in a row
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        # Instance docs from a previous run describe processes that may be gone; the
        # backends replay what really runs (a READY per live instance) on subscribe.
        stale = await self.store.list(R.INSTANCES)
        if stale and self.inherit_grace > 0:
            await self._inherit(stale)
        elif stale:
            await self.store.commit([Delete(R.INSTANCES, r.key) for r in stale])
        since = await self.store.revision()
        await self._mark_stored()
        for name, backend in self.backends.items():
            self._tasks.append(asyncio.create_task(self._pump(name, backend), name=f"reconciler-events-{name}"))
        self._tasks.append(asyncio.create_task(self._watch(since), name="reconciler-watch"))
        self._tasks.append(asyncio.create_task(self._resync(), name="reconciler-resync"))
        for n in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"reconciler-worker-{n}"))
        if self._inherited:
            self._tasks.append(asyncio.create_task(self._let_go_foreign(), name="reconciler-inherited"))

    async def aclose(self) -> None:
        # The loops also check _closing: a cancel that lands inside a client library
        # (redis-py turns some into ordinary errors) must not leave a loop running. Nor may
        # a pass that survived one change a backend: the drains are cancelled, so it would
        # count their instances in and stop one, busy, that the next leader adopts.
        self._closing = True
        await cancel_until_done(
            self._tasks + list(self._drains.values()) + list(self._scale_downs.values()) + list(self._passes) + list(self._letting_go)
        )
        self._tasks.clear()

    @property
    def drain_timeouts(self) -> int:
        return self.counters.drain_timeouts

    def observed(self, version_id: str) -> list[InstanceEvent]:
        return [e for _, e in self._observed.get(version_id, {}).values()]

    def running(self) -> list[tuple[str, InstanceEvent]]:
        """(backend name, last fact) of every instance the backends run, as last seen."""
        return [entry for seen in self._observed.values() for entry in seen.values()]

    # -- what a previous leader left ---------------------------------------------------------
    async def _inherit(self, stale: list[Record]) -> None:
        """With several replicas (inherit_grace > 0), the instance docs in the store at start
        are a previous leader's: instances this replica's backends run too (a shared backend,
        Kubernetes) are replayed as READY and adopted, a drain in progress on one going on
        here; the others run on another replica's local backend, or died with it. Those are
        marked draining at once (no new requests), kept while requests run on them, then
        their docs are deleted, which tells their replica to stop them (control/handover.py),
        unless this replica's own backend still runs them (it leads again before its hand-over
        ended): those are replayed and adopted like a shared backend's."""
        ops: list[Op] = []
        for rec in stale:
            inst = InstanceRecord.parse(rec.value)
            backend = self.backends.get(inst.backend)
            own = backend is not None and bool(getattr(backend, "per_replica", False))
            if own and self.sole:  # a previous run's local instance: gone, its doc with it
                ops.append(Delete(R.INSTANCES, rec.key))
                continue
            self._inherited[inst.instance_id] = (inst.version_id, inst.draining)
            if backend is not None and (not own or _still_runs(backend, inst)):
                self._awaiting_replay.setdefault((inst.version_id, inst.gpu_spec_id, inst.backend), set()).add(inst.instance_id)
            if not inst.draining:
                # no expect: only the leader writes instance docs, and a conflict must not stop its start
                ops.append(Put(R.INSTANCES, rec.key, replace(inst, draining=True).to_doc()))
        if ops:
            await self.store.commit(ops)

    async def _let_go_foreign(self) -> None:
        """After inherit_grace, the inherited instances no backend of this replica replayed
        are another replica's: drain them (their docs stay, draining, so gateways report
        what runs on them), then delete their docs."""
        await asyncio.sleep(self.inherit_grace)
        ours = {iid for seen in self._observed.values() for iid in seen}
        by_version: dict[str, list[str]] = {}
        for iid, (vid, _) in self._inherited.items():
            if iid not in ours:
                by_version.setdefault(vid, []).append(iid)
        self._inherited.clear()
        for vid, _, _ in self._awaiting_replay:
            self._mark(vid)  # not replayed in time: apply() the count wanted now
        self._awaiting_replay.clear()
        for vid, ids in by_version.items():
            task = asyncio.create_task(self._let_go(vid, ids), name=f"reconciler-let-go-{vid}")
            self._letting_go.add(task)
            task.add_done_callback(self._letting_go.discard)

    async def _let_go(self, vid: str, instance_ids: list[str]) -> None:
        try:
            await self._wait_idle(vid, instance_ids)
            ops: list[Op] = []
            for iid in instance_ids:
                rec = await self.store.get(R.INSTANCES, R.instance_key(vid, iid))
                if rec is not None and iid not in self._observed.get(vid, {}):
                    ops.append(Delete(R.INSTANCES, rec.key))
            if ops:
                await self.store.commit(ops)
            log.info("version %s: let go of %d instance(s) a previous leader ran", vid, len(ops))
        except Exception:
            log.exception("letting go of a previous leader's instances of %s", vid)

    # -- triggers -----------------------------------------------------------------------------
    def _mark(self, version_id: str) -> None:
        self._queue.add(version_id)

    async def _watch(self, since: int) -> None:
        while not self._closing:
            try:
                async for ch in self.store.watch(since):
                    since = ch.revision
                    if ch.kind in (R.FUNCTIONS, R.DEPLOYMENTS):
                        fid, vid = ch.key.split("/", 1)
                        self._function_of[vid] = fid
                        self._mark(vid)
                    elif ch.kind == R.SCALE:
                        self._mark(ch.key.split("/", 1)[0])
                    elif ch.kind == R.SECRETS:  # new values reach running instances in place
                        self._mark(ch.key.split("/", 1)[1])
                    elif ch.kind == R.TELEMETRY_SECRETS:  # rare: every version that may name the telemetry
                        for vid in list(self._function_of):
                            self._mark(vid)
            except Compacted:
                log.warning("store change feed compacted (a store restart?); reading everything again")
            except Exception as exc:  # the store went away for a moment
                log.warning("store watch failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
            # changes were missed: read the whole state, as at start, then follow from here
            try:
                since = await self.store.revision()
                await self._mark_stored()
            except Exception:
                continue
            for vid in list(self._function_of):
                self._mark(vid)

    async def _mark_stored(self) -> None:
        """Mark every stored function version and deployment (new ones included)."""
        for rec in await self.store.list(R.FUNCTIONS):
            fid, vid = rec.key.split("/", 1)
            self._function_of[vid] = fid
        for rec in await self.store.list(R.DEPLOYMENTS):
            self._mark(rec.key.split("/", 1)[1])

    async def _resync(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.resync_interval)
            try:
                for rec in await self.store.list(R.DEPLOYMENTS):
                    self._mark(rec.key.split("/", 1)[1])
            except Exception as exc:
                log.warning("resync could not list deployments: %s", exc)
            for vid in list(self._observed):
                self._mark(vid)

    async def _pump(self, backend_name: str, backend: Backend) -> None:
        async for ev in backend.events():
            try:
                await self._on_event(backend_name, ev)
            except Exception:  # one bad write must not stop the facts flowing
                log.exception("handling %s", ev)

    async def _worker(self) -> None:
        while not self._closing:
            vid = await self._queue.take()
            task = asyncio.create_task(self._pass(vid), name=f"reconcile-{vid}")
            self._passes.add(task)
            task.add_done_callback(self._passes.discard)
            # a pass that outlives slow_pass (a hung backend call) goes on alone
            await asyncio.wait({task}, timeout=self.slow_pass)

    async def _pass(self, vid: str) -> None:
        try:
            await self._reconcile(vid)
            self._failed_passes.pop(vid, None)
        except Conflict:
            self._mark(vid)  # someone wrote in between: read again once this pass is done
            await asyncio.sleep(0.01)
        except Exception:
            # a store that just came back fails a call on each stale connection, say: try
            # again soon (backing off), not only at the next resync
            failures = self._failed_passes[vid] = self._failed_passes.get(vid, 0) + 1
            delay = min(RETRY_FIRST * 2 ** (failures - 1), self.resync_interval)
            log.exception("reconciling version %s (failed %d time(s); again in %.1fs)", vid, failures, delay)
            if not self._closing:
                asyncio.get_running_loop().call_later(delay, self._mark, vid)
        finally:
            self._queue.done(vid)

    # -- facts -> instance docs --------------------------------------------------------------------
    async def _on_event(self, backend_name: str, ev: InstanceEvent) -> None:
        vid = ev.version_id
        seen = self._observed.setdefault(vid, {})
        key = R.instance_key(vid, ev.instance_id)
        self._awaiting_replay.get((vid, ev.gpu_spec_id, backend_name), set()).discard(ev.instance_id)
        if ev.kind in (K.STARTING, K.READY):
            inherited = self._inherited.pop(ev.instance_id, None)
            if inherited is not None and inherited[1]:  # a previous leader was draining it: go on
                self._draining_ids.add(ev.instance_id)
                self._resumed.add(ev.instance_id)
            seen[ev.instance_id] = (backend_name, ev)
            await self.store.put(R.INSTANCES, key, await self._instance_doc(backend_name, ev))
        else:
            seen.pop(ev.instance_id, None)
            self._draining_ids.discard(ev.instance_id)
            self._resumed.discard(ev.instance_id)
            if await self.store.get(R.INSTANCES, key) is not None:
                await self.store.delete(R.INSTANCES, key)
            if ev.kind is K.FAILED:
                spec = self._specs.get((vid, ev.gpu_spec_id))
                self._failures.setdefault(vid, []).append(self._health_item(spec, backend_name, ev.detail, ev.instance_id))
        self._mark(vid)

    async def _instance_doc(self, backend_name: str, ev: InstanceEvent) -> dict[str, Any]:
        spec = self._specs.get((ev.version_id, ev.gpu_spec_id))
        fid = await self._fid(ev.version_id) or ""
        existing = await self.store.get(R.INSTANCES, R.instance_key(ev.version_id, ev.instance_id))
        created = InstanceRecord.parse(existing.value).created_at if existing else ""
        now = now_iso()
        return InstanceRecord(
            instance_id=ev.instance_id,
            function_id=fid,
            version_id=ev.version_id,
            gpu_spec_id=ev.gpu_spec_id,
            status="ACTIVE" if ev.kind is K.READY else "STARTING",
            host=ev.host,
            port=ev.port,
            backend=backend_name,
            instance_type=spec.instance_type if spec else "",
            gpu=spec.gpu if spec else "",
            nca_id=spec.nca_id if spec else "fngate",
            draining=ev.instance_id in self._draining_ids,
            created_at=created or now,
            updated_at=now,
        ).to_doc()

    @staticmethod
    def _health_item(where: InstanceSpec | GpuSpec | None, backend: str, error: str, request_id: str = "") -> HealthItem:
        return HealthItem(
            icmsRequestId=request_id or str(uuid.uuid4()),
            gpu=where.gpu if where else "",
            backend=backend,
            instanceType=where.instance_type if where else "",
            error=error,
        )

    async def _fid(self, vid: str) -> str | None:
        if vid in self._function_of:
            return self._function_of[vid]
        for rec in await self.store.list(R.FUNCTIONS):
            if rec.key.endswith("/" + vid):
                self._function_of[vid] = rec.key.split("/", 1)[0]
                return self._function_of[vid]
        return None

    # -- one pass over one version ----------------------------------------------------------------
    async def _reconcile(self, vid: str) -> None:
        fid = await self._fid(vid)
        key = R.version_key(fid, vid) if fid else ""
        fn_rec = await self.store.get(R.FUNCTIONS, key) if fid else None
        dep_rec = await self.store.get(R.DEPLOYMENTS, key) if fid else None
        fn = FunctionVersion.parse(fn_rec.value) if fn_rec else None
        dep = Deployment.parse(dep_rec.value) if dep_rec else None
        status = fn.status if fn else State.DELETED
        if fn_rec is None or fn is None or dep_rec is None or dep is None or status not in DEPLOYED:
            self._failures.pop(vid, None)
            if status is State.INACTIVE and dep is not None and dep.graceful:
                if vid not in self._drains and not self._scaling_down(vid):
                    self._drains[vid] = asyncio.create_task(self._drain_undeploy(vid, key))
            elif vid not in self._drains and not self._scaling_down(vid):
                await self._teardown(vid, graceful=False)
            return
        assert fn_rec is not None  # the status came from it
        if status is State.ERROR:
            self._failures.pop(vid, None)
            await self._teardown(vid, graceful=False, forget_scale=False)
            await self._expire_error(key, fn_rec, dep_rec, dep)
            return
        secrets_rec = await self.store.get(R.SECRETS, key)
        secrets = (secrets_rec.value.get("secrets") if secrets_rec else None) or {}
        account_secrets = await self._telemetry_secrets(fn)
        failures = self._failures.pop(vid, [])
        if failures and status is State.DEPLOYING:
            await self._fail(key, fn_rec, dep_rec, failures)  # before apply() would start replacements
            return
        placed, refused = self._place(fn, dep.specs, secrets, account_secrets)
        replaying = False
        if refused:  # whatever the state: a stored deployment that can no longer run (e.g. after a restart)
            await self._fail(key, fn_rec, dep_rec, refused, Event.REFUSED)
            return
        for gs, name, backend, spec in placed:
            self._specs[(vid, spec.gpu_spec_id)] = spec
            if vid in self._drains:
                continue  # an undeploy is draining
            if self._awaiting_replay.get((vid, spec.gpu_spec_id, name)):
                replaying = True  # what a previous run left is not replayed yet (the event marks the version again)
                continue
            scale = await self.store.get(R.SCALE, R.scale_key(vid, spec.gpu_spec_id))
            replicas = gs.clamp(ScaleDecision.parse(scale.value).replicas if scale else gs.min_instances)
            here = [e for b, e in self._observed.get(vid, {}).values() if e.gpu_spec_id == spec.gpu_spec_id and b == name]
            # drained instances are out of routing and on their way out: they do not count
            mine = [e for e in here if e.instance_id not in self._draining_ids]
            drain_key = (vid, spec.gpu_spec_id)  # each GPU spec scales and drains on its own
            resumed = [e.instance_id for e in here if e.instance_id in self._resumed]
            if resumed and drain_key not in self._scale_downs:  # a previous leader's drain goes on
                self._resumed.difference_update(resumed)
                log.info("version %s: resuming the drain of %d instance(s) a previous leader began", vid, len(resumed))
                self._scale_downs[drain_key] = asyncio.create_task(self._drain_chosen(drain_key, backend, [], resumed))
            if self._closing:
                return  # see aclose: a stopping reconciler changes nothing on the backends
            try:
                if drain_key in self._scale_downs:
                    # a scale-down is draining (it may take as long as a stream runs): the
                    # version still scales up meanwhile, the draining instances counted in
                    if replicas > len(mine):
                        await backend.apply(spec, replicas + len(here) - len(mine))
                elif replicas < len(mine):
                    self._scale_downs[drain_key] = asyncio.create_task(self._drain_scale_down(drain_key, backend, replicas, mine))
                else:
                    await backend.apply(spec, replicas)
            except BackendError as exc:
                failures.append(self._health_item(gs, name, str(exc)))
        if failures:
            if status is State.DEPLOYING:
                await self._fail(key, fn_rec, dep_rec, failures)
                return
            for f in failures:
                log.warning("version %s: %s", vid, f["error"])
        if not replaying:  # else the state would count instances that are only not replayed yet as lost
            await self._set_state(key, fn_rec, self._fact(vid, dep.specs))

    async def _telemetry_secrets(self, fn: FunctionVersion) -> dict[str, Any]:
        """{name: value} of the secrets of the telemetries the function names, those of its
        own account only (NVCF's account-level secrets, /var/secrets/accounts-secrets.json)."""
        out: dict[str, Any] = {}
        for telemetry_id in fn.telemetry_ids:
            rec = await self.store.get(R.TELEMETRY_SECRETS, telemetry_id)
            if rec is not None and rec.value.get("ncaId") == fn.nca_id and rec.value.get("name"):
                out[str(rec.value["name"])] = rec.value.get("value")
        return out

    def _place(
        self, fn: FunctionVersion, specs: tuple[GpuSpec, ...], secrets: Mapping[str, Any], account_secrets: Mapping[str, Any]
    ) -> tuple[list[tuple[GpuSpec, str, Backend, InstanceSpec]], list[HealthItem]]:
        """Each GPU spec with its backend and InstanceSpec, and why a backend can never run
        one (it is not configured, or refuses the spec: an image its catalog lacks)."""
        placed: list[tuple[GpuSpec, str, Backend, InstanceSpec]] = []
        refused: list[HealthItem] = []
        for gs in specs:
            name = gs.backend or self.default_backend
            backend = self.backends.get(name)
            if backend is None:
                refused.append(self._health_item(gs, name, f"no backend named {name!r}; configured: {', '.join(self.backends)}"))
                continue
            spec = instance_spec(fn, gs, secrets, account_secrets)
            check = getattr(backend, "refusal", None)  # an optional Backend extension (local, static)
            reason = check(spec) if check is not None else None
            if reason is not None:
                refused.append(self._health_item(gs, name, reason))
                continue
            placed.append((gs, name, backend, spec))
        return placed, refused

    def _fact(self, vid: str, specs: tuple[GpuSpec, ...]) -> Event:
        ready_by_spec: dict[str, int] = {}
        for _, e in self._observed.get(vid, {}).values():
            if e.kind is K.READY and e.instance_id not in self._draining_ids:
                ready_by_spec[e.gpu_spec_id] = ready_by_spec.get(e.gpu_spec_id, 0) + 1
        ready = sum(ready_by_spec.values())
        minimum = sum(gs.min_instances for gs in specs)
        if all(ready_by_spec.get(gs.id, 0) >= gs.min_instances for gs in specs):
            return Event.MIN_READY
        return fact_event(ready, minimum)

    async def _set_state(self, key: str, fn_rec: Record, event: Event) -> None:
        status = FunctionVersion.parse(fn_rec.value).status
        try:
            new = next_state(status, event)
        except InvalidTransition:
            return
        if new is not status:
            log.info("function %s: %s -> %s (%s)", key, status.value, new.value, event.value)
            await self.store.put(R.FUNCTIONS, key, {**fn_rec.value, "status": new.value}, expect=fn_rec.revision)

    async def _fail(self, key: str, fn_rec: Record, dep_rec: Record, items: list[HealthItem], event: Event = Event.FAILED) -> None:
        log.warning("function %s: ERROR: %s", key, "; ".join(i["error"] for i in items))
        new = next_state(FunctionVersion.parse(fn_rec.value).status, event)
        dep = {**dep_rec.value, "healthInfo": items, "lastUpdatedAt": now_iso()}
        try:
            await self.store.commit(
                [
                    Put(R.FUNCTIONS, key, {**fn_rec.value, "status": new.value}, expect=fn_rec.revision),
                    Put(R.DEPLOYMENTS, key, dep, expect=dep_rec.revision),
                ]
            )
        except Conflict:
            self._failures[key.split("/", 1)[1]] = items + self._failures.get(key.split("/", 1)[1], [])
            raise  # read again and retry
        await self._teardown(key.split("/", 1)[1], graceful=False, forget_scale=False)

    async def _expire_error(self, key: str, fn_rec: Record, dep_rec: Record, dep: Deployment) -> None:
        """An errored deployment older than error_ttl is cleaned up: INACTIVE, no deployment."""
        try:
            at = parse_iso(dep.updated_at).timestamp()
        except ValueError:
            return
        if time.time() - at < self.error_ttl:
            return
        new = next_state(FunctionVersion.parse(fn_rec.value).status, Event.ERROR_EXPIRED)
        log.info("function %s: errored deployment expired -> %s", key, new.value)
        ops: list[Op] = [
            Put(R.FUNCTIONS, key, {**fn_rec.value, "status": new.value}, expect=fn_rec.revision),
            Delete(R.DEPLOYMENTS, key, expect=dep_rec.revision),
        ]
        ops += [Delete(R.SCALE, r.key) for r in await self.store.list(R.SCALE, key.split("/", 1)[1] + "/")]
        await self.store.commit(ops)

    async def _teardown(self, vid: str, *, graceful: bool, forget_scale: bool = True) -> None:
        if self._closing:
            return
        placed = {b for b, _ in self._observed.get(vid, {}).values()}
        docs = await self.store.list(R.INSTANCES, vid + "/")
        known = [k for k in self._specs if k[0] == vid]
        if not placed and not docs and not known:
            return  # nothing runs for this version
        for name in placed or self.backends:
            await self.backends[name].remove(vid, graceful=graceful)
        for k in known:
            del self._specs[k]
        ops = [Delete(R.INSTANCES, r.key) for r in docs]
        if forget_scale:
            ops += [Delete(R.SCALE, r.key) for r in await self.store.list(R.SCALE, vid + "/")]
        if ops:
            await self.store.commit(ops)

    # -- draining ---------------------------------------------------------------------------------
    async def _mark_draining(self, vid: str, instance_ids: list[str]) -> None:
        self._draining_ids.update(instance_ids)
        for iid in instance_ids:
            rec = await self.store.get(R.INSTANCES, R.instance_key(vid, iid))
            if rec is not None:
                await self.store.put(R.INSTANCES, rec.key, replace(InstanceRecord.parse(rec.value), draining=True).to_doc())

    async def _wait_idle(self, vid: str, instance_ids: list[str] | None) -> None:
        """Until no gateway reports in-flight work on the instances (or the version): every
        request on them ended, or reached its own limit (the gateway ends those). Bounded
        only by drain_timeout (0: unbounded). Waits drain_settle first so reports postdate
        the drain."""
        if self.loadboard is None:
            return
        await asyncio.sleep(self.drain_settle)
        deadline = time.monotonic() + self.drain_timeout if self.drain_timeout > 0 else float("inf")
        while time.monotonic() < deadline:
            load = self.loadboard.version_load(vid)
            if instance_ids is not None:
                counts = [self.loadboard.endpoint_in_flight(vid, iid) for iid in instance_ids]
                known = [c for c in counts if c is not None]
                if len(known) == len(counts):
                    if sum(known) == 0:
                        return
                    await asyncio.sleep(self.drain_poll)
                    continue
            if load.in_flight == 0 and (instance_ids is not None or load.queue_depth == 0):
                return
            await asyncio.sleep(self.drain_poll)
        self.counters.drain_timeouts += 1
        load = self.loadboard.version_load(vid)
        busy = {i: load.endpoint_in_flight.get(i, 0) for i in instance_ids} if instance_ids is not None else {}
        log.warning(
            "version %s: drain timed out after %.0fs (reconciler.drainTimeout) with %d request(s) in flight%s; stopping anyway",
            vid,
            self.drain_timeout,
            sum(busy.values()) if busy else load.in_flight,
            "".join(f", {n} on {i}" for i, n in busy.items() if n),
        )

    async def _drain_undeploy(self, vid: str, key: str) -> None:
        try:
            await self._mark_draining(vid, [e.instance_id for e in self.observed(vid)])
            await self._wait_idle(vid, None)
            await self._teardown(vid, graceful=True)
            dep = await self.store.get(R.DEPLOYMENTS, key)
            if dep is not None and Deployment.parse(dep.value).graceful:
                await self.store.delete(R.DEPLOYMENTS, key, expect=dep.revision)
        except Conflict:
            pass
        except Exception:
            log.exception("graceful undeploy of %s", vid)
        finally:
            self._drains.pop(vid, None)
            self._mark(vid)

    def _in_flight_on(self, vid: str, instance_id: str) -> int:
        n = self.loadboard.endpoint_in_flight(vid, instance_id) if self.loadboard is not None else None
        return n or 0

    def _scaling_down(self, vid: str) -> bool:
        return any(k[0] == vid for k in self._scale_downs)

    async def _drain_scale_down(self, key: tuple[str, str], backend: Backend, replicas: int, current: list[InstanceEvent]) -> None:
        vid = key[0]
        # not-ready instances first, then the ready ones with the fewest requests in
        # flight (an idle one goes at once), the newest among equals
        order = sorted(current, key=lambda e: (e.kind is K.READY, self._in_flight_on(vid, e.instance_id), -current.index(e)))
        victims = order[: len(current) - replicas]
        starting = [e.instance_id for e in victims if e.kind is not K.READY]
        ready = [e.instance_id for e in victims if e.kind is K.READY]
        await self._drain_chosen(key, backend, starting, ready)

    async def _drain_chosen(self, key: tuple[str, str], backend: Backend, starting: list[str], ready: list[str]) -> None:
        """Stop `starting` at once; take `ready` out of routing, wait until they are idle, stop them."""
        vid = key[0]
        try:
            if starting and not self._closing:
                await backend.stop_instances(vid, starting, graceful=False)
            if ready:
                await self._mark_draining(vid, ready)
                await self._wait_idle(vid, ready)
                if not self._closing:
                    await backend.stop_instances(vid, ready, graceful=True)
        except Exception:
            log.exception("scale-down of %s", vid)
        finally:
            self._scale_downs.pop(key, None)
            self._mark(vid)  # the next pass applies the count wanted now (it may have changed meanwhile)


def _still_runs(backend: Backend, inst: InstanceRecord) -> bool:
    """Whether a backend whose instances die with this replica runs this one still: the
    replica led before and leads again. Until the replay reports it, a count applied
    without it could stop it under its requests."""
    instances = getattr(backend, "instances", None)  # introspection, optional in the Backend protocol
    return instances is not None and any(i["instanceId"] == inst.instance_id for i in instances(inst.version_id))
