"""The LLM gateway (spec part 2, section 8) against a real `fngate serve` and real
`fngate/llm` instances, driven by the official OpenAI SDK (sync and async, streaming and
not) and by curl: routing by `model`, NVCF's validation and auth messages, the model
listing, the `uris` allow-list, token limits, sticky sessions and disconnects."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import start_serve
from tests.e2e.helpers import write_config
from tests.e2e.llm_support import HOST, MODEL, Gateway, World, llm_model, stream_body
from tests.e2e.test_multiprocess import _requests_by_worker
from tests.support.net import free_port
from tests.support.serve_api import gpu_spec
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("llm")
    log = data / "access.log"
    sp = start_serve(data / "fngate", "--access-log", str(log))
    try:
        yield World(sp, log)
    finally:
        sp.stop()


# -- routing ------------------------------------------------------------------------------


def test_sdk_chat_routes_by_model_and_the_instance_sees_the_model_name(world: World) -> None:
    client = world.sdk()
    got = client.chat.completions.create(
        model=f"{world.fid.upper()}/{MODEL}", messages=[{"role": "user", "content": "one two three"}], max_tokens=4
    )
    assert got.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert got.model == MODEL  # rewritten: the key (upper-cased here, lowercased by the gateway) is gone, the slash kept
    assert got.usage is not None and (got.usage.prompt_tokens, got.usage.completion_tokens) == (3, 4)
    raw = client.chat.completions.with_raw_response.create(model=f"{world.fid}/{MODEL}", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-request-id"] and raw.headers["nvcf-reqid"] == raw.headers["x-request-id"]


def test_sdk_chat_streams_event_by_event(world: World) -> None:
    client = world.sdk()
    started = time.monotonic()
    arrivals = []
    text = []
    usage = None
    stream = client.chat.completions.create(
        model=f"{world.fid}/{MODEL}", messages=[{"role": "user", "content": "go"}], max_tokens=6, stream=True, extra_body={"interval": 0.3}
    )
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text) == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert usage is not None and usage.completion_tokens == 6
    # relayed as generated (0.3 s apart), not buffered until the end
    assert arrivals[-1] - arrivals[0] > 1.2, arrivals


async def test_async_sdk_chat_embeddings_and_responses(world: World) -> None:
    client = world.asdk()
    model = f"{world.fid}/{MODEL}"
    chats = await asyncio.gather(
        *(client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"n {i}"}], max_tokens=2) for i in range(4))
    )
    assert all(c.choices[0].message.content == "tok0 tok1" for c in chats)
    stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a"}], max_tokens=3, stream=True)
    parts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(parts) == "tok0 tok1 tok2"
    emb = await client.embeddings.create(model=model, input=["alpha beta", "gamma"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8 and emb.usage.prompt_tokens == 3
    resp = await client.responses.create(model=model, input="say three words", max_output_tokens=3)
    assert resp.output_text == "tok0 tok1 tok2" and resp.usage is not None and resp.usage.output_tokens == 3
    events = [e.type async for e in await client.responses.create(model=model, input="x", max_output_tokens=2, stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.completed" and events.count("response.output_text.delta") == 2
    await client.close()


def test_sdk_responses_collapsed_and_streamed(world: World) -> None:
    client = world.sdk()
    resp = client.responses.create(model=f"{world.fid}/{MODEL}", input="a b", max_output_tokens=2)
    assert resp.output_text == "tok0 tok1" and resp.model == MODEL and resp.status == "completed"
    with client.responses.stream(model=f"{world.fid}/{MODEL}", input="a b", max_output_tokens=3) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "tok0 tok1 tok2" and final.usage is not None and final.usage.input_tokens == 2


def test_chat_stream_over_http2_relays_event_by_event(world: World) -> None:
    """h2c with prior knowledge on the gateway's HTTP port: each chunk is its own event as
    the instance makes it (0.3 s apart), the usage chunk then `[DONE]` end it; the OpenAI
    SDK over the same HTTP/2 client reads the same stream."""
    body = stream_body(f"{world.fid}/{MODEL}", 5, 0.3)
    headers = world.headers(world.admin)
    with httpx.Client(http1=False, http2=True, timeout=30) as h2:
        started = time.monotonic()
        arrivals: list[float] = []
        events: list[str] = []
        with h2.stream("POST", world.base + "/v1/chat/completions", json=body, headers=headers) as resp:
            assert resp.http_version == "HTTP/2" and resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream") and resp.headers["x-request-id"]
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
                    events.append(line[6:])
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "tok0 tok1 tok2 tok3 tok4" and chunks[-1]["usage"]["completion_tokens"] == 5
        assert len(chunks) == 7  # one event per token, the finish chunk, the usage chunk: none merged or split
        assert arrivals[4] - arrivals[0] > 1.0, arrivals  # relayed as generated, not held to the end

        sdk = world.sdk(http_client=h2)
        raw = sdk.chat.completions.with_raw_response.create(
            model=f"{world.fid}/{MODEL}", messages=[{"role": "user", "content": "go"}], max_tokens=3, stream=True
        )
        assert raw.http_response.http_version == "HTTP/2"
        parts = [c.choices[0].delta.content for c in raw.parse() if c.choices and c.choices[0].delta.content]
        assert "".join(parts) == "tok0 tok1 tok2"


def test_curl_chat_stream_and_x_request_id(world: World) -> None:
    body = json.dumps({"model": f"{world.fid}/{MODEL}", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 3})
    done = _curl(world, "/v1/chat/completions", "-H", f"Authorization: Bearer {world.admin}", "-H", "X-Request-ID: my-trace-42", "-d", body)
    head, _, events = done.stdout.partition("\n\n")  # (text mode reads CRLF as LF)
    assert head.startswith("HTTP/1.1 200") and "x-request-id: my-trace-42" in head.lower() and "text/event-stream" in head
    data = [ln[6:] for ln in events.splitlines() if ln.startswith("data: ")]
    assert len(data) >= 2, done.stdout
    assert data[-1] == "[DONE]" and json.loads(data[-2])["usage"]["completion_tokens"] == 3
    assert [json.loads(d)["model"] for d in data[:-1]] == [MODEL] * (len(data) - 1)


def _curl(world: World, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    args = (*args, "-H", "Content-Type: application/json") if "-d" in args else args
    return subprocess.run(world.curl(path, *args), capture_output=True, text=True, timeout=30, check=True)


def _curl_json(world: World, path: str, *args: str) -> tuple[int, Any]:
    """The status and JSON body curl got (text mode reads the head's CRLF as LF)."""
    head, _, body = _curl(world, path, *args).stdout.partition("\n\n")
    return int(head.split()[1]), json.loads(body)


def test_curl_sees_the_validation_and_auth_answers_and_the_listing(world: World) -> None:
    """What a shell user checks: each class of answer as curl prints it."""
    auth = ("-H", f"Authorization: Bearer {world.admin}")
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    assert _curl_json(world, "/v1/chat/completions", "-d", json.dumps({**chat, "model": "nokey"})) == (
        400,
        {"message": "model prefix is required"},
    )
    model = f"{world.fid}/{MODEL}"
    assert _curl_json(world, "/v1/chat/completions", "-d", json.dumps({**chat, "model": model})) == (
        401,
        {"message": "bearer authorization is required"},
    )
    other = ("-H", f"Authorization: Bearer {world.other}")
    assert _curl_json(world, "/v1/chat/completions", *other, "-d", json.dumps({**chat, "model": model})) == (404, {"message": "not found"})
    assert _curl_json(world, "/v1/embeddings", *auth, "-d", json.dumps({"model": model, "input": []})) == (
        400,
        {"message": "'input' array must not be empty"},
    )
    status, listing = _curl_json(world, "/v1/models", *auth)
    assert status == 200 and listing["object"] == "list" and f"{world.fid}/{MODEL}" in {m["id"] for m in listing["data"]}
    ok, reply = _curl_json(world, "/v1/chat/completions", *auth, "-d", json.dumps({**chat, "model": model}))
    assert ok == 200 and reply["choices"][0]["message"]["content"] == "tok0" and reply["model"] == MODEL


def test_other_hosts_and_paths(world: World) -> None:
    h = {"Host": HOST}
    assert httpx.get(world.base + "/healthz", headers=h).status_code == 200
    ready = httpx.get(world.base + "/readyz", headers=h)
    assert ready.status_code == 200 and ready.content == b""
    info = httpx.get(world.base + "/info", headers=h)
    assert info.status_code == 200 and info.json()["version"]
    wrong = httpx.post(world.base + "/info", headers=h)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert httpx.get(world.base + "/v1/nothing", headers=h).status_code == 404
    chat = httpx.get(world.base + "/v1/chat/completions", headers=h)
    assert chat.status_code == 405 and chat.headers["allow"] == "POST"
    # NVCF's second host, llm.invocation.<domain>, is the same gateway
    inv = world.post("/v1/chat/completions", {"model": f"{world.fid}/{MODEL}", "messages": [{"role": "user", "content": "x"}]},
                     world.admin, {"Host": "llm.invocation.fngate.test"})  # fmt: skip
    assert inv.status_code == 200 and inv.json()["model"] == MODEL
    # without the llm. host the same path is not the LLM gateway
    assert httpx.post(world.base + "/v1/chat/completions", json={"model": f"{world.fid}/{MODEL}"}).status_code == 404


# -- validation and auth ------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, message",
    [
        (None, "model is required"),
        ("no-slash", "model prefix is required"),
        ("/llama", "routing key is required before model"),
    ],
)
def test_validation_messages_before_auth(world: World, model: str | None, message: str) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}]}
    if model is not None:
        body["model"] = model
    r = world.post("/v1/chat/completions", body)  # no key at all: no routing key, no auth (8.3)
    assert (r.status_code, r.json()) == (400, {"message": message})


