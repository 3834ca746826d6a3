"""Locust users that invoke an HTTP function (the echo sample or anything like it).

`Invoker` is closed-loop: each user calls, waits `think_time`, calls again (ramp,
large request/response). `ArrivalInvoker` is open-loop: arrivals are issued on a fixed
schedule whether or not earlier ones have answered (hammer, soak), see `arrival.py`.
Every invocation is recorded under one entry, `POST invoke`, whichever function and
routing mode (Host or header) it used, and passes only the NVCF soak checks.
"""

from __future__ import annotations

import itertools

from locust import FastHttpUser, constant, task
from locust.contrib.fasthttp import FastHttpSession

from .addressing import body, echo_path, route_cycle, routed_headers
from .arrival import ArrivalRate
from .checks import invocation_failure
from .knobs import Knobs

INVOKE = "invoke"


class _Invocations:
    client: FastHttpSession  # the FastHttpUser's, which this is mixed into
    """Mixed into a FastHttpUser: one checked invocation per `invoke()`."""

    def setup_invocations(self) -> None:
        self.knobs = Knobs.from_env()
        self.routes = route_cycle(self.knobs)
        self.payload = body(self.knobs.body_size)
        self.path = echo_path(self.knobs)
        self.bases = itertools.cycle(self.knobs.urls or ("",))  # "": the user's host

    def invoke(self) -> None:
        function_id, mode = next(self.routes)
        headers = routed_headers(self.knobs, function_id, mode)
        headers["Content-Type"] = "application/octet-stream"
        with self.client.post(next(self.bases) + self.path, data=self.payload, headers=headers, name=INVOKE, catch_response=True) as resp:  # type: ignore[arg-type]  # bytes bodies go out as they are
            reason = invocation_failure(
                resp.status_code or 0,
                resp.headers.get("nvcf-status") if resp.headers else None,
                len(resp.content or b""),
                direct=self.knobs.direct,
            )
            if reason:
                resp.failure(reason)
            else:
                resp.success()


class Invoker(_Invocations, FastHttpUser):
    """Closed loop: call, think, call again."""

    network_timeout = 120.0
    connection_timeout = 10.0

    def wait_time(self) -> float:
        return self.knobs.think_time

    def on_start(self) -> None:
        self.setup_invocations()

    @task
    def call(self) -> None:
        self.invoke()


class ArrivalInvoker(_Invocations, ArrivalRate, FastHttpUser):
    """Open loop: `rate_per_user` arrivals per second, each on its own greenlet."""

    network_timeout = 120.0
    connection_timeout = 10.0
    concurrency = 1000  # connections this user's client may hold for its in-flight arrivals
    wait_time = constant(0)

    def on_start(self) -> None:
        self.setup_invocations()

    def arrival_name(self) -> str:
        return INVOKE

    @task
    def arrivals(self) -> None:
        self.run_arrivals()
