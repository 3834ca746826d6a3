"""The llm scenario's token figures, from the entries llm_user.py records.

`chat: stream` and `chat: completion` carry each response's output tokens as their length,
so Locust's average content size times the count is the tokens served; `chat: tpot` is the
time per output token of each response, whose inverse is that response's tokens/s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .slis import EntryStats


def token_figures(entries: Iterable[EntryStats], duration: float) -> dict[str, Any]:
    by_name = {e.name: e for e in entries if e.type == "LLM"}
    responses = [by_name[n] for n in ("chat: stream", "chat: completion") if n in by_name]
    output = round(sum(e.avg_size * (e.requests - e.failures) for e in responses))
    tpot, ttft, itl = by_name.get("chat: tpot"), by_name.get("chat: ttft"), by_name.get("chat: itl")
    return {
        "responses": sum(e.requests for e in responses),
        "streams": by_name["chat: stream"].requests if "chat: stream" in by_name else 0,
        "output_tokens": output,
        "tokens_per_s": output / duration if duration > 0 else 0.0,
        # a response's tokens/s is 1000 / its ms per token: the median of one is the inverse of the other's
        "stream_tokens_per_s_p50": round(1000.0 / tpot.p50_ms, 1) if tpot and tpot.p50_ms > 0 else None,
        "ttft_p50_ms": ttft.p50_ms if ttft else None,
        "ttft_p95_ms": ttft.p95_ms if ttft else None,
        "itl_p50_ms": itl.p50_ms if itl else None,
        "itl_p95_ms": itl.p95_ms if itl else None,
    }
