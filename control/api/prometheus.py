"""The control plane's Prometheus metrics: GET /metrics on the API port (a key with a list
scope, e.g. Prometheus' `authorization: {credentials_file: ...}`; only the functions that
key may list are shown).

State metrics under NVCF's state-metrics names (spec part 2, 10.4), so NVCF's queries work:
  nvcf_function_info{function_id, function_version_id, name, container_image, nca_id}   1
  nvcf_function_status{function_id, function_version_id, name, status}                   1 (the current status)
  nvcf_function_instances_current{function_id, function_version_id, name}                ready instances
  nvcf_function_queue_depth{function_id, function_version_id, name, nca_id}              queued requests
fngate's own:
  fngate_instances{function_id, function_version_id, name, state}       instances by state (STARTING, ACTIVE, DRAINING)
  fngate_deployment_min_instances / _max_instances{function_id, function_version_id, name, gpu, instance_type}
  fngate_version_in_flight{function_id, function_version_id, name}      requests on instances, as the gateways report
  fngate_version_busy_seconds_total{...}                                slot-seconds held (the autoscaler's input)
  fngate_instance_type_capacity / _free{backend, gpu, instance_type}    instances of the type that fit / fit now
  fngate_api_requests_total{method, route, status}                      management API calls (route = the template)
  fngate_api_request_duration_seconds                                   their duration (histogram)
  fngate_store_up                                                       1 while the store answers
  fngate_drain_timeouts_total                                           drains cut by reconciler.drainTimeout (this replica's)
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import records
from .auth import require
from .context import ctx
from .functions import LIST_SCOPES, listed_docs

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STORE_TIMEOUT = 2.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class ApiMetrics:
    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (method, route, status) -> count
    latency: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1


API_METRICS = web.AppKey("fngate.api.metrics", ApiMetrics)


def _route_of(request: web.Request) -> str:
    """The matched route's template (`/v2/nvcf/functions/{functionId}`), never the raw
    path: clients cannot add series by inventing paths."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and what the problem middleware passes on
        status = exc.status
        raise
    finally:
        request.config_dict[API_METRICS].observe(request.method, _route_of(request), status, time.monotonic() - started)


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))  # full precision, unlike :g


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, object], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(**labels) if labels else ''} {_number(value)}")

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


async def _store_up(request: web.Request) -> bool:
    try:
        await asyncio.wait_for(ctx(request).store.revision(), STORE_TIMEOUT)
    except Exception:  # any failure of the store reads as down; its own log says why
        return False
    return True