def test_validation_messages_after_auth(world: World) -> None:
    fid = world.fid
    cases = [
        ("/v1/chat/completions", {"model": f"{fid}/"}, "model suffix is required after routing key"),
        ("/v1/chat/completions", {"model": f"{fid}/{MODEL}"}, "messages is required"),
        ("/v1/embeddings", {"model": f"{fid}/{MODEL}"}, "input is required"),
        ("/v1/embeddings", {"model": f"{fid}/{MODEL}", "input": []}, "'input' array must not be empty"),
        ("/v1/embeddings", {"model": f"{fid}/{MODEL}", "input": ["x"] * 2049}, "'input' array must have at most 2048 entries"),
        ("/v1/responses", {"model": f"{fid}/{MODEL}"}, "input is required"),
        ("/v1/responses", {"model": f"{fid}/chat-only", "input": "x"}, 'model "chat-only" does not support /v1/responses'),
        ("/v1/chat/completions", {"model": "not-a-uuid/x", "messages": [{"role": "user", "content": "x"}]}, "invalid request"),
    ]
    for path, body, message in cases:
        r = world.post(path, body, world.admin)
        assert (r.status_code, r.json()) == (400, {"message": message}), (path, body)
    r = world.post("/v1/chat/completions", {"model": f"{fid}/{MODEL}", "messages": []}, world.admin, headers={"X-Priority": "1"})
    assert (r.status_code, r.json()) == (400, {"message": "X-Priority is a reserved header and cannot be set by the client"})
    # a model not in the function's list, or on an endpoint its uris leave out (chat only here), still passes
    assert world.chat(f"{fid}/unlisted-model", world.admin, max_tokens=1).status_code == 200
    assert world.post("/v1/embeddings", {"model": f"{fid}/chat-only", "input": "x"}, world.admin).status_code == 200


