"""The scenarios `fngate loadtest` knows: which Locust file, which load model, which defaults.

Defaults follow NVCF's load-testing guides where they give one (soak: 125 requests/s
per function; ramp: stepped users, each step ramping then holding) and are otherwise
sized for one machine. Every default can be overridden on the command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

LOCUSTFILES = Path(__file__).with_name("locustfiles")
KIB = 1024
MIB = 1024 * KIB


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    locustfile: str  # file in loadtests/locustfiles/
    model: str  # "closed" (users), "open" (arrival rate), "ramp" (stepped users)
    needs: str  # which function it calls: "http", "sse", "grpc", "pexec", "llm"
    duration: float  # seconds
    users: int = 0  # closed loop
    rate: float = 0.0  # open loop: arrivals per second (per function when per_function)
    per_function: bool = False
    ramps: bool = False  # open loop: the rate rises over the whole run (NVCF's hammer) unless --ramp-up says otherwise
    knobs: tuple[tuple[str, object], ...] = ()  # Knobs field defaults for this scenario
    kinds: tuple[str, ...] = ()  # open loop over several kinds of function at once (each at `rate`), soak
    about: str = ""
    # the local stack's autoscaler follows the run's steps (window and stabilisation scaled to
    # them), so a short run sees it scale up and down too
    scales: bool = False

    @property
    def path(self) -> Path:
        return LOCUSTFILES / self.locustfile


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "ramp",
            "ramp.py",
            "ramp",
            "http",
            180,
            knobs=(("steps", (5, 25, 100)),),
            about="stepped closed-loop users (NVCF: 5 → 25 → 100 → 500 → 1000), each step ramping then holding",
        ),
        Scenario(
            "scaling-ramp",
            "scaling_ramp.py",
            "ramp",
            "http",
            600,
            # NVCF's long scaling test: 100 -> 500 -> 200 -> 50 -> 1000 VUs, each stage a 5 min ramp and a
            # 15 min hold, 2 KiB requests, 50 ms replies; here 1/50th of the users, 2 min per stage
            knobs=(("steps", (2, 10, 4, 1, 20)), ("ramp_fraction", 0.25), ("body_size", 2 * KIB), ("delay", 0.05)),
            scales=True,
            about="NVCF's long scaling ramp (users 100 → 500 → 200 → 50 → 1000, scaled 1/50) driving the autoscaler up and down",
        ),
        Scenario(
            "llm",
            "llm_chat.py",
            "closed",
            "llm",
            60,
            users=8,
            knobs=(("stream_length", 64), ("body_size", 256)),
            about="OpenAI-compatible chat (streamed and not) on llm.<domain>: time to first token, inter-token gaps, tokens/s",
        ),
        Scenario(
            "hammer",
            "hammer.py",
            "open",
            "http",
            60,
            rate=1000,
            ramps=True,
            about="open-loop arrival rate rising to a high peak over the run, to find the breaking point",
        ),
        Scenario(
            "soak",
            "soak.py",
            "open",
            "http",
            600,
            rate=125,
            per_function=True,
            kinds=("http", "sse", "grpc"),
            knobs=(("stream_length", 4),),
            about="constant arrival rate per function (HTTP, SSE, gRPC at once) held for a long time (NVCF: 125/s for 48 h)",
        ),
        Scenario(
            "large-request",
            "large_request.py",
            "closed",
            "http",
            60,
            users=8,
            knobs=(("body_size", MIB),),
            about="large request bodies (default 1 MiB)",
        ),
        Scenario(
            "large-response",
            "large_response.py",
            "closed",
            "http",
            60,
            users=8,
            knobs=(("response_size", MIB),),
            about="large response bodies (default 1 MiB)",
        ),
        Scenario(
            "sse",
            "sse_stream.py",
            "closed",
            "sse",
            60,
            users=20,
            knobs=(("stream_length", 32), ("delay", 0.02)),
            about="SSE streams: time to first event, gaps between events, stream duration",
        ),
        Scenario(
            "grpc",
            "grpc_calls.py",
            "closed",
            "grpc",
            60,
            users=10,
            knobs=(("stream_length", 8),),
            about="gRPC unary, server-streaming and bidirectional calls to the Echo sample",
        ),
        Scenario(
            "pexec",
            "pexec_poll.py",
            "closed",
            "pexec",
            60,
            users=4,
            knobs=(("delay", 2.0), ("poll_seconds", 1)),
            about="legacy pexec: 202, status polls, result, as one logical request",
        ),
    )
}

# `smoke`: every scenario for a few seconds at a gentle load, so the suites cannot rot.
SMOKE_SECONDS = 4.0
SMOKE_OVERRIDES: dict[str, dict[str, Any]] = {
    "ramp": {"steps": (1, 2, 4)},
    "scaling-ramp": {"steps": (1, 4, 2, 1, 4)},
    "llm": {"users": 2, "stream_length": 8},
    "hammer": {"rate": 40.0},
    "soak": {"rate": 20.0},
    "large-request": {"users": 2, "body_size": 256 * KIB},
    "large-response": {"users": 2, "response_size": 256 * KIB},
    "sse": {"users": 2, "stream_length": 8, "delay": 0.01},
    "grpc": {"users": 2},
    "pexec": {"users": 2, "delay": 1.2, "poll_seconds": 1, "min_duration": 7.0},  # each call takes > 1 s
}
