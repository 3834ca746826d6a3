"""Sample HTTP function: echoes what it received.

    python -m fngate.backends.samples.echo --host H --port P

Any method and path answers JSON {method, path, query, headers, bodySize, env}.
The request body is counted chunk by chunk, never held, so huge uploads stay flat.
Query knobs: `delay` (seconds before the headers), `size` (answer with that many
body bytes instead of JSON, streamed in 64 KiB chunks), `status` (response status); the
same as headers `Echo-Delay`, `Echo-Size`, `Echo-Status` (pexec sends the function's
inferenceUrl without the client's query string, as NVCF, so a pexec client uses these).
`/health` and `/v2/health/ready` answer 200. `/stats` reports requests started,
finished and cancelled (the client went away), so a test can see a cancel arrive.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from fngate.backends.samples._common import HEALTH_PATHS, health, nvcf_env, parse_args, serve

_CHUNK = b"x" * 65536


class Stats:
    def __init__(self) -> None:
        self.started = self.finished = self.cancelled = self.active = 0

    def as_dict(self) -> dict[str, int]:
        return {"started": self.started, "finished": self.finished, "cancelled": self.cancelled, "active": self.active}


def make_app() -> web.Application:
    stats = Stats()
    app = web.Application(client_max_size=1 << 62)

    async def stats_view(_: web.Request) -> web.Response:
        return web.json_response(stats.as_dict())

    async def echo(request: web.Request) -> web.StreamResponse:
        stats.started += 1
        stats.active += 1
        try:
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
            q = {
                **{k: request.headers[f"Echo-{k}"] for k in ("delay", "size", "status") if f"Echo-{k}" in request.headers},
                **request.query,
            }
            delay = float(q.get("delay", 0) or 0)
            if delay > 0:
                await asyncio.sleep(delay)
            status = int(q.get("status", 200) or 200)
            if "size" in q:
                total = int(q["size"])
                resp = web.StreamResponse(status=status)
                resp.content_type = "application/octet-stream"
                resp.content_length = total
                await resp.prepare(request)
                left = total
                while left > 0:
                    piece = _CHUNK if left >= len(_CHUNK) else _CHUNK[:left]
                    await resp.write(piece)
                    left -= len(piece)
                await resp.write_eof()
                stats.finished += 1
                return resp
            body = {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers.items()),
                "bodySize": size,
                "env": nvcf_env(),
            }
            stats.finished += 1
            return web.json_response(body, status=status)
        except (asyncio.CancelledError, ConnectionResetError):
            stats.cancelled += 1
            raise
        finally:
            stats.active -= 1

    for path in HEALTH_PATHS:
        app.router.add_get(path, health)
    app.router.add_get("/stats", stats_view)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    args = parse_args("echo")
    asyncio.run(serve(make_app(), args.host, args.port, "echo"))


if __name__ == "__main__":
    main()
