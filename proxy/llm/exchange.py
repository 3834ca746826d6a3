"""The client side of an LLM call as the engine's Call sees it: an Exchange in front of
the driver's, which passes everything on and on the way

- reads the token usage the instance reports (proxy/llm/usage.py) and settles the
  request's token charge and the usage metric when the response ends;
- adds `x-request-id` (and `x-multi-turn-session-id`) to the response head;
- words the engine's own errors (problem+json) as the LLM gateway does;
- collapses the event stream of a non-streaming /v1/responses into the final
  Responses object (spec part 2, 8.5), the one case where it holds bytes back.

Events of a stream are passed on as they come: `send` forwards before it scans."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from fngate.proxy.calls.exchange import Exchange, Headers, RequestBody
from fngate.proxy.errors import PROBLEM_JSON
from fngate.proxy.llm.errors import JSON, message_body
from fngate.proxy.llm.usage import MAX_KEPT, SseScan, usage_of

if TYPE_CHECKING:
    from fngate.proxy.llm.token_limits import TokenCharge
    from fngate.proxy.llm.usage import TokenMetrics

NO_RESPONSE = "proxy provider returned no response"


class LlmExchange(Exchange):
    __slots__ = (
        "charge",
        "collapse",
        "conn",
        "endpoint_label",
        "error_status",
        "extra",
        "function_id",
        "keep_headers",
        "kept",
        "metrics",
        "openai",
        "real",
        "scan",
        "settled",
        "stream",
        "used",
        "used_read",
    )

    def __init__(
        self,
        real: Exchange,
        body: bytes,
        extra: Headers,
        *,
        charge: TokenCharge,
        metrics: TokenMetrics,
        endpoint: str,
        function_id: str,
        stream: bool,
        collapse: bool,
        openai: bool,
    ) -> None:
        ended = RequestBody(len(body) + 1, _ignore)
        if body:
            ended.feed(body)
        ended.feed_eof()
        super().__init__(real.method, real.target, real.headers, real.authority, real.client_addr, real.http2, ended)
        self.scheme = real.scheme
        self.conn = real.conn
        self.real = real
        self.extra = extra  # header fields added to the response head
        self.charge = charge
        self.metrics = metrics
        self.endpoint_label = endpoint
        self.function_id = function_id
        self.stream = stream
        self.collapse = collapse  # a /v1/responses the client wants as one JSON object
        self.openai = openai
        self.scan: SseScan | None = None  # the instance answers an event stream
        self.kept: list[bytes] | None = None  # a JSON answer, read for usage at its end
        self.error_status = 0  # the engine's own problem+json error, reworded at the end
        self.keep_headers: Headers = []
        self.settled = False
        self.used: tuple[int, int] | None = None  # the usage, once read (_usage)
        self.used_read = False
        real.on_disconnect = self.client_gone

    # -- the head ------------------------------------------------------------------------
    def start_response(self, status: int, headers: Headers) -> None:
        self.response_started = True
        if any(n == b"content-type" and v == PROBLEM_JSON for n, v in headers):
            self.error_status = status  # the body follows in send(); reworded in end()
            self.kept = []
            self.keep_headers = [(n, v) for n, v in headers if n not in (b"content-type", b"content-length")]
            return
        self.real.start_response(status, [*headers, *self.extra])

    def start_response_block(self, status: int, lines: bytes, framed: bool, request_id: bytes, nvcf_status: bytes) -> None:
        self.response_started = True
        sse = b"text/event-stream" in lines.lower()
        if sse:
            self.scan = SseScan()
        else:
            self.kept = []
        if self.collapse and sse and status == 200:
            return  # the Responses object goes out at the end, with a head of our own
        self.collapse = False
        extra = b"".join(b"%s: %s\r\n" % hv for hv in self.extra)
        self.real.start_response_block(status, lines + extra, framed, request_id, nvcf_status)

    # -- the body ------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if not self.collapse and not self.error_status:
            self.real.send(data)
        scan = self.scan
        if scan is not None:
            scan.feed(data)
            return
        kept = self.kept
        if kept is not None:
            kept.append(data)
            if len(kept) > 64 and sum(map(len, kept)) > MAX_KEPT:
                self.kept = None

    def flush(self) -> None:
        if not self.collapse and not self.error_status:
            self.real.flush()

    def end(self) -> None:
        self.finished = True
        real = self.real
        if self.error_status:
            self._reworded_error(real)
            return
        inp_out = self._usage()
        self._settle(inp_out)
        if self.collapse:
            scan = self.scan
            done = scan.completed if scan is not None else None
            if done is None:
                body = message_body(502, NO_RESPONSE, self.openai)
                real.start_response(502, [(b"content-type", JSON), (b"content-length", b"%d" % len(body)), *self.extra])
            else:
                body = orjson.dumps(done)
                real.start_response(200, [(b"content-type", JSON), (b"content-length", b"%d" % len(body)), *self.extra])
            real.send(body)
        real.end()

    def abort(self) -> None:
        self.finished = True
        self._settle(self._usage())
        self.real.abort()

    def backlogged(self) -> bool:
        return self.real.backlogged()

    def when_writable(self, callback: Callable[[], None]) -> None:
        self.real.when_writable(callback)

    def client_gone(self) -> None:
        self._settle(self._usage())
        super().client_gone()

    # -- usage ---------------------------------------------------------------------------
    def token_usage(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens the instance reported, for the access log: asked
        once the call is over (the instance sends nothing more), before or after end()."""
        return None if self.error_status else self._usage()

    def _usage(self) -> tuple[int, int] | None:
        """Read once: a JSON answer is parsed a single time for the charge and the log."""
        if not self.used_read:
            self.used_read = True
            self.used = self._read_usage()
        return self.used

    def _read_usage(self) -> tuple[int, int] | None:
        if self.scan is not None:
            return self.scan.usage
        kept = self.kept
        if kept:
            try:
                return usage_of(orjson.loads(b"".join(kept)))
            except orjson.JSONDecodeError:
                return None
        return None

    def _settle(self, inp_out: tuple[int, int] | None) -> None:
        if self.settled:
            return
        self.settled = True
        if inp_out is None:
            self.charge.settle(None)
            return
        inp, out = inp_out
        self.charge.settle(inp + out)
        self.metrics.add(self.endpoint_label, self.stream, self.function_id, inp, out)

    def _reworded_error(self, real: Exchange) -> None:
        self._settle(None)
        detail = ""
        try:
            doc = orjson.loads(b"".join(self.kept or ()))
            detail = str(doc.get("detail") or doc.get("title") or "")
        except (orjson.JSONDecodeError, AttributeError):
            pass
        body = message_body(self.error_status, detail or "upstream error", self.openai)
        headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(body)), *self.keep_headers, *self.extra]
        real.start_response(self.error_status, headers)
        real.send(body)
        real.end()


def _ignore(n: int) -> None:
    pass
