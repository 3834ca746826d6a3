"""Sample streaming function: an OpenAI-compatible chat completions endpoint.

    python -m fngate.backends.samples.sse --host H --port P

`POST /v1/chat/completions` with `"stream": true` answers `text/event-stream`:
one `data: {chat.completion.chunk}` event per token, then `data: [DONE]`. Without
it, one `chat.completion` JSON. Knobs, as body fields or query parameters:
`tokens` (count, default 16; `max_tokens` is honoured too) and `interval`
(seconds between tokens, default 0.01). Each chunk carries `created_ns`, the
server's wall clock when it was written, so a client can measure delivery delay.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid

import orjson
from aiohttp import web

from fngate.backends.samples._common import HEALTH_PATHS, health, nvcf_env, parse_args, serve


def _knob(body: dict, query, name: str, default):
    if name in query:
        return type(default)(query[name])
    if name in body:
        return type(default)(body[name])
    return default


def make_app() -> web.Application:
    app = web.Application()
    stats = {"started": 0, "finished": 0, "cancelled": 0, "active": 0}

    async def stats_view(_: web.Request) -> web.Response:
        return web.json_response(stats)

    async def completions(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            tokens = _knob(body, request.query, "tokens", int(body.get("max_tokens", 16)))
            interval = _knob(body, request.query, "interval", 0.01)
        except (ValueError, TypeError) as e:
            return web.json_response({"error": {"message": str(e), "type": "invalid_request_error"}}, status=400)
        model = str(body.get("model", "fngate-sse"))
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        stream = bool(body.get("stream", False)) or request.query.get("stream") == "true"
        stats["started"] += 1
        stats["active"] += 1
        try:
            if not stream:
                if interval > 0:
                    await asyncio.sleep(interval * tokens)
                text = " ".join(f"tok{i}" for i in range(tokens))
                stats["finished"] += 1
                return web.json_response(
                    {
                        "id": cid,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
                        "env": nvcf_env(),
                    }
                )
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            for i in range(tokens):
                if i and interval > 0:
                    await asyncio.sleep(interval)
                last = i == tokens - 1
                chunk = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": f"tok{i}"}, "finish_reason": "stop" if last else None}],
                    "seq": i,
                    "created_ns": time.time_ns(),
                }
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            stats["finished"] += 1
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            stats["cancelled"] += 1
            raise
        finally:
            stats["active"] -= 1

    for path in HEALTH_PATHS:
        app.router.add_get(path, health)
    app.router.add_get("/stats", stats_view)
    app.router.add_post("/v1/chat/completions", completions)
    return app


def lift_open_files_limit() -> None:
    """Every open stream holds a descriptor, and many hosts start processes at a soft limit
    of 1024: lift it to the hard limit so one instance can hold thousands of streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))
    except (ValueError, OSError):  # e.g. an unlimited hard limit, which no soft limit may equal
        pass


def main() -> None:
    args = parse_args("sse")
    lift_open_files_limit()
    asyncio.run(serve(make_app(), args.host, args.port, "sse"))


if __name__ == "__main__":
    main()
