"""The web console on the API port: its static files at /console/, the live numbers it
polls (/v1/console/metrics) and a relay for its one-off invocations (/v1/console/invoke).

The static files are read once from the package (control/console/) and served from
memory under a fixed list of names, with a Content-Security-Policy that allows only
this origin (the app has no inline script and loads nothing from elsewhere).

The relay exists because a page on the API port cannot call the gateway's port (another
origin, and the gateway has no CORS layer on host/header-routed calls, as NVCF): it
passes the caller's own bearer key to the gateway on loopback, which authenticates it as
for any client, and streams the answer back unchanged (status, nvcf-* headers, SSE body).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from ..gateway_stats import GatewayStats
from .auth import authenticate, require
from .context import ctx, json_response
from .errors import BadRequest, ControlError
from .functions import LIST_SCOPES, listed_docs

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# what the relay passes on, each way (the rest of the gateway's headers stay between it and the relay)
REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "NVCF-POLL-SECONDS")
RESPONSE_HEADERS = ("Content-Type", "nvcf-reqid", "nvcf-status", "Retry-After", "grpc-status")
# an origin-form path and query, nothing that could leave the gateway's origin or split the request
SAFE_PATH = re.compile(r"/(?!/)[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RELAY_IDLE_TIMEOUT = 300.0  # as the gateway's own: a stream is cut only after this long without a byte


class BadGateway(ControlError):
    status = 502


@dataclass(slots=True)
class ConsoleLinks:
    """What the console needs from the running system besides the store: the gateway's
    numbers, and its invocation URL once it listens."""

    stats: GatewayStats = field(default_factory=GatewayStats)
    gateway_url: str | None = None
    session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=RELAY_IDLE_TIMEOUT)
            self.session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self.session

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


LINKS = web.AppKey("fngate.api.console", ConsoleLinks)


def load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("fngate.control").joinpath("console")
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in TYPES:
            files[entry.name] = (entry.read_bytes(), TYPES[suffix])
    return files


def _static_routes(files: dict[str, tuple[bytes, str]]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def answer(name: str) -> web.Response:
        body, content_type = files[name]
        return web.Response(body=body, headers={"Content-Type": content_type, **SECURITY_HEADERS})

    @routes.get("/console")
    async def console_root(_: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/console/")

    @routes.get("/console/")
    async def console_index(_: web.Request) -> web.Response:
        return answer("index.html")

    @routes.get("/console/{name}")
    async def console_file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return answer(name)

    return routes


def _links(request: web.Request) -> ConsoleLinks:
    return request.config_dict[LINKS]


async def _visible_functions(request: web.Request) -> dict[str, dict[str, Any]]:
    """function id -> {name, versions} for the versions the caller may list."""
    principal = await require(request, *LIST_SCOPES)
    out: dict[str, dict[str, Any]] = {}
    for doc in await listed_docs(ctx(request).store, principal):
        entry = out.setdefault(doc["id"], {"name": doc["name"], "versions": []})
        entry["versions"].append(doc["versionId"])
    return out


async def console_metrics(request: web.Request) -> web.Response:
    """Per-function series for the charts (the functions the key may list) and the
    gateway-wide ones, from the readings of the last `history` seconds."""
    functions = await _visible_functions(request)
    stats = _links(request).stats
    await stats.read()
    return json_response(
        {
            "gateway": {"up": not stats.last_error, "error": stats.last_error or None, "points": stats.gateway_points()},
            "historySeconds": stats.history,
            "functions": {
                fid: {"name": f["name"], "versions": f["versions"], "points": stats.function_points(fid, f["versions"])}
                for fid, f in sorted(functions.items())
            },
        }
    )


async def console_invoke(request: web.Request) -> web.StreamResponse:
    await authenticate(request)  # a request without a usable key never reaches the gateway through us
    links = _links(request)
    fid = request.match_info["functionId"]
    path = request.query.get("path", "/")
    version = request.query.get("version", "")
    if not SAFE_PATH.fullmatch(path):
        raise BadRequest(f"path must be an origin-form path such as /echo, not {path!r}")
    if version and not UUID.fullmatch(version):
        raise BadRequest(f"Failed to convert version '{version}' to a UUID")
    if links.gateway_url is None:
        raise BadGateway("The invocation gateway is not running yet")
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    headers["function-id"] = fid
    if version:
        headers["function-version-id"] = version
    body = await request.read()
    try:
        upstream = await links.client().post(links.gateway_url + path, data=body, headers=headers, allow_redirects=False, ssl=False)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise BadGateway(f"Cannot reach the invocation gateway: {exc or type(exc).__name__}") from None
    async with upstream:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name in RESPONSE_HEADERS:
            if name in upstream.headers:
                resp.headers[name] = upstream.headers[name]
        resp.headers["Cache-Control"] = "no-store"
        # the page reads these from fetch(); same origin, but say it for a tool that looks
        resp.headers["Access-Control-Expose-Headers"] = "nvcf-reqid, nvcf-status"
        await resp.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                try:
                    await resp.write(chunk)  # each SSE event as the gateway forwards it
                except ConnectionResetError:
                    return resp  # the page went away: leaving `async with` closes the gateway's stream too
        except (aiohttp.ClientError, TimeoutError):
            pass  # the gateway or the instance ended the stream early; the page sees it end
        await resp.write_eof()
    return resp


def install(app: web.Application, links: ConsoleLinks | None = None) -> ConsoleLinks:
    """Mount the console on `app`; the returned links are filled in once the gateway runs."""
    links = links or ConsoleLinks()
    app[LINKS] = links
    app.add_routes(_static_routes(load_static()))
    app.router.add_get("/v1/console/metrics", console_metrics)
    app.router.add_post("/v1/console/invoke/{functionId}", console_invoke)

    async def close(_app: web.Application) -> None:
        await links.aclose()

    app.on_cleanup.append(close)
    return links
