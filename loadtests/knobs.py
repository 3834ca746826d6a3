"""What a load run targets and the shape of its requests, passed to Locust through the environment.

The `fngate loadtest` command writes these variables; the Locust users (in their own
process, possibly forked into workers) read them back with `Knobs.from_env()`. The
environment is used rather than Locust's own argument parser so that plain
`python -m locust -f loadtests/scenarios/<name>.py` works too, and so this module can be
imported where locust must not be (the CLI, the pytest process).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

PREFIX = "FNGATE_LT_"


def _ids(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class Knobs:
    # what to call
    key: str = ""  # bearer token with invoke_function
    function_ids: tuple[str, ...] = ()  # HTTP functions (echo-like); invocations spread over them
    sse_function_id: str = ""  # an SSE function (OpenAI-style /v1/chat/completions)
    grpc_function_id: str = ""  # a gRPC function serving fngate.echo.v1.Echo
    grpc_target: str = ""  # host:port of the gRPC listener (comma-separated: calls spread over them)
    urls: tuple[str, ...] = ()  # gateway base URLs to spread HTTP and SSE calls over (empty: Locust's host)
    sse_urls: tuple[str, ...] = ()  # SSE calls go here instead of `urls` (with direct: the SSE instance)
    domain: str = "invocation.localhost"  # Host-routed requests use {functionId}.{domain}
    routing: str = "both"  # host | header | both (alternate)
    direct: bool = False  # the target is an instance, not a gateway: no routing, no nvcf-status check
    path: str = "/echo"  # HTTP invocations POST here (Host- and header-routed requests keep the path)
    llm_function_id: str = ""  # an LLM function: chat calls send model "<llm_function_id>/<llm_model>"
    llm_model: str = "fngate-llm"  # the model name the function declares (the fngate/llm sample's)
    llm_stream: str = "both"  # true | false | both (alternate streamed and non-streamed calls)
    llm_host: str = ""  # Host of LLM calls (default llm.<domain without "invocation.">, NVCF's llm.<domain>)
    # request shape
    body_size: int = 64  # request body bytes
    response_size: int = 0  # response body bytes asked of the instance (0: the echo's default JSON)
    delay: float = 0.0  # seconds the instance waits before answering (or between SSE events)
    stream_length: int = 8  # SSE events / gRPC stream replies per call
    poll_seconds: int = 0  # NVCF-POLL-SECONDS sent on invocations (0: not sent)
    # load model
    rate_per_user: float = 0.0  # open-loop arrivals per second issued by each scheduler user
    sse_rate_per_user: float = 0.0  # soak: SSE streams opened per second by each SSE scheduler user
    grpc_rate_per_user: float = 0.0  # soak: unary gRPC calls per second by each gRPC scheduler user
    kinds: tuple[str, ...] = ()  # soak: which functions are driven (http, sse, grpc)
    users_per_kind: int = 1  # soak: scheduler users of each kind
    ramp_up: float = 0.0  # open loop: seconds over which the rate rises linearly to rate_per_user (0: at once)
    max_inflight: int = 200  # arrivals in flight per scheduler user before new ones are dropped
    think_time: float = 0.0  # closed-loop users wait this long between calls
    steps: tuple[int, ...] = (5, 25, 100)  # ramp: user count per step
    step_seconds: float = 60.0  # ramp: time per step (ramp_fraction of it ramping, the rest holding)
    ramp_fraction: float = 1 / 3  # ramp: the share of each step spent ramping (NVCF's ramp: 1 of 3 min; long scaling: 5 of 20)

    def env(self) -> dict[str, str]:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[PREFIX + field.name.upper()] = str(value)
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Knobs:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is None:
                continue
            default = field.default
            if field.name in ("function_ids", "urls", "sse_urls", "kinds"):
                values[field.name] = _ids(raw)
            elif field.name == "steps":
                values[field.name] = tuple(int(v) for v in _ids(raw))
            elif isinstance(default, bool):
                values[field.name] = raw.strip().lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                values[field.name] = int(raw)
            elif isinstance(default, float):
                values[field.name] = float(raw)
            else:
                values[field.name] = raw
        return cls(**values)
