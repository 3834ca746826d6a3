"""How an invocation of a sample function is addressed and shaped (no Locust here).

The same request can reach a function three ways: Host-routed (`{functionId}.{domain}`,
the domain being `invocation.localhost` unless set), header-routed (`function-id: ...`),
or, with `direct`, straight at an instance with no gateway in between. Knobs become the
echo sample's query parameters (`delay`, `size`) and the SSE sample's body fields.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from .knobs import Knobs

SSE_PATH = "/v1/chat/completions"


def echo_path(knobs: Knobs, path: str | None = None) -> str:
    """`path` (default the knobs' invocation path) with the echo sample's `delay`/`size` knobs as query."""
    path = knobs.path if path is None else path
    query = []
    if knobs.delay:
        query.append(f"delay={knobs.delay:g}")
    if knobs.response_size:
        query.append(f"size={knobs.response_size}")
    return path + ("?" + "&".join(query) if query else "")


def echo_headers(knobs: Knobs) -> dict[str, str]:
    """The same knobs as the echo sample's `Echo-Delay`/`Echo-Size` headers, for calls whose
    query does not reach the instance (pexec sends the function's inferenceUrl, as NVCF)."""
    headers = {}
    if knobs.delay:
        headers["Echo-delay"] = f"{knobs.delay:g}"
    if knobs.response_size:
        headers["Echo-size"] = str(knobs.response_size)
    return headers


def body(size: int) -> bytes:
    return b"x" * size


def auth_headers(knobs: Knobs) -> dict[str, str]:
    headers = {}
    if knobs.key and not knobs.direct:
        headers["Authorization"] = f"Bearer {knobs.key}"
    if knobs.poll_seconds:
        headers["NVCF-POLL-SECONDS"] = str(knobs.poll_seconds)
    return headers


def routed_headers(knobs: Knobs, function_id: str, mode: str) -> dict[str, str]:
    """Headers that route one request to `function_id`, Host- or header-routed."""
    headers = auth_headers(knobs)
    if knobs.direct or not function_id:
        return headers
    if mode == "host":
        headers["Host"] = f"{function_id}.{knobs.domain}"
    else:
        headers["function-id"] = function_id
    return headers


def route_cycle(knobs: Knobs) -> Iterator[tuple[str, str]]:
    """(function id, routing mode) pairs, spread over the functions and modes the knobs name."""
    modes = ("host", "header") if knobs.routing == "both" else (knobs.routing,)
    ids = list(knobs.function_ids) or [""]
    pairs = [(f, m) for f in ids for m in modes]
    random.shuffle(pairs)  # users should not march in step
    return itertools.cycle(pairs)


def sse_body(knobs: Knobs) -> dict:
    return {
        "model": "fngate/sse",
        "stream": True,
        "messages": [{"role": "user", "content": "x" * max(knobs.body_size, 1)}],
        "max_tokens": knobs.stream_length,
        "interval": knobs.delay,
    }
