"""SSE policy: `: keep-alive` comments to a streaming request while it waits.

With `sse_queue_keepalive > 0`, a request that accepts `text/event-stream` and has had
no response headers for that long (queued, cold start, or a slow first token) gets a
200 `text/event-stream` head from the gateway, then a comment every interval, so
clients with inactivity watchdogs keep the stream; the call's own timer sends them
(Call._keepalive in proxy/calls/call.py). When the instance answers, its events follow on
the same stream; a non-SSE answer or a gateway error then arrives as one
`event: error` with the status, since the 200 has already been sent.
"""

from __future__ import annotations

import orjson

from fngate.proxy.calls.exchange import Exchange, Headers

COMMENT = b": keep-alive\n\n"


def wants_sse(ex: Exchange) -> bool:
    return any(n == b"accept" and b"text/event-stream" in v for n, v in ex.headers)


def sse_head(request_id: bytes) -> Headers:
    """The gateway's own head for a stream whose instance has not answered yet."""
    return [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"nvcf-reqid", request_id),
        (b"nvcf-status", b"fulfilled"),
    ]


def error_event(status: int, detail: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps({"status": status, "detail": detail}) + b"\n\n"
