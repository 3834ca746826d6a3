"""RoutingPublisher: the store's functions, deployments, ready instances and keys ->
one immutable RoutingTable, published to every sink whenever they change.

Changes are debounced (a burst of instance events becomes one table). Table
versions come from wall-clock milliseconds, bumped past the last one published,
so they keep increasing across control-plane restarts and gateways never ignore
a fresh table. Sinks: the in-process SnapshotHolder(s) of the gateway, Redis
(`SET fngate:routing` + `PUBLISH fngate:routing:changed`), and the internal
long-poll route, which reads `publisher.holder`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from fngate.control import records as R
from fngate.control.authorizations import Authority
from fngate.control.key_owners import suspended_owners
from fngate.control.keys import ACTIVE, SCOPES, StoredKey
from fngate.control.records import NO_GPU_SPEC, Deployment, FunctionVersion, InstanceRecord, parse_iso
from fngate.control.sharing import Sharing, load_all_sharing
from fngate.control.store.base import Compacted, StateStore
from fngate.control.tasks import cancel_until_done
from fngate.proxy.routing.snapshot import (
    ROUTING_CHANNEL,
    ROUTING_DELTA_KEY,
    ROUTING_KEY,
    ROUTING_VERSION_KEY,
    Endpoint,
    KeyGrant,
    RoutingTable,
    RoutingWire,
    SnapshotHolder,
    VersionRoute,
    key_digest,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("fngate.publisher")

_RELEVANT = frozenset({R.FUNCTIONS, R.DEPLOYMENTS, R.INSTANCES, R.KEYS, R.KEY_OWNERS, R.AUTHORIZATIONS})

Sink = Callable[[RoutingTable], Awaitable[Any] | Any]


def _unix(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return parse_iso(iso).timestamp()
    except ValueError:
        return None


def build_routes(
    functions: list[FunctionVersion],
    deployments: Mapping[str, Deployment],
    instances: list[InstanceRecord],
    sharing: Mapping[str, Sharing] | None = None,
) -> list[VersionRoute]:
    """`deployments` is keyed by version id; `sharing` by function id."""
    ready: dict[str, list[InstanceRecord]] = {}
    for inst in instances:
        if inst.active and inst.port:
            ready.setdefault(inst.version_id, []).append(inst)
    routes = []
    for fn in functions:
        vid = fn.version_id
        dep = deployments.get(vid)
        first = dep.specs[0] if dep is not None and dep.specs else NO_GPU_SPEC
        here = sorted(ready.get(vid, ()), key=lambda i: i.instance_id)
        endpoints = tuple(Endpoint(i.instance_id, i.host, i.port, i.draining) for i in here)
        # A spec without `backend` runs on the default backend; the instances know its name.
        backend = first.backend or next((i.backend for i in here if i.backend), "")
        routes.append(
            VersionRoute(
                function_id=fn.function_id,
                version_id=vid,
                name=fn.name,
                status=fn.status.value,
                nca_id=fn.nca_id,
                inference_url=fn.inference_url,
                inference_port=fn.inference_port,
                grpc=fn.grpc,
                max_concurrency=first.max_request_concurrency,
                instance_type=first.instance_type,
                gpu=first.gpu,
                backend=backend,
                endpoints=endpoints,
                authorized=(sharing or {}).get(fn.function_id, _NOT_SHARED).parties(vid),
                rate_limit=_rate_limit_text(fn),
                function_type=fn.function_type,
                llm_models=_llm_models_text(fn),
            )
        )
    return routes


_NOT_SHARED = Sharing()


def _rate_limit_text(fn: FunctionVersion) -> str:
    """The `rateLimit` object as canonical JSON (sorted keys): equal settings give equal
    routes, so an unchanged limit adds nothing to a routing delta."""
    return orjson.dumps(fn.rate_limit, option=orjson.OPT_SORT_KEYS).decode() if fn.rate_limit else ""


def _llm_models_text(fn: FunctionVersion) -> str:
    """An LLM function's models as the gateway's LLM endpoints read them (proxy/llm/models.py):
    each model's `name` and `llmConfig`, canonical JSON so equal settings give equal routes."""
    if fn.function_type != "LLM" or not fn.models:
        return ""
    models = [{"name": str(m.get("name", "")), "llmConfig": m.get("llmConfig") or {}} for m in fn.models]
    return orjson.dumps(models, option=orjson.OPT_SORT_KEYS).decode()


def build_grants(
    keys: list[dict[str, Any]], admin_key: str | None, suspended_owners: frozenset[str] = frozenset()
) -> list[tuple[str, KeyGrant]]:
    """Every usable key as a KeyGrant: ACTIVE (suspended keys, and every key of a suspended
    owner, are left out, so the gateway no longer knows them; expiry is checked by the
    gateway per request) with a policy for NVCF's audience."""
    grants = []
    for doc in keys:
        key = StoredKey.from_doc(doc)
        authority = Authority.from_authorizations(key.authorizations)
        if key.status != ACTIVE or not authority.matched:
            continue
        if key.owner_id in suspended_owners and not key.is_admin:
            continue
        access = authority.access
        grants.append(
            (
                key.digest,
                KeyGrant(
                    key_id=key.id,
                    scopes=authority.scopes,
                    function_ids=None if access.own else access.functions,
                    expires_at=_unix(key.expires_at),
                    nca_id=key.nca_id,
                    subject=key.owner_id or key.id,
                    version_ids=access.versions,
                    shared=access.shared,
                    any_account=key.is_admin,
                ),
            )
        )
    if admin_key:
        grants.append((key_digest(admin_key), KeyGrant("admin", frozenset(SCOPES), subject="admin", any_account=True)))  # every scope
    return grants


