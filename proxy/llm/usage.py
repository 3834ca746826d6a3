"""Token usage as the instance reports it, and the gateway's usage metric.

- JSON answers (chat and embeddings without streaming, a collapsed /v1/responses):
  the body's `usage`;
- event streams: the last event that carries `usage` (chat's final chunk with
  `stream_options.include_usage`), or the `response` object of /v1/responses'
  `response.completed` event.

Chat and embeddings name them `prompt_tokens`/`completion_tokens`, Responses
`input_tokens`/`output_tokens`; both count here as input and output."""

from __future__ import annotations

from typing import Any

import orjson

MAX_KEPT = 8 << 20  # a JSON answer longer than this is not read for usage (its estimate stands)
_EVENT_END = b"\n\n"


def usage_of(doc: object) -> tuple[int, int] | None:
    """(input, output) tokens of a `usage` object's parent (a response or a chunk)."""
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    if not isinstance(usage, dict) and isinstance(doc.get("response"), dict):
        usage = doc["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    inp = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    out = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if not isinstance(inp, int) or not isinstance(out, int):
        return None
    if out == 0 and isinstance(total := usage.get("total_tokens"), int) and total > inp:
        out = total - inp
    return max(inp, 0), max(out, 0)


def event_data(event: bytes) -> bytes:
    """The `data:` payload of one SSE event (its data lines joined)."""
    lines = [ln[5:].lstrip(b" ") for ln in event.replace(b"\r\n", b"\n").split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines)


class SseScan:
    """Reads an event stream as it passes, keeping only what it needs: the last usage,
    and (collapsing /v1/responses) the final response object. Events without the word
    `usage` or `response.completed` in them are skipped without parsing."""

    __slots__ = ("completed", "rest", "usage")

    def __init__(self) -> None:
        self.rest = b""
        self.usage: tuple[int, int] | None = None
        self.completed: dict[str, Any] | None = None  # response.completed's `response`

    def feed(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        if _EVENT_END not in buf and b"\r\n\r\n" not in buf:
            self.rest = buf if len(buf) < MAX_KEPT else b""
            return
        buf = buf.replace(b"\r\n", b"\n")
        *events, self.rest = buf.split(_EVENT_END)
        for event in events:
            if b'"usage"' in event or b"response.completed" in event:
                self._read(event_data(event))

    def _read(self, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        if doc.get("type") == "response.completed" and isinstance(doc.get("response"), dict):
            self.completed = doc["response"]
        found = usage_of(doc)
        if found is not None:
            self.usage = found


class TokenMetrics:
    """`llm_api_gateway_llm_tokens_total{endpoint,token_type,stream,function_id}` (8.6)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, str], int] = {}

    def add(self, endpoint: str, stream: bool, function_id: str, inp: int, out: int) -> None:
        s = "true" if stream else "false"
        for kind, n in (("input", inp), ("output", out)):
            if n:
                key = (endpoint, kind, s, function_id)
                self.counts[key] = self.counts.get(key, 0) + n

    def render(self) -> str:
        out = [
            "# HELP llm_api_gateway_llm_tokens_total Tokens the instances reported, by LLM endpoint and token type.",
            "# TYPE llm_api_gateway_llm_tokens_total counter",
        ]
        for (endpoint, kind, stream, fid), n in sorted(self.counts.items()):
            out.append(
                f'llm_api_gateway_llm_tokens_total{{endpoint="{endpoint}",token_type="{kind}",stream="{stream}",function_id="{fid}"}} {n}'
            )
        return "\n".join(out) + "\n"
