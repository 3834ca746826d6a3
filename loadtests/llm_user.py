"""A Locust user that calls an OpenAI-compatible chat endpoint as NVCF's LLM gateway serves it.

Each call POSTs `/v1/chat/completions` with `Host: llm.<domain>` and the body's `model` set
to `<functionId>/<modelName>` (NVCF routes by that prefix), streaming or not (`llm_stream`:
`both` alternates). It records entries of type `LLM`:

- `chat: ttft`: sending the request to the first content token (streams);
- `chat: itl`: each gap between two content tokens (inter-token latency);
- `chat: tpot`: per response, time per output token after the first (its length: the tokens);
- `chat: stream` / `chat: completion`: the whole streamed / non-streamed response, its length
  the output tokens (the `usage.completion_tokens` the server reported, else the chunks counted).

A response fails on a status other than 200, a stream that is not an event stream or carries
no token, or a completion without a choice. Tokens/s are derived in the report from these.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import orjson
from locust import FastHttpUser, task
from locust.contrib.fasthttp import FastHttpSession

from .addressing import SSE_PATH
from .checks import CHECK, STATUS, TRANSPORT, Failed
from .knobs import Knobs
from .sse_user import DONE, sse_events

if TYPE_CHECKING:
    from locust.env import Environment

LLM = "LLM"
STREAM = "chat: stream"
COMPLETION = "chat: completion"


def llm_host(knobs: Knobs) -> str:
    """`llm.<domain>`: NVCF's LLM host beside `{fid}.invocation.<domain>` (the knob's domain)."""
    return knobs.llm_host or "llm." + knobs.domain.removeprefix("invocation.")


def chat_body(knobs: Knobs, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": f"{knobs.llm_function_id}/{knobs.llm_model}" if knobs.llm_function_id else knobs.llm_model,
        "messages": [{"role": "user", "content": "x" * max(knobs.body_size, 1)}],
        "max_tokens": knobs.stream_length,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def chunk_tokens(data: bytes) -> tuple[int, int | None]:
    """(content pieces in this chunk, usage.completion_tokens when the chunk reports it)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 0, None
    if not isinstance(doc, dict):
        return 0, None
    pieces = 0
    for choice in doc.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):
            pieces += 1
    usage = doc.get("usage") or {}
    reported = usage.get("completion_tokens")
    return pieces, reported if isinstance(reported, int) else None


class LlmUser(FastHttpUser):
    """Closed loop: one chat call at a time, streamed or not, as the knobs say."""

    network_timeout = 300.0
    connection_timeout = 10.0
    client: FastHttpSession
    environment: Environment

    def wait_time(self) -> float:
        return self.knobs.think_time

    def on_start(self) -> None:
        self.knobs = Knobs.from_env()
        modes = {"both": (True, False), "true": (True,), "false": (False,)}[self.knobs.llm_stream]
        self.modes = itertools.cycle(modes)
        self.headers = {"Host": llm_host(self.knobs), "Content-Type": "application/json"}
        if self.knobs.key:
            self.headers["Authorization"] = f"Bearer {self.knobs.key}"

    def _record(self, name: str, seconds: float, length: int = 0, failure: str | None = None) -> None:
        self.environment.events.request.fire(
            request_type=LLM, name=name, response_time=seconds * 1000.0, response_length=length,
            exception=Failed(failure) if failure else None, context={},
        )  # fmt: skip

    @task
    def chat(self) -> None:
        if next(self.modes):
            self.stream_once()
        else:
            self.complete_once()

    def complete_once(self) -> None:
        started = time.perf_counter()
        resp = self.client.post(SSE_PATH, json=chat_body(self.knobs, False), headers=self.headers,
                                name="chat: request", stream=False)  # fmt: skip
        elapsed = time.perf_counter() - started
        if not resp.status_code:
            self._record(COMPLETION, elapsed, 0, f"{TRANSPORT} no response: {type(getattr(resp, 'error', None)).__name__}")
            return
        if resp.status_code != 200:
            self._record(COMPLETION, elapsed, 0, f"{STATUS} {resp.status_code}")
            return
        try:
            doc = orjson.loads(resp.content or b"")
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not doc.get("choices"):
            self._record(COMPLETION, elapsed, 0, f"{CHECK} no choices in the completion")
            return
        reported = (doc.get("usage") or {}).get("completion_tokens")
        tokens: int = reported if isinstance(reported, int) else len(doc["choices"])
        self._record(COMPLETION, elapsed, tokens)
        if tokens > 0:
            self._record("chat: tpot", elapsed / tokens, tokens)

    def stream_once(self) -> None:
        headers = {**self.headers, "Accept": "text/event-stream"}
        started = time.perf_counter()
        resp = self.client.post(SSE_PATH, json=chat_body(self.knobs, True), headers=headers,
                                name="chat: open", stream=True)  # fmt: skip
        failure = self._head_failure(resp)
        if failure:
            self._record(STREAM, time.perf_counter() - started, 0, failure)
            return
        pieces, reported, first, last = 0, None, 0.0, started
        try:
            for data in sse_events(resp._response):
                if data == DONE:
                    continue  # read on to the end, so the connection goes back to the pool clean
                now = time.perf_counter()
                got, usage = chunk_tokens(data)
                reported = usage if usage is not None else reported
                if not got:
                    continue
                if pieces == 0:
                    first = now
                    self._record("chat: ttft", now - started)
                else:
                    self._record("chat: itl", now - last)
                pieces += got
                last = now
        except Exception as exc:  # a stream cut short is a transport error; the run goes on
            failure = f"{TRANSPORT} stream broken after {pieces} tokens: {type(exc).__name__}"
        tokens = reported if reported is not None else pieces
        if failure is None and pieces == 0:
            failure = f"{CHECK} no token in the stream"
        self._record(STREAM, last - started, tokens, failure)
        if failure is None and tokens > 1:
            self._record("chat: tpot", (last - first) / (tokens - 1), tokens)

    def _head_failure(self, resp) -> str | None:
        if not resp.status_code:
            return f"{TRANSPORT} no response: {type(getattr(resp, 'error', None)).__name__}"
        if resp.status_code != 200:
            return f"{STATUS} {resp.status_code}"
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            return f"{CHECK} content-type={resp.headers.get('content-type', 'missing')}"
        return None
