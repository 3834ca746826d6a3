"""The admin listener of a `--workers N` gateway, served by the parent process.

Each worker serves its own admin app on a private loopback port; this one answers
the public admin port for all of them, at scrape time only (nothing on the request
path): `/metrics` joins the workers' texts, each sample labelled `worker="<id>"`,
plus `fngate_gateway_worker_up`; `/readyz` is ready when every worker is;
`/healthz` fails while a worker process is down (the parent starts it again:
proxy/ops/workers.py), and `fngate_gateway_worker_restarts_total` counts those restarts.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from fngate.proxy.config import LOOPBACK

SCRAPE_TIMEOUT = 3.0


def label_sample(line: str, worker: str) -> str:
    """`name{a="b"} 1` -> `name{worker="w",a="b"} 1`; `name 1` -> `name{worker="w"} 1`."""
    cut = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
    if line[cut : cut + 1] == "{":
        sep = "" if line[cut + 1 : cut + 2] == "}" else ","
        return f'{line[: cut + 1]}worker="{worker}"{sep}{line[cut + 1 :]}'
    return f'{line[:cut]}{{worker="{worker}"}}{line[cut:]}'


def merge_metrics(texts: Sequence[tuple[str, str]]) -> str:
    """Prometheus texts of (worker id, text) as one exposition: every family once, with
    its HELP and TYPE, then the samples of all workers."""
    families: dict[str, list[Any]] = {}  # name -> [help line, type line, samples]
    for worker, text in texts:
        family = None
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                name = line.split(" ", 3)[2]
                family = families.setdefault(name, [None, None, []])
                kind = 0 if line[2] == "H" else 1
                if family[kind] is None:  # once per family, from the first worker
                    family[kind] = line
            elif line and not line.startswith("#"):
                if family is None:  # a sample without HELP/TYPE: its own family
                    family = families.setdefault(line.split("{", 1)[0].split(" ", 1)[0], [None, None, []])
                family[2].append(label_sample(line, worker))
    out: list[str] = []
    for help_line, type_line, samples in families.values():
        out += [ln for ln in (help_line, type_line) if ln] + samples
    return "\n".join(out) + "\n" if out else ""


class WorkerAdmin:
    """`workers()` -> [(worker id, private admin port, alive)] at the time of the call;
    `restarts()` -> [(worker id, times the parent started it again)]."""

    def __init__(self, workers: Callable[[], list[tuple[str, int, bool]]], restarts: Callable[[], list[tuple[str, int]]] = list) -> None:
        self.workers = workers
        self.restarts = restarts
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None

    async def _get(self, port: int, path: str) -> tuple[int, str]:
        assert self.session is not None  # start() made it
        async with self.session.get(f"http://{LOOPBACK}:{port}{path}") as r:
            return r.status, await r.text()

    async def _each(self, path: str) -> list[tuple[str, tuple[int, str] | BaseException]]:
        workers = self.workers()
        answers = await asyncio.gather(*(self._get(port, path) for _, port, _ in workers), return_exceptions=True)
        return [(gid, a) for (gid, _, _), a in zip(workers, answers, strict=True)]

    async def metrics(self, _: web.Request) -> web.Response:
        texts, up = (
            [],
            ["# HELP fngate_gateway_worker_up 1 if the gateway worker answered this scrape.", "# TYPE fngate_gateway_worker_up gauge"],
        )
        for gid, answer in await self._each("/metrics"):
            ok = not isinstance(answer, BaseException) and answer[0] == 200
            if ok and not isinstance(answer, BaseException):
                texts.append((gid, answer[1]))
            up.append(f'fngate_gateway_worker_up{{worker="{gid}"}} {int(ok)}')
        up += [
            "# HELP fngate_gateway_worker_restarts_total Times the parent started a gateway worker again after it exited.",
            "# TYPE fngate_gateway_worker_restarts_total counter",
        ]
        up += [f'fngate_gateway_worker_restarts_total{{worker="{gid}"}} {n}' for gid, n in self.restarts()]
        body = merge_metrics(texts) + "\n".join(up) + "\n"
        return web.Response(text=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def readyz(self, _: web.Request) -> web.Response:
        workers, versions = {}, []
        for gid, answer in await self._each("/readyz"):
            if isinstance(answer, BaseException):
                workers[gid] = {"ready": False, "error": str(answer) or type(answer).__name__}
                continue
            status, text = answer
            doc: dict[str, Any] = {"ready": status == 200}
            try:
                doc["routingVersion"] = int(json.loads(text)["routingVersion"])
                versions.append(doc["routingVersion"])
            except (ValueError, KeyError, TypeError):
                pass
            workers[gid] = doc
        ready = bool(workers) and all(w["ready"] for w in workers.values())
        return web.json_response(
            {"ready": ready, "routingVersion": min(versions, default=0), "workers": workers}, status=200 if ready else 503
        )

    async def healthz(self, _: web.Request) -> web.Response:
        dead = [gid for gid, _, alive in self.workers() if not alive]
        if dead:
            return web.json_response({"status": "worker exited", "workers": dead}, status=503)
        return web.json_response({"status": "ok"})

    async def start(self, sock: socket.socket) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.session is not None:
            await self.session.close()
            self.session = None
