"""A fake Kubernetes API server for tests: aiohttp speaking the real wire protocol.

Covers what fngate's Kubernetes backend uses: apps/v1 Deployments (create, get,
list, replace, merge/strategic patch, delete), core/v1 Pods (get, list, watch,
delete) and Secrets, with labelSelector, resourceVersion (one counter, bumped on
every write; optimistic concurrency on replace), Status objects for 401/404/409/
410/422, and the line-delimited watch stream `{"type": ..., "object": ...}`
(410 Gone as an ERROR event when the requested resourceVersion was compacted).

A kubelet-and-controllers stand-in (fake_kubelet.py) turns Deployments into pods
that run as local processes. Test hooks: drop_watches, expire_history,
inject_error, and those of the kubelet (kill_pod, evict_pod, fail_pod_creation).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
KINDS = {"deployments": ("apps/v1", "Deployment"), "pods": ("v1", "Pod"), "secrets": ("v1", "Secret")}
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 410: "Gone", 422: "Invalid"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_object(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "InternalError"),
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status_object(code, message, reason)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 (also what strategic merge does for the maps fngate patches)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass(eq=False)
class _Watch:
    resource: str
    namespace: str
    selector: str
    queue: asyncio.Queue
    request: web.Request


class FakeApiServer:
    """State and the HTTP app. `kubelet` (set by FakeCluster) is told about changes."""

    def __init__(self, *, token: str = "fake-token", history_limit: int = 5000) -> None:
        self.token = token
        self.history_limit = history_limit  # like etcd compaction: older resourceVersions get 410
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.rv = 0
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, resource, type, object)
        self.oldest_rv = 0  # watches from before this get 410 Gone
        self.watches: set[_Watch] = set()
        self.errors: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (verb, resource) as the RBAC layer would see them
        self.request_times: list[float] = []  # time.monotonic() of each of `requests`
        self.on_change = lambda: None
        self.app = web.Application(middlewares=[self._middleware])
        for base, res in (("/apis/apps/v1", "deployments"), ("/api/v1", "pods"), ("/api/v1", "secrets")):
            coll = f"{base}/namespaces/{{ns}}/{res}"
            self.app.router.add_route("GET", coll, self._collection_get)
            self.app.router.add_route("POST", coll, self._create)
            for method, handler in (("GET", self._get), ("PUT", self._replace), ("PATCH", self._patch), ("DELETE", self._delete)):
                self.app.router.add_route(method, coll + "/{name}", handler)

    # -- test hooks ---------------------------------------------------------------------
    def inject_error(self, verb: str, resource: str, code: int, message: str, times: int = 1) -> None:
        """The next `times` requests with this RBAC verb on this resource fail with `code`."""
        self.errors.append({"verb": verb, "resource": resource, "code": code, "message": message, "left": times})

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch: cleanly (as a server timeout does) or by cutting the connection."""
        dropped = len(self.watches)
        for w in list(self.watches):
            if abrupt and w.request.transport is not None:
                w.request.transport.close()
            w.queue.put_nowait(None)
        return dropped

    def expire_history(self) -> None:
        """Compact: a watch from any resourceVersion seen so far now gets 410 Gone."""
        self.oldest_rv = self.rv + 1
        self.history.clear()

    def list(self, resource: str, namespace: str | None = None, selector: str = "") -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (r, ns, _), o in sorted(self.objects.items())
            if r == resource and namespace in (None, ns) and selector_matches(selector, o["metadata"].get("labels") or {})
        ]

    def write_kubeconfig(self, path: Path, server: str, namespace: str = "default") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": server}}],
                    "users": [{"name": "fngate", "user": {"token": self.token}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fngate", "namespace": namespace}}],
                }
            )
        )
        return path

    # -- the store (also used by the kubelet) --------------------------------------------------
    def put(self, resource: str, namespace: str, obj: dict[str, Any], *, event: str) -> dict[str, Any]:
        self.rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.rv)
        meta["namespace"] = namespace
        self.objects[(resource, namespace, meta["name"])] = obj
        self._publish(resource, event, obj)
        return copy.deepcopy(obj)

    def remove(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((resource, namespace, name), None)
        if obj is not None:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._publish(resource, "DELETED", obj)
        return obj

    def _publish(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(obj)
        self.history.append((self.rv, resource, kind, snapshot))
        if len(self.history) > self.history_limit:
            del self.history[: len(self.history) // 2]
            self.oldest_rv = self.history[0][0]
        for w in self.watches:
            if (
                w.resource == resource
                and w.namespace == obj["metadata"]["namespace"]
                and selector_matches(w.selector, obj["metadata"].get("labels") or {})
            ):
                w.queue.put_nowait({"type": kind, "object": snapshot})
        self.on_change()

    # -- HTTP --------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status_object(401, "Unauthorized"), status=401)
        res = request.path.split("/")[-1] if "name" not in request.match_info else request.path.split("/")[-2]
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method)
        if verb is None:
            verb = (
                "get"
                if "name" in request.match_info
                else ("watch" if request.query.get("watch", "").lower() in ("1", "t", "true") else "list")
            )
        self.requests.append((verb, res))
        self.request_times.append(time.monotonic())
        for e in self.errors:
            if e["left"] > 0 and e["verb"] == verb and e["resource"] == res:
                e["left"] -= 1
                return web.json_response(status_object(e["code"], e["message"]), status=e["code"])
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.status, status=exc.status["code"])

    @staticmethod
    def _where(request: web.Request) -> tuple[str, str]:
        return request.path.split("/")[-1 if "name" not in request.match_info else -2], request.match_info["ns"]

    def _find(self, request: web.Request) -> tuple[str, str, dict[str, Any]]:
        res, ns = self._where(request)
        obj = self.objects.get((res, ns, request.match_info["name"]))
        if obj is None:
            raise ApiError(404, f'{res} "{request.match_info["name"]}" not found')
        return res, ns, obj

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}", "BadRequest") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be an object", "BadRequest")
        return body

    def _validate(self, res: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        kind = KINDS[res][1]
        if not name or len(name) > 253 or not _NAME.match(name):
            raise ApiError(
                422,
                f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters',
            )
        if res == "deployments":
            spec = obj.get("spec") or {}
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            tpl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not sel or any(tpl.get(k) != v for k, v in sel.items()):
                raise ApiError(
                    422,
                    f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`',
                )
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            if not containers or not all(c.get("name") and c.get("image") for c in containers):
                raise ApiError(422, f'Deployment.apps "{name}" is invalid: spec.template.spec.containers: Required value')
            if int(spec.get("replicas", 1)) < 0:
                raise ApiError(
                    422, f'Deployment.apps "{name}" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0'
                )

    def _stamp_new(self, res: str, obj: dict[str, Any]) -> None:
        api_version, kind = KINDS[res]
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if res == "deployments":
            obj["spec"].setdefault("replicas", 1)
            obj.setdefault("status", {})

    async def _create(self, request: web.Request) -> web.Response:
        res, ns = self._where(request)
        obj = await self._body(request)
        self._validate(res, obj)
        if (res, ns, obj["metadata"]["name"]) in self.objects:
            raise ApiError(409, f'{res} "{obj["metadata"]["name"]}" already exists')
        self._stamp_new(res, obj)
        return web.json_response(self.put(res, ns, obj, event="ADDED"), status=201)

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._find(request)[2])

    async def _replace(self, request: web.Request) -> web.Response:
        res, ns, current = self._find(request)
        obj = await self._body(request)
        self._validate(res, obj)
        sent_rv = (obj.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {res} "{current["metadata"]["name"]}": the object has been modified; please apply your changes to the latest version and try again',
                "Conflict",
            )
        return web.json_response(self._update(res, ns, current, obj))

    async def _patch(self, request: web.Request) -> web.Response:
        res, ns, current = self._find(request)
        if request.content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise ApiError(415, f"the content type {request.content_type} is not supported", "UnsupportedMediaType")
        obj = merge_patch(current, await self._body(request))
        self._validate(res, obj)
        return web.json_response(self._update(res, ns, current, obj))

    def _update(self, res: str, ns: str, current: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
            if k in current["metadata"]:
                meta[k] = current["metadata"][k]
        obj["apiVersion"], obj["kind"] = KINDS[res]
        if res == "deployments":
            obj["status"] = current.get("status") or {}
            if obj.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
        return self.put(res, ns, obj, event="MODIFIED")

    async def _delete(self, request: web.Request) -> web.Response:
        res, ns, current = self._find(request)
        if res == "pods":  # graceful: the kubelet stops it, then removes the object
            current["metadata"]["deletionTimestamp"] = now()
            return web.json_response(self.put(res, ns, current, event="MODIFIED"))
        self.remove(res, ns, current["metadata"]["name"])
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": current["metadata"]["name"], "kind": res, "uid": current["metadata"]["uid"]},
            }
        )

    async def _collection_get(self, request: web.Request) -> web.StreamResponse:
        res, ns = self._where(request)
        selector = request.query.get("labelSelector", "")
        if request.query.get("watch", "").lower() in ("1", "t", "true"):
            return await self._watch(request, res, ns, selector)
        api_version, kind = KINDS[res]
        return web.json_response(
            {
                "apiVersion": api_version,
                "kind": kind + "List",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": self.list(res, ns, selector),
            }
        )

    async def _watch(self, request: web.Request, res: str, ns: str, selector: str) -> web.StreamResponse:
        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        w = _Watch(res, ns, selector, asyncio.Queue(), request)
        if since not in ("", "0") and int(since) < self.oldest_rv:
            w.queue.put_nowait(
                {"type": "ERROR", "object": status_object(410, f"too old resource version: {since} ({self.oldest_rv})", "Expired")}
            )
            w.queue.put_nowait(None)
        elif since in ("", "0"):
            for obj in self.list(res, ns, selector):
                w.queue.put_nowait({"type": "ADDED", "object": obj})
        else:
            for rv, r, kind, obj in self.history:
                if (
                    rv > int(since)
                    and r == res
                    and obj["metadata"]["namespace"] == ns
                    and selector_matches(selector, obj["metadata"].get("labels") or {})
                ):
                    w.queue.put_nowait({"type": kind, "object": obj})
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.watches.add(w)
        try:
            async with asyncio.timeout(timeout):
                while (event := await w.queue.get()) is not None:
                    await resp.write(orjson.dumps(event) + b"\n")
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.watches.discard(w)
        return resp
