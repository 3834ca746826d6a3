"""Sample LLM function (`fngate/llm`): OpenAI-compatible chat completions, Responses and
embeddings with usage fields, so the LLM gateway is testable without a GPU.

    python -m fngate.backends.samples.llm --host H --port P

- `POST /v1/chat/completions`: `max_tokens` (or `max_completion_tokens`, default 8)
  tokens `tok0 tok1 ...`, as one `chat.completion` or, with `"stream": true`, one
  `chat.completion.chunk` event per token, a final chunk with `usage` (empty choices),
  then `data: [DONE]`;
- `POST /v1/responses`: the Responses object, or with `"stream": true` its events in
  OpenAI's order (`response.created`, the output item and content part, one
  `response.output_text.delta` per token, their `done` events, `response.completed`
  carrying the whole response and its usage);
- `POST /v1/embeddings`: one 8-dimension vector per input;
- `GET /v1/models`, `/health`, and `/stats` (requests started, finished, cancelled,
  active, and the model names it was sent).

A prompt token is a whitespace-separated word of the messages' (or input's) text.
`interval` (body field, seconds between tokens, default 0.01) paces the output. Every
answer names the instance in `system_fingerprint` (its port), so a test can see
which instance served it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from fngate.backends.samples._common import HEALTH_PATHS, health, parse_args, serve

DEFAULT_TOKENS = 8


def _words(value: Any) -> int:
    """Prompt tokens: the words of every string in the value."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k in ("content", "text", "input", "messages"))
    return 0


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)


def make_app(instance: str) -> web.Application:
    app = web.Application()
    stats: dict[str, Any] = {"started": 0, "finished": 0, "cancelled": 0, "active": 0, "models": []}

    async def body_of(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        stats["models"].append(str(body.get("model")))
        del stats["models"][:-100]
        return body

    def knobs(body: dict[str, Any], out_field: str) -> tuple[int, float]:
        tokens = body.get(out_field) or body.get("max_tokens") or DEFAULT_TOKENS
        return int(tokens), float(body.get("interval", 0.01))

    async def tracked(handler: Any, request: web.Request) -> web.StreamResponse:
        stats["started"] += 1
        stats["active"] += 1
        try:
            resp: web.StreamResponse = await handler(request)
            stats["finished"] += 1
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            stats["cancelled"] += 1
            raise
        except (ValueError, TypeError) as e:
            return _bad(str(e))
        finally:
            stats["active"] -= 1

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await body_of(request)
        if not isinstance(body.get("messages"), list):
            return _bad("messages is required")
        tokens, interval = knobs(body, "max_completion_tokens")
        prompt = _words(body["messages"])
        usage = {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), str(body.get("model"))
        common = {"id": cid, "created": created, "model": model, "system_fingerprint": instance}
        if not body.get("stream"):
            await asyncio.sleep(interval * tokens)
            text = " ".join(f"tok{i}" for i in range(tokens))
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return web.json_response({**common, "object": "chat.completion", "choices": [choice], "usage": usage})
        resp = await sse(request)
        for i in range(tokens):
            if i:
                await asyncio.sleep(interval)
            delta = {"role": "assistant", "content": f"tok{i}"} if i == 0 else {"content": f" tok{i}"}
            chunk = {**common, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        last = {**common, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await body_of(request)
        if body.get("input") is None:
            return _bad("input is required")
        tokens, interval = knobs(body, "max_output_tokens")
        prompt = _words(body["input"])
        rid, model = f"resp_{uuid.uuid4().hex[:24]}", str(body.get("model"))
        text = " ".join(f"tok{i}" for i in range(tokens))

        def response(status: str, done: bool) -> dict[str, Any]:
            doc: dict[str, Any] = {
                "id": rid,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": model,
                "metadata": {"instance": instance},
                "output": [],
                "parallel_tool_calls": False,
                "tool_choice": "auto",
                "tools": [],
            }
            if done:
                doc["output"] = [
                    {
                        "id": f"msg_{rid[5:]}",
                        "type": "message",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ]
                doc["usage"] = {
                    "input_tokens": prompt,
                    "output_tokens": tokens,
                    "total_tokens": prompt + tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                }
            return doc

        if not body.get("stream"):
            await asyncio.sleep(interval * tokens)
            return web.json_response(response("completed", True))
        resp = await sse(request)

        async def event(kind: str, data: dict[str, Any]) -> None:
            await resp.write(b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, **data})))

        item_id = f"msg_{rid[5:]}"
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        await event("response.created", {"response": response("in_progress", False), "sequence_number": 0})
        await event("response.output_item.added", {"output_index": 0, "item": item, "sequence_number": 1})
        await event("response.content_part.added", {**at, "part": part, "sequence_number": 2})
        seq = 2
        for i in range(tokens):
            if i:
                await asyncio.sleep(interval)
            seq += 1
            await event("response.output_text.delta", {**at, "delta": f"tok{i}" if i == 0 else f" tok{i}", "sequence_number": seq})
        done = response("completed", True)
        await event("response.output_text.done", {**at, "text": text, "sequence_number": seq + 1})
        await event("response.content_part.done", {**at, "part": {**part, "text": text}, "sequence_number": seq + 2})
        await event("response.output_item.done", {"output_index": 0, "item": done["output"][0], "sequence_number": seq + 3})
        await event("response.completed", {"response": done, "sequence_number": seq + 4})
        await resp.write_eof()
        return resp

    async def embeddings(request: web.Request) -> web.StreamResponse:
        body = await body_of(request)
        inputs = body.get("input")
        if inputs is None or inputs == [] or inputs == "":
            return _bad("input is required")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(orjson.dumps(item)).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:8]]})
        prompt = _words(items) if all(isinstance(x, str) for x in items) else len(items)
        return web.json_response(
            {"object": "list", "data": data, "model": str(body.get("model")), "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
        )

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fngate-llm", "object": "model", "created": 0, "owned_by": "fngate"}]})

    async def stats_view(_: web.Request) -> web.Response:
        return web.json_response(stats)

    for path in HEALTH_PATHS:
        app.router.add_get(path, health)
    app.router.add_get("/stats", stats_view)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", lambda r: tracked(chat, r))
    app.router.add_post("/v1/responses", lambda r: tracked(responses, r))
    app.router.add_post("/v1/embeddings", lambda r: tracked(embeddings, r))
    return app


def main() -> None:
    args = parse_args("llm")
    asyncio.run(serve(make_app(f"port-{args.port}"), args.host, args.port, "llm"))


if __name__ == "__main__":
    main()