MESSAGES = [{"role": "user", "content": "x"}]


def _sdk_refusals(world: World) -> list[tuple[str, dict[str, Any], str]]:
    """(endpoint, the SDK call's arguments, NVCF's 400 message) for each refusal an SDK can provoke."""
    model = f"{world.fid}/{MODEL}"
    return [
        ("chat", {"model": "", "messages": MESSAGES}, "model is required"),
        ("chat", {"model": "no-slash", "messages": MESSAGES}, "model prefix is required"),
        ("chat", {"model": "/llama", "messages": MESSAGES}, "routing key is required before model"),
        ("chat", {"model": f"{world.fid}/", "messages": MESSAGES}, "model suffix is required after routing key"),
        ("chat", {"model": model, "messages": []}, "messages is required"),
        ("chat", {"model": "not-a-uuid/x", "messages": MESSAGES}, "invalid request"),
        ("chat", {"model": model, "messages": MESSAGES, "extra_body": {"Model": f"{uuid.uuid4()}/x"}}, "model targets a different routing key"),
        ("chat", {"model": model, "messages": MESSAGES, "extra_headers": {"X-Priority": "1"}}, "X-Priority is a reserved header and cannot be set by the client"),
        ("embeddings", {"model": model, "input": []}, "'input' array must not be empty"),
        ("responses", {"model": f"{world.fid}/chat-only", "input": "x"}, 'model "chat-only" does not support /v1/responses'),
    ]  # fmt: skip


