"""RoutingSources: how a gateway process that is not the control plane's own gets its
routing snapshot, and sends its LoadReports back. Both run beside the hot path and
only ever call `holder.publish` (the one writer).

- ControlHttpSource: long-poll `GET {api}/internal/v1/routing?after=V&wait=S`
  (200 + RoutingTable JSON, or 204 when nothing changed) and
  `PUT {api}/internal/v1/load/{gateway_id}` with the LoadReport JSON.
- RedisSource: `GET fngate:routing` on start, on every `fngate:routing:changed`
  nudge and on a resync timer (a lost nudge never leaves the gateway stale);
  load reports as `SET fngate:load:{gateway_id}` with a 10 s expiry.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from fngate.proxy.routing.refresh import Refresher
from fngate.proxy.routing.snapshot import (
    LOAD_PREFIX,
    LOAD_REPORT_TTL,
    ROUTING_CHANNEL,
    ROUTING_DELTA_KEY,
    ROUTING_KEY,
    ROUTING_VERSION_KEY,
    LoadReport,
    RoutingTable,
    SnapshotHolder,
)

log = logging.getLogger(__name__)


class ControlHttpSource:
    def __init__(self, api_url: str, admin_key: str, holder: SnapshotHolder, gateway_id: str, wait: float = 20.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.holder = holder
        self.gateway_id = gateway_id
        self.wait = wait
        self._auth = {"Authorization": f"Bearer {admin_key}"}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        holder.refresh = Refresher(lambda: self.fetch_once(0))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._auth)
        return self._session

    async def fetch_once(self, wait: float) -> bool:
        """One long poll; True when a newer table was published. The answer is the delta
        from the table held here when the control plane has it, else the whole table."""
        held = self.holder.table
        table = await self._poll(held.version, wait)
        if table is None:
            return False
        return self.holder.publish(table)

    async def _poll(self, after: int, wait: float) -> RoutingTable | None:
        url = f"{self.api_url}/internal/v1/routing"
        params = {"after": str(after), "wait": str(wait)}
        timeout = aiohttp.ClientTimeout(total=wait + 10)
        async with self._client().get(url, params=params, timeout=timeout) as resp:
            if resp.status == 204:
                return None
            if resp.status != 200:
                raise RuntimeError(f"routing poll answered {resp.status}")
            table = self.holder.table.apply_json(await resp.read())
        if table is None and after:  # a delta from a table this gateway does not hold: ask for the whole one
            return await self._poll(0, 0)
        return table

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self.fetch_once(self.wait)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the control plane restarts or is unreachable: retry
                log.debug("routing poll failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def send_load(self, report: LoadReport) -> None:
        url = f"{self.api_url}/internal/v1/load/{self.gateway_id}"
        async with self._client().put(
            url, data=report.to_json(), timeout=aiohttp.ClientTimeout(total=5), headers={"Content-Type": "application/json"}
        ) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"load report answered {resp.status}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class RedisSource:
    def __init__(self, url: str, holder: SnapshotHolder, gateway_id: str, resync: float = 5.0) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url)
        self.holder = holder
        self.gateway_id = gateway_id
        self.resync = resync
        self._task: asyncio.Task[None] | None = None
        holder.refresh = Refresher(self.fetch_once)

    async def fetch_once(self) -> bool:
        """Read the newest table if it is newer than the one held here: through its delta
        when that starts at the held table, else whole (one read of the version and the
        delta first, so a resync with nothing new decodes nothing)."""
        holder = self.holder
        held = holder.table
        version, delta = await self.redis.mget(ROUTING_VERSION_KEY, ROUTING_DELTA_KEY)
        if version is not None:
            if int(version) <= held.version:
                return False
            if delta is not None:
                table = held.apply_json(delta)
                if table is not None and table.version == int(version):
                    return holder.publish(table)
        raw = await self.redis.get(ROUTING_KEY)
        if raw is None:
            return False
        whole = holder.table.apply_json(raw)
        return whole is not None and holder.publish(whole)

    async def run(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(ROUTING_CHANNEL)
                await self.fetch_once()  # after subscribing, so no change slips between
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.resync)
                    await self.fetch_once()  # a nudge, or the resync timer
                    del msg
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarted: resubscribe and re-read
                log.debug("redis routing source: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated
                except Exception:
                    pass

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def send_load(self, report: LoadReport) -> None:
        await self.redis.set(LOAD_PREFIX + self.gateway_id, report.to_json(), ex=LOAD_REPORT_TTL)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.redis.aclose()