class RoutingPublisher:
    def __init__(
        self,
        store: StateStore,
        *,
        admin_key: str | None = None,
        debounce: float = 0.015,
        resync_interval: float = 30.0,
        wire: RoutingWire | None = None,
    ) -> None:
        self.store = store
        self.admin_key = admin_key
        self.debounce = debounce
        self.resync_interval = resync_interval
        self.holder = SnapshotHolder()
        self.wire = wire or RoutingWire()  # the wire forms (whole, delta) for gateways in other processes
        self._sinks: list[Sink] = [self.holder.publish, self.wire.publish]  # before any sink that sends the wire forms
        self._last_version = 0
        self.published_revision = -1  # the store revision the newest published table reflects
        self._caught_up = asyncio.Condition()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)
        if self.holder.table.version:
            self._call(sink, self.holder.table)

    def add_redis_sink(self, redis: aioredis.Redis) -> None:
        """Publish through Redis (a redis.asyncio client) for gateways in other processes."""

        async def sink(table: RoutingTable) -> None:
            wire = self.wire  # holds `table` already: its sink runs first
            delta = wire.delta()
            async with redis.pipeline(transaction=True) as pipe:  # readers see table and delta of one version
                pipe.set(ROUTING_KEY, wire.full())
                pipe.set(ROUTING_VERSION_KEY, str(table.version))
                if delta is None:
                    pipe.delete(ROUTING_DELTA_KEY)
                else:
                    pipe.set(ROUTING_DELTA_KEY, delta)
                pipe.publish(ROUTING_CHANNEL, str(table.version))
                await pipe.execute()

        self._sinks.append(sink)

    def bump_past(self, version: int) -> None:
        """Never publish a version at or below one seen before (e.g. the one in Redis)."""
        self._last_version = max(self._last_version, version)

    async def start(self) -> None:
        since = await self.store.revision()
        await self.publish_now()
        self._tasks = [
            asyncio.create_task(self._watch(since), name="publisher-watch"),
            asyncio.create_task(self._loop(), name="publisher-loop"),
        ]

    async def aclose(self) -> None:
        await cancel_until_done(self._tasks)

    async def build(self) -> RoutingTable:
        functions = [FunctionVersion.parse(r.value) for r in await self.store.list(R.FUNCTIONS)]
        deployments = {r.key.split("/", 1)[1]: Deployment.parse(r.value) for r in await self.store.list(R.DEPLOYMENTS)}
        instances = [InstanceRecord.parse(r.value) for r in await self.store.list(R.INSTANCES)]
        keys = [r.value for r in await self.store.list(R.KEYS)]
        suspended = suspended_owners([r.value for r in await self.store.list(R.KEY_OWNERS)])
        sharing = await load_all_sharing(self.store)
        self._last_version = max(int(time.time() * 1000), self._last_version + 1)
        routes = build_routes(functions, deployments, instances, sharing)
        return RoutingTable.build(self._last_version, routes, build_grants(keys, self.admin_key, suspended))

    async def publish_now(self) -> RoutingTable:
        revision = await self.store.revision()  # read before the build: its table reflects at least this
        table = await self.build()
        for sink in self._sinks:
            res = self._call(sink, table)
            if inspect.isawaitable(res):
                try:
                    await res
                except Exception:
                    log.exception("routing sink failed; the next change or resync retries")
        async with self._caught_up:  # every sink has it: gateways can read it now
            self.published_revision = max(self.published_revision, revision)
            self._caught_up.notify_all()
        return table

    async def caught_up(self, timeout: float = 5.0) -> bool:
        """Wait until a published table reflects every store write made before this call
        (read-your-writes: the management API answers only then, so what it reports is
        what the routing already has). False when that took longer than `timeout`."""
        target = await self.store.revision()
        if self.published_revision >= target:
            return True
        self._dirty.set()  # (the watch sets it too; this skips waiting for it)
        try:
            async with asyncio.timeout(timeout), self._caught_up:
                await self._caught_up.wait_for(lambda: self.published_revision >= target)
        except TimeoutError:
            return False
        return True

    @staticmethod
    def _call(sink: Sink, table: RoutingTable) -> object:
        try:
            return sink(table)
        except Exception:
            log.exception("routing sink failed")
            return None

    async def _watch(self, since: int) -> None:
        while True:
            try:
                async for ch in self.store.watch(since):
                    since = ch.revision
                    if ch.kind in _RELEVANT:
                        self._dirty.set()
            except Compacted:
                pass
            except Exception as exc:  # the store went away for a moment; the periodic republish covers it
                log.warning("store watch failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
            try:
                since = await self.store.revision()
            except Exception:
                continue
            self._dirty.set()

    async def _loop(self) -> None:
        while True:
            try:  # asyncio.timeout: wait_for (3.11) can lose a cancel that lands as the event is set
                async with asyncio.timeout(self.resync_interval):
                    await self._dirty.wait()
            except TimeoutError:
                pass  # periodic republish: a sink that missed one catches up
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            try:
                await self.publish_now()
            except Exception:
                log.exception("building the routing table")