def _endpoint(client: openai.OpenAI | openai.AsyncOpenAI, name: str) -> Any:
    return {"chat": client.chat.completions, "embeddings": client.embeddings, "responses": client.responses}[name]


def test_the_sdk_raises_each_validation_message(world: World) -> None:
    client = world.sdk()
    for name, kwargs, message in _sdk_refusals(world):
        with pytest.raises(openai.BadRequestError) as caught:
            _endpoint(client, name).create(**kwargs)
        assert (caught.value.status_code, caught.value.body) == (400, {"message": message}), (name, kwargs)
        assert message in str(caught.value)


async def test_the_async_sdk_raises_each_validation_and_auth_error(world: World) -> None:
    client = world.asdk()
    for name, kwargs, message in _sdk_refusals(world):
        with pytest.raises(openai.BadRequestError) as caught:
            await _endpoint(client, name).create(**kwargs)
        assert caught.value.body == {"message": message}, (name, kwargs)
    model = f"{world.fid}/{MODEL}"
    for key, error, message in (
        ("nvapi-wrong", openai.AuthenticationError, "authentication failed"),
        (world.no_invoke, openai.PermissionDeniedError, "permission denied"),
        (world.other, openai.NotFoundError, "not found"),
    ):
        with pytest.raises(error) as raised:
            await world.asdk(key).chat.completions.create(model=model, messages=MESSAGES)
        assert raised.value.body == {"message": message}
    await client.close()


def test_generic_auth_errors(world: World) -> None:
    model = f"{world.fid}/{MODEL}"
    assert (world.chat(model).status_code, world.chat(model).json()) == (401, {"message": "bearer authorization is required"})
    r = world.post(
        "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "x"}]}, headers={"Authorization": "Basic abc"}
    )
    assert (r.status_code, r.json()) == (401, {"message": "bearer authorization is required"})
    assert (world.chat(model, "nvapi-wrong").status_code, world.chat(model, "nvapi-wrong").json()) == (
        401,
        {"message": "authentication failed"},
    )
    assert (world.chat(model, world.no_invoke).status_code, world.chat(model, world.no_invoke).json()) == (
        403,
        {"message": "permission denied"},
    )
    assert (world.chat(model, world.other).status_code, world.chat(model, world.other).json()) == (404, {"message": "not found"})
    unknown = f"{uuid.uuid4()}/{MODEL}"
    assert (world.chat(unknown, world.admin).status_code, world.chat(unknown, world.admin).json()) == (404, {"message": "not found"})
    # the narrow key names the main function only: the limited one is not its to invoke
    assert world.chat(f"{world.lim_fid}/tiny", world.narrow).status_code == 403
    assert world.chat(model, world.narrow, max_tokens=1).status_code == 200
    # the SDK raises its typed errors from these bodies
    with pytest.raises(openai.AuthenticationError, match="authentication failed"):
        world.sdk("nvapi-wrong").chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        world.sdk(world.other).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])


def test_openai_error_shape_on_request(world: World) -> None:
    r = world.post("/v1/chat/completions", {"messages": []}, headers={"X-Error-Format": "openai"})
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "model is required", "type": "invalid_request_error", "param": None, "code": "400"}}


def test_model_listing_per_key(world: World) -> None:
    def listed(key: str) -> set[str]:
        return {m.id for m in world.sdk(key).models.list()}

    assert listed(world.admin) >= {f"{world.fid}/{MODEL}", f"{world.fid}/chat-only", f"{world.lim_fid}/tiny"}
    assert listed(world.narrow) == {f"{world.fid}/{MODEL}", f"{world.fid}/chat-only"}
    assert listed(world.other) == set()
    r = world.models("nvapi-wrong")
    assert (r.status_code, r.json()) == (401, {"message": "authentication failed"})
    assert world.sdk().models.list().object == "list"


