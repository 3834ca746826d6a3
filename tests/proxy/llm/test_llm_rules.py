"""The LLM gateway's rules without a server: `model` parsing, token rates and their 429,
usage read from streams, the generic auth errors, sticky sessions (proxy/llm/)."""

from __future__ import annotations

import orjson
import pytest

from fngate.proxy.errors import Degraded, Forbidden, MissingAuth, NotFound, PaymentRequired, Unauthorized
from fngate.proxy.llm.errors import LlmError, generic_auth_error
from fngate.proxy.llm.models import ModelSpecs, routing_key, split_model
from fngate.proxy.llm.sticky import StickySessions, session_key
from fngate.proxy.llm.token_limits import TokenLimits, go_duration, parse_token_rates
from fngate.proxy.llm.usage import SseScan, TokenMetrics
from fngate.proxy.routing.rate_limits import Bucket
from fngate.proxy.routing.snapshot import Endpoint, VersionRoute

FID = "0f0e0d0c-0b0a-4909-8807-060504030201"


def test_model_splits_at_the_first_slash_and_lowercases_a_uuid_key() -> None:
    assert split_model(f"{FID.upper()}/meta/llama-3") == (FID, "meta/llama-3")
    assert routing_key(f"{FID.upper()}/x") == FID
    assert routing_key("plain/x") == "plain" and routing_key("noslash") is None and routing_key("/x") is None
    for model, message in [
        (None, "model is required"),
        ("", "model is required"),
        (7, "model is required"),
        ("abc", "model prefix is required"),
        ("/m", "routing key is required before model"),
        (f"{FID}/", "model suffix is required after routing key"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}$"):
            split_model(model)


def test_model_specs_from_the_snapshot_text() -> None:
    text = orjson.dumps(
        [
            {"name": "a", "llmConfig": {"uris": ["/v1/chat/completions"], "tokenRateLimit": "10-S,5-W", "routingMethod": "x"}},
            {"name": "b", "llmConfig": {"tokenRateLimit": "broken"}},
        ]
    ).decode()
    specs = ModelSpecs().of(text)
    assert specs["a"].allows("/v1/chat/completions") and not specs["a"].allows("/v1/responses")
    assert [r.text for r in specs["a"].token_rates] == ["10-S", "5-W"] and specs["a"].token_rates[1].period == 604800
    assert specs["b"].allows("/v1/responses") and specs["b"].token_rates == ()  # an unreadable limit is not enforced
    assert ModelSpecs().of("") == {}


def test_token_rates_parse_as_nvcf_validates() -> None:
    assert [(r.count, r.period) for r in parse_token_rates("1000-S, 50-M,2-H,1-D,1-W")] == [
        (1000, 1),
        (50, 60),
        (2, 3600),
        (1, 86400),
        (1, 604800),
    ]
    for bad in ("0-S", "10", "10-X", "10-S,20-S", "-1-S", ""):
        with pytest.raises(ValueError):
            parse_token_rates(bad)


def test_go_duration_as_the_reset_header() -> None:
    assert go_duration(0.00001) == b"1ms"
    assert go_duration(0.25) == b"250ms"
    assert go_duration(1.25) == b"1.25s"
    assert go_duration(9.0) == b"9s"
    assert go_duration(90.5) == b"1m30.5s"
    assert go_duration(3725) == b"1h2m5s"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_admission_charges_the_estimate_then_the_reported_usage() -> None:
    clock = Clock()
    limits = TokenLimits(lambda key, rate, now: Bucket(rate, now), clock)
    rates = parse_token_rates("100-M")
    charge = limits.admit(rates, "nca-a", FID, 30)
    charge.settle(80)  # it used more than estimated: 20 left
    second = limits.admit(rates, "nca-a", FID, 30)  # 20 >= 1: admitted, in debt by 10
    second.settle(None)  # no usage reported: the estimate stands
    with pytest.raises(LlmError) as refused:
        limits.admit(rates, "nca-a", FID, 1)
    err = refused.value
    headers = dict(err.headers)
    assert (err.http_status, err.detail, err.body()[1]) == (429, "rate limit exceeded", b'{"message":"rate limit exceeded"}')
    # 11 tokens short at 100 a minute: 6.6 s
    assert headers[b"retry-after"] == b"7" and headers[b"x-ratelimit-reset-tokens"] == b"6.6s"
    assert headers[b"x-ratelimit-limit-tokens"] == b"100" and headers[b"x-ratelimit-remaining-tokens"] == b"0"
    assert b"x-should-retry" not in headers
    limits.admit(rates, "nca-b", FID, 1)  # another account: its own counter
    clock.now += 6.7
    limits.admit(rates, "nca-a", FID, 1)  # the window refilled it


def test_a_wait_over_a_minute_says_do_not_retry() -> None:
    limits = TokenLimits(lambda key, rate, now: Bucket(rate, now), Clock())
    rates = parse_token_rates("10-H")
    limits.admit(rates, "nca", FID, 50)
    with pytest.raises(LlmError) as refused:
        limits.admit(rates, "nca", FID, 1)
    assert dict(refused.value.headers)[b"x-should-retry"] == b"false"


def test_usage_from_an_event_stream_cut_anywhere() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    for cut in range(1, len(stream)):
        scan = SseScan()
        scan.feed(stream[:cut])
        scan.feed(stream[cut:])
        assert scan.usage == (3, 5), cut
    responses = SseScan()
    done = {"type": "response.completed", "response": {"id": "r", "usage": {"input_tokens": 2, "output_tokens": 4}}}
    responses.feed(b"event: response.completed\ndata: " + orjson.dumps(done) + b"\n\n")
    assert responses.usage == (2, 4) and responses.completed == done["response"]


def test_token_metric_text() -> None:
    m = TokenMetrics()
    m.add("/v1/chat/completions", True, FID, 3, 5)
    m.add("/v1/chat/completions", True, FID, 1, 0)
    text = m.render()
    assert (
        f'llm_api_gateway_llm_tokens_total{{endpoint="/v1/chat/completions",token_type="input",stream="true",function_id="{FID}"}} 4'
        in text
    )
    assert f'token_type="output",stream="true",function_id="{FID}"}} 5' in text


@pytest.mark.parametrize(
    "err, status, message",
    [
        (MissingAuth("x"), 401, "authentication failed"),
        (Unauthorized("Invalid or expired API key"), 401, "authentication failed"),
        (Forbidden("Missing resource entry"), 403, "permission denied"),
        (PaymentRequired("credits"), 403, "permission denied"),
        (NotFound("Function 'x': not found in account"), 404, "not found"),
        (Degraded("DEGRADED function cannot be invoked"), 400, "invalid request"),
    ],
)
def test_auth_errors_are_generic(err: Exception, status: int, message: str) -> None:
    got = generic_auth_error(err, openai=False)  # type: ignore[arg-type]
    assert (got.http_status, got.body()[1]) == (status, orjson.dumps({"message": message}))


def _route(*ids: str, draining: str = "") -> VersionRoute:
    return VersionRoute(FID, "v1", "f", "ACTIVE", endpoints=tuple(Endpoint(i, "127.0.0.1", 1, i == draining) for i in ids))


def test_a_session_keeps_its_instance_while_it_lives() -> None:
    sticky = StickySessions()
    first = sticky.pick(_route("a", "b"), "s1")
    assert first is not None
    assert all(sticky.pick(_route("a", "b", "c", "d"), "s1") == first for _ in range(5))  # new instances do not move it
    other = "b" if first.id == "a" else "a"
    moved = sticky.pick(_route("a", "b", draining=first.id), "s1")
    assert moved is not None and moved.id == other  # draining: it moves
    spread = {sticky.pick(_route("a", "b"), f"s-{i}").id for i in range(32)}  # type: ignore[union-attr]
    assert spread == {"a", "b"}
    assert StickySessions().pick(_route("a", "b"), "s-7") == StickySessions().pick(_route("b", "a"), "s-7")  # any process agrees


def test_session_keys_in_nvcf_order() -> None:
    assert session_key({"prompt_cache_key": "k"}, b"h", False) == "k"
    assert session_key({"prompt_cache_key": "k" * 257}, b"h", False) == "h"  # too long: not a key
    assert session_key({"conversation": {"id": "c"}}, b"h", True) == "c"
    assert session_key({"conversation": "c"}, None, True) == "c"
    assert session_key({"conversation": {"id": "c"}}, b"h", False) == "h"  # chat has no conversation
    assert session_key({}, None, False) is None
