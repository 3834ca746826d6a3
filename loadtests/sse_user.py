"""A Locust user that holds SSE streams from an OpenAI-style streaming function.

Each call POSTs `stream: true` with `Accept: text/event-stream`, reads the events as
they arrive, and records, besides Locust's own `sse: open` entry (time to response
headers), three entries of type `SSE`:

- `sse: ttft`: time from sending the request to the first event (time to first token);
- `sse: gap`: each interval between consecutive events;
- `sse: stream`: the whole stream, sending to the last event, with its byte count. It
  fails when the status is not 200, `nvcf-status` is not `fulfilled`, the response is
  not an event stream, or no event arrived.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

from locust import FastHttpUser, constant, task
from locust.contrib.fasthttp import FastHttpSession

from .addressing import SSE_PATH, routed_headers, sse_body
from .arrival import ArrivalRate
from .checks import CHECK, STATUS, TRANSPORT, Failed
from .knobs import Knobs

if TYPE_CHECKING:
    from locust.env import Environment

DONE = b"[DONE]"
STREAM = "sse: stream"


class _Streams:
    """Mixed into a FastHttpUser: one checked, timed stream per `stream_once()`."""

    client: FastHttpSession
    environment: Environment

    def setup_streams(self) -> None:
        self.knobs = Knobs.from_env()
        self.payload = sse_body(self.knobs)
        self.bases = itertools.cycle(self.knobs.sse_urls or self.knobs.urls or ("",))  # "": the user's host

    def _record(self, name: str, seconds: float, length: int = 0, failure: str | None = None) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=seconds * 1000.0,
            response_length=length,
            exception=Failed(failure) if failure else None,
            context={},
        )

    def stream_once(self) -> None:
        headers = routed_headers(self.knobs, self.knobs.sse_function_id, "header")
        headers["Accept"] = "text/event-stream"
        started = time.perf_counter()
        resp = self.client.post(next(self.bases) + SSE_PATH, json=self.payload, headers=headers, name="sse: open", stream=True)
        failure = self._head_failure(resp)
        if failure:
            self._record(STREAM, time.perf_counter() - started, 0, failure)
            return
        events, length, last, failure = 0, 0, started, None
        try:
            for event in sse_events(resp._response):
                now = time.perf_counter()
                length += len(event)
                if event == DONE:
                    continue  # read on to the end, so the connection goes back to the pool clean
                if events == 0:
                    self._record("sse: ttft", now - started)
                else:
                    self._record("sse: gap", now - last)
                events += 1
                last = now
        except Exception as exc:  # a stream cut short is a transport error, the run goes on
            failure = f"{TRANSPORT} stream broken after {events} events: {type(exc).__name__}"
        if failure is None and events == 0:
            failure = f"{CHECK} no event in the stream"
        self._record(STREAM, last - started, length, failure)

    def _head_failure(self, resp) -> str | None:
        if not resp.status_code:
            return f"{TRANSPORT} no response: {type(getattr(resp, 'error', None)).__name__}"
        if resp.status_code != 200:
            return f"{STATUS} {resp.status_code}"
        if not self.knobs.direct and resp.headers.get("nvcf-status", "").lower() != "fulfilled":
            return f"{CHECK} nvcf-status={resp.headers.get('nvcf-status', 'missing')}"
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            return f"{CHECK} content-type={resp.headers.get('content-type', 'missing')}"
        return None


class SseUser(_Streams, FastHttpUser):
    """Closed loop: open a stream, read it to the end, think, open the next."""

    network_timeout = 300.0
    connection_timeout = 10.0

    def wait_time(self) -> float:
        return self.knobs.think_time

    def on_start(self) -> None:
        self.setup_streams()

    @task
    def stream(self) -> None:
        self.stream_once()


class ArrivalSse(_Streams, ArrivalRate, FastHttpUser):
    """Open loop (soak): `sse_rate_per_user` streams opened per second, each on its own greenlet."""

    network_timeout = 300.0
    connection_timeout = 10.0
    concurrency = 1000
    wait_time = constant(0)

    def on_start(self) -> None:
        self.setup_streams()

    def arrival_rate(self) -> float:
        return self.knobs.sse_rate_per_user

    def arrival_name(self) -> str:
        return STREAM

    def invoke(self) -> None:
        self.stream_once()

    @task
    def arrivals(self) -> None:
        self.run_arrivals()


def sse_events(raw):
    """The `data` payload of each event of an SSE body, as each event completes."""
    data: list[bytes] = []
    while True:
        line = raw.readline(b"\n")
        if not line:
            if data:
                yield b"\n".join(data)
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
