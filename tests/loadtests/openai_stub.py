"""A small OpenAI-compatible chat server standing in for the LLM gateway in load-test tests.

It answers `POST /v1/chat/completions` as NVCF's LLM gateway would in front of a model:
only with `Host: llm.<domain>` and a body `model` of `<functionId>/<modelName>` (else 400
`{"message": ...}`), streamed (SSE chunks, one token each, `usage` in a last chunk when
`stream_options.include_usage`) or as one JSON completion with `usage`. `/metrics` gives
fngate's gateway series for what it is serving (in flight, requests by status), so the
server-side scrape has something real to read. Run: `python -m tests.loadtests.openai_stub
--port 0 --function-id FID --model NAME`; it prints `listening on HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

TOKEN_DELAY = 0.002


class Stub:
    def __init__(self, function_id: str, model: str) -> None:
        self.expected_model = f"{function_id}/{model}"
        self.in_flight = 0
        self.by_status: dict[int, int] = {}

    def count(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._chat(request)
        finally:
            self.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not request.host.split(":")[0].startswith("llm."):
            self.count(400)
            return web.json_response({"message": f"host {request.host} is not llm.<domain>"}, status=400)
        body = await request.json()
        if body.get("model") != self.expected_model:
            self.count(400)
            return web.json_response({"message": "model targets a different routing key"}, status=400)
        n = int(body.get("max_tokens") or 16)
        created = int(time.time())
        if not body.get("stream"):
            await asyncio.sleep(TOKEN_DELAY * n)
            self.count(200)
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * n}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
            })  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i in range(n):
            await asyncio.sleep(TOKEN_DELAY)
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}  # fmt: skip
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                     "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}  # fmt: skip
            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.count(200)
        return resp

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# TYPE fngate_in_flight_requests gauge",
            f"fngate_in_flight_requests {self.in_flight}",
            "# TYPE fngate_queue_depth gauge",
            'fngate_queue_depth{version_id="v1"} 0',
            "# TYPE fngate_requests_total counter",
            *(f'fngate_requests_total{{function_id="unknown",status="{s}"}} {n}' for s, n in sorted(self.by_status.items())),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def main(host: str, port: int, function_id: str, model: str) -> None:
    stub = Stub(function_id, model)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stub.chat)
    app.router.add_get("/metrics", stub.metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--function-id", default="00000000-0000-4000-8000-000000000001")
    p.add_argument("--model", default="fngate-llm")
    a = p.parse_args()
    asyncio.run(main(a.host, a.port, a.function_id, a.model))