async def metrics(request: web.Request) -> web.Response:
    principal = await require(request, *LIST_SCOPES)
    c = ctx(request)
    store = c.store
    docs = await listed_docs(store, principal)
    shown = {d["versionId"] for d in docs}
    instances = [records.InstanceRecord.parse(r.value) for r in await store.list(records.INSTANCES)]
    deployments = {r.value["functionVersionId"]: r.value for r in await store.list(records.DEPLOYMENTS)}
    by_state: dict[tuple[str, str], int] = {}
    for inst in instances:
        if inst.version_id in shown:
            state = "DRAINING" if inst.draining else inst.status
            by_state[(inst.version_id, state)] = by_state.get((inst.version_id, state), 0) + 1

    out = _Text()

    def ident(d: dict[str, Any]) -> dict[str, object]:
        return {"function_id": d["id"], "function_version_id": d["versionId"], "name": d["name"]}

    out.family(
        "nvcf_function_info",
        "gauge",
        "One series per function version the key may list.",
        ((ident(d) | {"container_image": d.get("containerImage", ""), "nca_id": d.get("ncaId", "")}, 1) for d in docs),
    )
    out.family(
        "nvcf_function_status",
        "gauge",
        "1 for the version's current lifecycle status.",
        ((ident(d) | {"status": d["status"]}, 1) for d in docs),
    )
    out.family(
        "nvcf_function_instances_current",
        "gauge",
        "Ready instances (routed to) per version.",
        ((ident(d), by_state.get((d["versionId"], "ACTIVE"), 0)) for d in docs),
    )
    out.family(
        "nvcf_function_queue_depth",
        "gauge",
        "Requests waiting for an instance slot, over every gateway, per version.",
        ((ident(d) | {"nca_id": d.get("ncaId", "")}, c.loadboard.queue_depth(d["versionId"])) for d in docs),
    )
    out.family(
        "fngate_instances",
        "gauge",
        "Instances by state (STARTING, ACTIVE, DRAINING) per version.",
        (
            (ident(d) | {"state": state}, by_state.get((d["versionId"], state), 0))
            for d in docs
            for state in ("STARTING", "ACTIVE", "DRAINING")
        ),
    )
    specs = [(d, s) for d in docs for s in (deployments.get(d["versionId"]) or {}).get("deploymentSpecifications", [])]
    for bound in ("min", "max"):
        out.family(
            f"fngate_deployment_{bound}_instances",
            "gauge",
            f"The deployment's {bound}Instances per GPU specification.",
            (
                (ident(d) | {"gpu": s.get("gpu", ""), "instance_type": s.get("instanceType", "")}, int(s.get(f"{bound}Instances", 0)))
                for d, s in specs
            ),
        )
    loads = {d["versionId"]: c.loadboard.version_load(d["versionId"]) for d in docs}
    out.family(
        "fngate_version_in_flight",
        "gauge",
        "Requests holding an instance slot, over every gateway's load report.",
        ((ident(d), loads[d["versionId"]].in_flight) for d in docs),
    )
    out.family(
        "fngate_version_busy_seconds_total",
        "counter",
        "Instance slot-seconds held, over the live gateways' reports (the autoscaler's utilisation input).",
        ((ident(d), loads[d["versionId"]].busy_seconds) for d in docs),
    )
    capacity = c.capacity()
    for key, what in (("total", "capacity"), ("free", "free")):
        out.family(
            f"fngate_instance_type_{what}",
            "gauge",
            f"Instances of the type that the backend's GPUs hold ({key}).",
            (
                ({"backend": e.get("backend", ""), "gpu": e.get("gpu", ""), "instance_type": e.get("name", "")}, int(e.get(key, 0) or 0))
                for e in capacity
            ),
        )
    api = request.config_dict[API_METRICS]
    out.family(
        "fngate_api_requests_total",
        "counter",
        "Management API requests by method, route template and status.",
        (({"method": m, "route": r, "status": s}, n) for (m, r, s), n in sorted(api.requests.items())),
    )
    out.lines += [
        "# HELP fngate_api_request_duration_seconds Management API request duration.",
        "# TYPE fngate_api_request_duration_seconds histogram",
    ]
    cumulative = 0
    for le, n in zip(BUCKETS, api.latency, strict=False):
        cumulative += n
        out.lines.append(f'fngate_api_request_duration_seconds_bucket{{le="{le}"}} {cumulative}')
    out.lines += [
        f'fngate_api_request_duration_seconds_bucket{{le="+Inf"}} {api.latency_count}',
        f"fngate_api_request_duration_seconds_sum {api.latency_sum:.6f}",
        f"fngate_api_request_duration_seconds_count {api.latency_count}",
    ]
    out.family(
        "fngate_drain_timeouts_total",
        "counter",
        "Drains that reached reconciler.drainTimeout and stopped instances with requests in flight (on this replica, while it led).",
        [({}, c.counters.drain_timeouts)],
    )
    out.family("fngate_store_up", "gauge", "1 while the state store answers.", [({}, 1 if await _store_up(request) else 0)])
    return web.Response(body=out.render(), headers={"Content-Type": CONTENT_TYPE})


def install(app: web.Application) -> None:
    """Count every API request (the middleware goes first in make_app) and serve /metrics."""
    app[API_METRICS] = ApiMetrics()
    app.router.add_get("/metrics", metrics)