async def test_the_async_sdk_lists_the_models_of_a_key(world: World) -> None:
    client = world.asdk(world.narrow)
    assert {m.id async for m in client.models.list()} == {f"{world.fid}/{MODEL}", f"{world.fid}/chat-only"}
    await client.close()


def test_shared_and_public_functions_follow_nvcfs_rules(world: World) -> None:
    """Spec 5: both functions are shared with `shared-team`, whose key chats with them and
    lists their models; its key without `authorized-functions` is refused (403) and lists
    none. A public version of another account is NVCF's 402, generic 403 here."""
    model = f"{world.fid}/{MODEL}"
    got = world.sdk(world.shared).chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
    assert got.choices[0].message.content == "tok0 tok1" and got.model == MODEL
    assert {m.id for m in world.sdk(world.shared).models.list()} == {model, f"{world.fid}/chat-only", f"{world.lim_fid}/tiny"}
    assert {m.id for m in world.sdk(world.shared_own_only).models.list()} == set()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        world.sdk(world.shared_own_only).chat.completions.create(model=model, messages=MESSAGES)
    assert refused.value.body == {"message": "permission denied"}
    # made public by the super admin (the account twin), for this check only
    public = f"/v2/nvcf/accounts/fngate/authorizations/functions/{world.lim_fid}/versions/{world.lim_vid}"
    world.api.call("POST", public, {"authorizedParties": [{"ncaId": "*"}]})
    try:
        world.api.wait(lambda: world.chat(f"{world.lim_fid}/tiny", world.other).status_code == 403, "the gateway sees it public", 30, 0.1)
        r = world.chat(f"{world.lim_fid}/tiny", world.other)
        assert r.json() == {"message": "permission denied"}
    finally:
        world.api.call("DELETE", public)
    world.api.wait(lambda: world.chat(f"{world.lim_fid}/tiny", world.other).status_code == 404, "private again", 30, 0.1)


# -- tokens -------------------------------------------------------------------------------


def test_token_limit_429_then_admitted_after_the_window(world: World) -> None:
    model = f"{world.lim_fid}/tiny"  # 10-S: 10 tokens a second
    deadline = time.monotonic() + 20
    while (first := world.chat(model, world.admin, max_tokens=100)).status_code == 429:  # earlier tests' debt
        assert time.monotonic() < deadline
        time.sleep(float(first.headers["retry-after"]))
    assert first.status_code == 200  # admitted on the estimate, then charged the ~100 tokens it used
    refused = world.chat(model, world.admin, max_tokens=1)
    assert refused.status_code == 429 and refused.json() == {"message": "rate limit exceeded"}
    wait = int(refused.headers["retry-after"])
    assert 5 <= wait <= 11 and refused.headers["x-ratelimit-limit-tokens"] == "10"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0" and refused.headers["x-ratelimit-reset-tokens"].endswith("s")
    with pytest.raises(openai.RateLimitError):
        world.sdk().chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=1)
    # another account (llm-limited is shared with it) has its own counter
    assert world.chat(model, world.shared, max_tokens=1).status_code == 200
    assert world.chat(model, world.admin, max_tokens=1).status_code == 429
    time.sleep(wait)
    assert world.chat(model, world.admin, max_tokens=1).status_code == 200
    metrics = world.metrics()
    line = f'llm_api_gateway_llm_tokens_total{{endpoint="/v1/chat/completions",token_type="output",stream="false",function_id="{world.lim_fid}"}}'
    assert line in metrics and float(metrics.split(line)[1].split()[0]) >= 101


def test_usage_metric_counts_streamed_tokens(world: World) -> None:
    def value(kind: str) -> float:
        key = f'llm_api_gateway_llm_tokens_total{{endpoint="/v1/chat/completions",token_type="{kind}",stream="true",function_id="{world.fid}"}}'
        text = world.metrics()
        return float(text.split(key)[1].split()[0]) if key in text else 0.0

    before = value("output")
    stream = world.sdk().chat.completions.create(
        model=f"{world.fid}/{MODEL}", messages=[{"role": "user", "content": "a"}], max_tokens=5, stream=True
    )
    assert len(list(stream)) == 7  # 5 tokens, the finish chunk, the usage chunk
    assert value("output") == before + 5


def test_access_log_lines_carry_the_usage_the_response_reported(world: World) -> None:
    """`--access-log`: an LLM call's line has the instance's token usage, from the JSON body
    or from the stream's final chunk (and a collapsed /v1/responses' input/output tokens)."""
    client = world.sdk()
    tag = uuid.uuid4().hex[:8]
    model = f"{world.fid}/{MODEL}"
    plain = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "one two three"}], max_tokens=4, extra_headers={"X-Request-ID": f"plain-{tag}"}
    )
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "four five"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Request-ID": f"streamed-{tag}"},
        )
    )
    streamed = chunks[-1].usage
    resp = client.responses.create(model=model, input="a b c d e", max_output_tokens=2, extra_headers={"X-Request-ID": f"resp-{tag}"})
    assert plain.usage is not None and streamed is not None and resp.usage is not None

    def lines() -> dict[str, dict[str, Any]]:
        assert world.access_log is not None
        text = world.access_log.read_text() if world.access_log.exists() else ""
        found = (json.loads(ln) for ln in text.splitlines())
        return {line["request_id"]: line for line in found if line["request_id"].endswith(tag)}

    world.api.wait(lambda: len(lines()) == 3, "the three access log lines", 10, 0.1)
    got = lines()

    def tokens(rid: str) -> tuple[int, int, int]:
        line = got[f"{rid}-{tag}"]
        assert line["function_id"] == world.fid and line["status"] == 200
        return line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]

    assert tokens("plain") == (plain.usage.prompt_tokens, plain.usage.completion_tokens, plain.usage.total_tokens) == (3, 4, 7)
    assert tokens("streamed") == (streamed.prompt_tokens, streamed.completion_tokens, streamed.total_tokens) == (2, 6, 8)
    assert tokens("resp") == (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (5, 2, 7)


# -- sessions and disconnects ---------------------------------------------------------------


def test_sticky_sessions_stay_on_one_instance(world: World) -> None:
    client = world.sdk()

    def served_by(session: str | None, cache_key: str | None = None) -> str:
        headers = {"x-multi-turn-session-id": session} if session else {}
        extra = {"prompt_cache_key": cache_key} if cache_key else {}
        raw = client.chat.completions.with_raw_response.create(
            model=f"{world.fid}/{MODEL}", messages=[{"role": "user", "content": "x"}], max_tokens=1, extra_headers=headers, extra_body=extra
        )
        if session or cache_key:
            assert raw.headers["x-multi-turn-session-id"] == (cache_key or session)
        return str(raw.parse().system_fingerprint)

    for session in ("alpha", "beta", "gamma"):
        assert len({served_by(session) for _ in range(8)}) == 1, session
    assert len({served_by(f"s-{i}") for i in range(16)}) == 2, "sessions should spread over both instances"
    assert len({served_by(None, "cache-1") for _ in range(6)}) == 1


async def test_async_sdk_concurrent_turns_of_a_session_share_an_instance(world: World) -> None:
    client = world.asdk()

    async def served_by(session: str) -> str:
        raw = await client.chat.completions.with_raw_response.create(
            model=f"{world.fid}/{MODEL}", messages=MESSAGES, max_tokens=1, extra_headers={"x-multi-turn-session-id": session}
        )
        assert raw.headers["x-multi-turn-session-id"] == session
        return str(raw.parse().system_fingerprint)

    for session in ("delta", "epsilon"):
        assert len(set(await asyncio.gather(*(served_by(session) for _ in range(6))))) == 1, session
    assert len(set(await asyncio.gather(*(served_by(f"t-{i}") for i in range(16))))) == 2
    await client.close()


def _cancelled(world: World) -> int:
    return sum(s["cancelled"] for s in world.instance_stats())


def _long_stream() -> dict[str, Any]:
    """The sample streams 2000 tokens 50 ms apart: ended only by a disconnect."""
    return {"messages": [{"role": "user", "content": "long"}], "max_tokens": 2000, "stream": True, "extra_body": {"interval": 0.05}}


def test_closing_an_sdk_stream_cancels_the_instance_request(world: World) -> None:
    before = _cancelled(world)
    stream = world.sdk().chat.completions.create(model=f"{world.fid}/{MODEL}", **_long_stream())
    first = next(iter(stream))
    assert first.choices[0].delta.content == "tok0"
    stream.close()
    world.api.wait(lambda: _cancelled(world) == before + 1, "the instance's request cancelled", 10)
    assert sum(s["active"] for s in world.instance_stats()) == 0


async def test_closing_an_async_sdk_stream_cancels_the_instance_request(world: World) -> None:
    before = _cancelled(world)
    client = world.asdk()
    streams = [await client.chat.completions.create(model=f"{world.fid}/{MODEL}", **_long_stream()) for _ in range(2)]
    for stream in streams:
        async for chunk in stream:
            assert chunk.choices[0].delta.content == "tok0"
            break
        await stream.close()
    await world.api.aio.wait(lambda: _cancelled(world) == before + 2, "both instance requests cancelled", 10)
    assert sum(s["active"] for s in world.instance_stats()) == 0
    await client.close()


def test_client_disconnect_cancels_the_instance_request(world: World) -> None:
    cancelled = functools.partial(_cancelled, world)
    before = cancelled()
    body = stream_body(f"{world.fid}/{MODEL}", 2000, 0.05)
    with httpx.stream(
        "POST", world.base + "/v1/chat/completions", content=json.dumps(body).encode(),
        headers=world.headers(world.admin), timeout=30,
    ) as resp:  # fmt: skip
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
    world.api.wait(lambda: cancelled() == before + 1, "the instance's request cancelled", 10)
    assert sum(s["active"] for s in world.instance_stats()) == 0
    # without streaming too: the SDK gives up after 0.5 s of a 100 s answer and hangs up
    with pytest.raises(openai.APITimeoutError):
        world.sdk(timeout=0.5).chat.completions.create(
            model=f"{world.fid}/{MODEL}", messages=MESSAGES, max_tokens=2000, extra_body={"interval": 0.05}
        )
    world.api.wait(lambda: cancelled() == before + 2, "the non-streamed request cancelled", 10)
    assert sum(s["active"] for s in world.instance_stats()) == 0


def test_a_token_budget_holds_across_two_workers_on_redis(fngate_serve: Any, tmp_path: Path, redis_url: str) -> None:
    """`--workers 2 --store redis://`: the token counter of (account, function) is one for
    both workers (leased from Redis, no Redis call per request). 200 tokens an hour, ~42
    a request: one shared budget admits 4 to 7 (rate_lease.py's accuracy: a batch of 20
    unspent per worker, one request's overshoot per worker); two separate ones would
    admit 5 each."""
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    gw = Gateway(fngate_serve("--config", str(config), "--workers", "2", "--store", redis_url))
    fid, _ = gw.launch("llm-shared-budget", llm_model("m", tokenRateLimit="200-H"))
    codes = []
    for _ in range(24):  # a new connection each: the kernel spreads them over both workers
        codes.append(gw.post("/v1/chat/completions", {"model": f"{fid}/m", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 40}, gw.admin).status_code)  # fmt: skip
        time.sleep(0.1)  # the leases run in the background
    per_worker = _requests_by_worker(gw.metrics())
    assert len(per_worker) == 2, per_worker
    assert 4 <= codes.count(200) <= 7 and set(codes) == {200, 429}, codes


def test_the_uris_allow_list_on_chat_and_embeddings_when_switched_on(fngate_serve: Any) -> None:
    """FNGATE_LLM_URI_ALLOWLIST=1 (NVCF's MODEL_URI_ALLOWLIST_ENABLED): a model's `uris`
    hold for every endpoint, not only /v1/responses."""
    gw = Gateway(fngate_serve(env={"FNGATE_LLM_URI_ALLOWLIST": "1"}))
    fid, _ = gw.launch("llm-allow", llm_model("emb", ["/v1/embeddings"]), concurrency=4)
    chat = gw.chat(f"{fid}/emb", gw.admin)
    assert (chat.status_code, chat.json()) == (400, {"message": 'model "emb" does not support /v1/chat/completions'})
    emb = gw.post("/v1/embeddings", {"model": f"{fid}/emb", "input": "x"}, gw.admin)
    assert emb.status_code == 200 and emb.json()["usage"]["prompt_tokens"] == 1


# -- function states ------------------------------------------------------------------------


def test_a_degraded_function_gets_nvcfs_400(fngate_serve: Any, tmp_path: Path) -> None:
    """An LLM function served by a static endpoint that goes away is DEGRADED (every
    instance lost, and the static backend does not replace it): chat gets NVCF's generic
    400 (`DEGRADED -> 400`, spec part 2, 8.3), not a 404 or a 503."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fngate.backends.samples.llm", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), 15, "the external LLM server")
        config = write_config(
            tmp_path / "fngate.yaml",
            backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static", "probeInterval": 0.2, "unhealthyAfter": 2}],
        )
        gw = Gateway(fngate_serve("--config", str(config)))
        api = gw.api
        fid, vid = gw.launch("llm-degraded", spec=gpu_spec(backend="edge", configuration={"endpoints": [f"http://127.0.0.1:{port}"]}))
        body = {"model": f"{fid}/{MODEL}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

        def chat(**extra: str) -> httpx.Response:
            return gw.post("/v1/chat/completions", body, gw.admin, extra)

        api.wait(lambda: chat().status_code == 200, "the gateway routes the function", 30, 0.2)
        proc.terminate()
        proc.wait(10)
        api.wait_status(fid, vid, "DEGRADED")
        api.wait(lambda: chat().status_code == 400, "the gateway sees the function DEGRADED", 30, 0.2)
        r = chat()
        assert (r.status_code, r.json()) == (400, {"message": "invalid request"})
        assert r.headers["x-request-id"]
        shaped = chat(**{"X-Error-Format": "openai"})
        assert (shaped.status_code, shaped.json()["error"]["message"]) == (400, "invalid request")
        with pytest.raises(openai.BadRequestError, match="invalid request"):
            gw.sdk().chat.completions.create(model=f"{fid}/{MODEL}", messages=[{"role": "user", "content": "x"}])
        assert api.status(fid, vid) == "DEGRADED"  # still: the 400s were not a state in passing
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# -- long streams ----------------------------------------------------------------------------


def _stream(gw: Gateway, model: str, tokens: int, interval: float, timeout: float = 30) -> tuple[list[str], BaseException | None]:
    """The `data:` payloads of a chat stream read with httpx, and the error that ended it early."""
    body = stream_body(model, tokens, interval)
    events: list[str] = []
    try:
        with httpx.stream("POST", gw.base + "/v1/chat/completions", json=body, headers=gw.headers(gw.admin), timeout=timeout) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():  # (kept one by one: a cut stream raises midway)
                if line.startswith("data: "):
                    events.append(line[6:])
    except httpx.HTTPError as exc:
        return events, exc
    return events, None


def _tokens(events: list[str]) -> int:
    return sum(1 for e in events if e != "[DONE]" and any(c["delta"].get("content") for c in json.loads(e)["choices"]))


def test_a_stream_outlasting_the_idle_timeout_is_not_cut_a_silent_one_is(fngate_serve: Any) -> None:
    """`--stream-idle-timeout 1`: a stream of 4 s with a token every 0.2 s completes (the
    limit is on silence, not on the stream's length, unlike NVCF's 60 s write timeout); one
    whose instance goes silent for 3 s after its first token is ended by the gateway."""
    gw = Gateway(fngate_serve("--stream-idle-timeout", "1"))
    fid, _ = gw.launch("llm-idle", concurrency=4)
    model = f"{fid}/{MODEL}"
    started = time.monotonic()
    events, error = _stream(gw, model, tokens=20, interval=0.2)
    assert error is None and events[-1] == "[DONE]" and _tokens(events) == 20
    assert time.monotonic() - started > 3.5  # it did last several idle timeouts
    events, error = _stream(gw, model, tokens=3, interval=3.0)
    assert error is not None, events  # cut: the response is incomplete, not ended as if whole
    assert "[DONE]" not in events and _tokens(events) == 1


@pytest.mark.slow
def test_a_stream_longer_than_60_s_is_not_cut(world: World) -> None:
    """NVCF's gateway has a 60 s absolute write timeout (spec part 2, 8.5); ours is an idle
    timeout only: 70 tokens a second apart stream to the end."""
    started = time.monotonic()
    events, error = _stream(world, f"{world.fid}/{MODEL}", tokens=70, interval=1.0, timeout=120)
    assert error is None and events[-1] == "[DONE]" and _tokens(events) == 70
    assert time.monotonic() - started > 65
