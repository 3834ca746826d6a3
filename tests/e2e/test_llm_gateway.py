"""The LLM gateway (spec part 2, section 8) against a real `fngate serve` and real
`fngate/llm` instances, driven by the official OpenAI SDK (sync and async, streaming and
not) and by curl: routing by `model`, NVCF's validation and auth messages, the model
listing, the `uris` allow-list, token limits, sticky sessions and disconnects."""

from __future__ import annotations

import asyncio
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

from tests.conftest import ServeProcess, start_serve
from tests.e2e.helpers import instance_port, write_config
from tests.e2e.test_multiprocess import _requests_by_worker
from tests.support.keys import INVOCATION_SCOPES, function_resource, key_body, key_headers
from tests.support.net import free_port
from tests.support.serve_api import ServeApi, gpu_spec
from tests.support.waiting import wait_until

HOST = "llm.fngate.test"
MODEL = "meta/llama-3-8b"  # a model name with a slash: the instance must see it whole
URIS = ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"]


class World:
    def __init__(self, sp: ServeProcess, access_log: Path | None = None) -> None:
        self.sp = sp
        self.access_log = access_log
        self.api = api = ServeApi(sp)
        self.base = f"http://127.0.0.1:{sp.ready['http_port']}"
        self.fid, self.vid = api.create_function(
            {
                "name": "llm-main",
                "containerImage": "fngate/llm",
                "functionType": "LLM",
                "inferenceUrl": "/",
                "inferencePort": 8000,
                "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200},
                "models": [
                    {"name": MODEL, "llmConfig": {"uris": URIS}},
                    {"name": "chat-only", "llmConfig": {"uris": ["/v1/chat/completions"]}},
                ],
            }
        )
        self.lim_fid, self.lim_vid = api.create_function(
            {
                "name": "llm-limited",
                "containerImage": "fngate/llm",
                "functionType": "LLM",
                "inferenceUrl": "/",
                "inferencePort": 8000,
                "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200},
                "models": [{"name": "tiny", "llmConfig": {"uris": URIS, "tokenRateLimit": "10-S"}}],
            }
        )
        api.deploy_specs(self.fid, self.vid, gpu_spec(min_i=2, max_i=2, concurrency=8))
        api.deploy_specs(self.lim_fid, self.lim_vid, gpu_spec(min_i=1, max_i=1, concurrency=8))
        api.wait_status(self.fid, self.vid, "ACTIVE", 90)
        api.wait_status(self.lim_fid, self.lim_vid, "ACTIVE", 90)
        api.wait(lambda: len(api.ready_instances(self.fid, self.vid)) == 2, "two ready instances", 60)
        self.admin = sp.admin_key
        # a key of the same account that names only the main function
        self.narrow = self.key(INVOCATION_SCOPES, [function_resource(self.fid)])
        self.no_invoke = self.key(["list_functions"], None)
        api.call("POST", "/v2/nvcf/accounts/other-team", {"name": "other-team"})
        self.other = self.key(INVOCATION_SCOPES, None, nca="other-team")
        self.wait_routed()

    def key(self, scopes: list[str], resources: list[dict[str, str]] | None, nca: str | None = None) -> str:
        body = key_body(scopes, resources)
        if nca:
            body["nca_id"] = nca
        r = httpx.post(f"{self.sp.api_url}/v1/keys", headers={**self.api.headers, **key_headers(f"{uuid.uuid4().hex[:6]}@t")}, json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["value"])

    def post(self, path: str, body: Any, key: str | None = None, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        h = {"Host": HOST, **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.base + path, content=content, headers=h, timeout=30, **kw)

    def wait_routed(self) -> None:
        """The gateway sees new keys and instances a moment after the API answers."""

        def ok() -> bool:
            for key in (self.admin, self.narrow, self.other):
                r = self.post("/v1/models", None, key)
                if (
                    key != self.other
                    and self.fid not in httpx.get(self.base + "/v1/models", headers={"Host": HOST, "Authorization": f"Bearer {key}"}).text
                ):
                    return False
                del r
            return self.chat(self.lim_fid + "/tiny", key=self.admin, max_tokens=1).status_code in (200, 429)

        self.api.wait(ok, "the gateway knows the keys and functions", 30, 0.2)

    def chat(self, model: str, key: str | None = None, **extra: Any) -> httpx.Response:
        return self.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi there"}], **extra}, key)

    def sdk(self, key: str | None = None, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key or self.admin, default_headers={"Host": HOST}, max_retries=0, **kw)

    def asdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base + "/v1", api_key=key or self.admin, default_headers={"Host": HOST}, max_retries=0)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.sp.ready['admin_port']}/metrics").text

    def instance_stats(self) -> list[dict[str, Any]]:
        out = []
        for inst in self.api.ready_instances(self.fid, self.vid):
            port = instance_port(self.sp.data_dir, self.vid, inst["instanceId"])
            out.append(httpx.get(f"http://127.0.0.1:{port}/stats").json())
        return out


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
    body = {
        "model": f"{world.fid}/{MODEL}",
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        "max_tokens": 5,
        "interval": 0.3,
    }
    headers = {"Host": HOST, "Authorization": f"Bearer {world.admin}"}
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

        sdk = openai.OpenAI(base_url=world.base + "/v1", api_key=world.admin, default_headers={"Host": HOST}, max_retries=0, http_client=h2)
        raw = sdk.chat.completions.with_raw_response.create(
            model=f"{world.fid}/{MODEL}", messages=[{"role": "user", "content": "go"}], max_tokens=3, stream=True
        )
        assert raw.http_response.http_version == "HTTP/2"
        parts = [c.choices[0].delta.content for c in raw.parse() if c.choices and c.choices[0].delta.content]
        assert "".join(parts) == "tok0 tok1 tok2"


def test_curl_chat_stream_and_x_request_id(world: World) -> None:
    body = json.dumps({"model": f"{world.fid}/{MODEL}", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 3})
    done = subprocess.run(
        ["curl", "-sS", "-N", "-i", world.base + "/v1/chat/completions", "-H", f"Host: {HOST}", "-H", f"Authorization: Bearer {world.admin}",
         "-H", "Content-Type: application/json", "-H", "X-Request-ID: my-trace-42", "-d", body],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    head, _, events = done.stdout.partition("\n\n")  # (text mode reads CRLF as LF)
    assert head.startswith("HTTP/1.1 200") and "x-request-id: my-trace-42" in head.lower() and "text/event-stream" in head
    data = [ln[6:] for ln in events.splitlines() if ln.startswith("data: ")]
    assert len(data) >= 2, done.stdout
    assert data[-1] == "[DONE]" and json.loads(data[-2])["usage"]["completion_tokens"] == 3
    assert [json.loads(d)["model"] for d in data[:-1]] == [MODEL] * (len(data) - 1)


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
    r = httpx.get(world.base + "/v1/models", headers={"Host": HOST, "Authorization": "Bearer nvapi-wrong"})
    assert (r.status_code, r.json()) == (401, {"message": "authentication failed"})
    assert world.sdk().models.list().object == "list"


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
    # another account has its own counter
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


def test_client_disconnect_cancels_the_instance_request(world: World) -> None:
    def cancelled() -> int:
        return sum(s["cancelled"] for s in world.instance_stats())

    before = cancelled()
    body = {
        "model": f"{world.fid}/{MODEL}",
        "messages": [{"role": "user", "content": "long"}],
        "stream": True,
        "max_tokens": 2000,
        "interval": 0.05,
    }
    with httpx.stream(
        "POST", world.base + "/v1/chat/completions", content=json.dumps(body).encode(),
        headers={"Host": HOST, "Authorization": f"Bearer {world.admin}"}, timeout=30,
    ) as resp:  # fmt: skip
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
    world.api.wait(lambda: cancelled() == before + 1, "the instance's request cancelled", 10)
    assert sum(s["active"] for s in world.instance_stats()) == 0


def test_a_token_budget_holds_across_two_workers_on_redis(fngate_serve: Any, tmp_path: Path, redis_url: str) -> None:
    """`--workers 2 --store redis://`: the token counter of (account, function) is one for
    both workers (leased from Redis, no Redis call per request). 200 tokens an hour, ~42
    a request: one shared budget admits 4 to 7 (rate_lease.py's accuracy: a batch of 20
    unspent per worker, one request's overshoot per worker); two separate ones would
    admit 5 each."""
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    sp = fngate_serve("--config", str(config), "--workers", "2", "--store", redis_url)
    api = ServeApi(sp)
    fid, vid = api.create_function(
        {
            "name": "llm-shared-budget",
            "containerImage": "fngate/llm",
            "functionType": "LLM",
            "inferenceUrl": "/",
            "inferencePort": 8000,
            "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200},
            "models": [{"name": "m", "llmConfig": {"uris": URIS, "tokenRateLimit": "200-H"}}],
        }
    )
    api.deploy_specs(fid, vid, gpu_spec(min_i=1, max_i=1, concurrency=8))
    api.wait_status(fid, vid, "ACTIVE", 90)
    base = f"http://127.0.0.1:{sp.ready['http_port']}"
    body = json.dumps({"model": f"{fid}/m", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 40}).encode()
    headers = {"Host": HOST, "Authorization": f"Bearer {sp.admin_key}"}
    api.wait(lambda: httpx.get(base + "/v1/models", headers=headers).text.count(fid) == 1, "the gateway knows the function", 30)
    codes = []
    for _ in range(24):  # a new connection each: the kernel spreads them over both workers
        codes.append(httpx.post(base + "/v1/chat/completions", content=body, headers=headers, timeout=30).status_code)
        time.sleep(0.1)  # the leases run in the background
    per_worker = _requests_by_worker(httpx.get(f"http://127.0.0.1:{sp.ready['admin_port']}/metrics", timeout=10).text)
    assert len(per_worker) == 2, per_worker
    assert 4 <= codes.count(200) <= 7 and set(codes) == {200, 429}, codes


def test_the_uris_allow_list_on_chat_and_embeddings_when_switched_on(fngate_serve: Any) -> None:
    """FNGATE_LLM_URI_ALLOWLIST=1 (NVCF's MODEL_URI_ALLOWLIST_ENABLED): a model's `uris`
    hold for every endpoint, not only /v1/responses."""
    sp = fngate_serve(env={"FNGATE_LLM_URI_ALLOWLIST": "1"})
    api = ServeApi(sp)
    fid, vid = api.create_function(
        {
            "name": "llm-allow",
            "containerImage": "fngate/llm",
            "functionType": "LLM",
            "inferenceUrl": "/",
            "inferencePort": 8000,
            "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200},
            "models": [{"name": "emb", "llmConfig": {"uris": ["/v1/embeddings"]}}],
        }
    )
    api.deploy_specs(fid, vid, gpu_spec(min_i=1, max_i=1, concurrency=4))
    api.wait_status(fid, vid, "ACTIVE", 90)
    base = f"http://127.0.0.1:{sp.ready['http_port']}"
    headers = {"Host": HOST, "Authorization": f"Bearer {sp.admin_key}"}
    api.wait(lambda: httpx.get(base + "/v1/models", headers=headers).text.count(fid) == 1, "the gateway knows the function", 30)
    chat = httpx.post(
        base + "/v1/chat/completions", json={"model": f"{fid}/emb", "messages": [{"role": "user", "content": "x"}]}, headers=headers
    )
    assert (chat.status_code, chat.json()) == (400, {"message": 'model "emb" does not support /v1/chat/completions'})
    emb = httpx.post(base + "/v1/embeddings", json={"model": f"{fid}/emb", "input": "x"}, headers=headers)
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
        sp = fngate_serve("--config", str(config))
        api = ServeApi(sp)
        fid, vid = api.create_function(
            {
                "name": "llm-degraded",
                "containerImage": "fngate/llm",
                "functionType": "LLM",
                "inferenceUrl": "/",
                "inferencePort": 8000,
                "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200},
                "models": [{"name": MODEL, "llmConfig": {"uris": URIS}}],
            }
        )
        api.deploy_specs(fid, vid, gpu_spec(backend="edge", configuration={"endpoints": [f"http://127.0.0.1:{port}"]}))
        api.wait_status(fid, vid, "ACTIVE")
        base = f"http://127.0.0.1:{sp.ready['http_port']}"
        body = {"model": f"{fid}/{MODEL}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        headers = {"Host": HOST, "Authorization": f"Bearer {sp.admin_key}"}

        def chat(**extra: str) -> httpx.Response:
            return httpx.post(base + "/v1/chat/completions", json=body, headers={**headers, **extra}, timeout=30)

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
        sdk = openai.OpenAI(base_url=base + "/v1", api_key=sp.admin_key, default_headers={"Host": HOST}, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="invalid request"):
            sdk.chat.completions.create(model=f"{fid}/{MODEL}", messages=[{"role": "user", "content": "x"}])
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


def _stream(base: str, key: str, model: str, tokens: int, interval: float, timeout: float = 30) -> tuple[list[str], BaseException | None]:
    """The `data:` payloads of a chat stream read with httpx, and the error that ended it early."""
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True, "max_tokens": tokens, "interval": interval}
    events: list[str] = []
    try:
        with httpx.stream(
            "POST", base + "/v1/chat/completions", json=body, headers={"Host": HOST, "Authorization": f"Bearer {key}"}, timeout=timeout
        ) as resp:
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
    sp = fngate_serve("--stream-idle-timeout", "1")
    api = ServeApi(sp)
    fid, vid = api.create_function(
        {
            "name": "llm-idle",
            "containerImage": "fngate/llm",
            "functionType": "LLM",
            "inferenceUrl": "/",
            "inferencePort": 8000,
            "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200},
            "models": [{"name": MODEL, "llmConfig": {"uris": URIS}}],
        }
    )
    api.deploy_specs(fid, vid, gpu_spec(min_i=1, max_i=1, concurrency=4))
    api.wait_status(fid, vid, "ACTIVE", 90)
    base = f"http://127.0.0.1:{sp.ready['http_port']}"
    model = f"{fid}/{MODEL}"
    headers = {"Host": HOST, "Authorization": f"Bearer {sp.admin_key}"}
    api.wait(lambda: httpx.get(base + "/v1/models", headers=headers).text.count(fid) == 1, "the gateway knows the function", 30)
    started = time.monotonic()
    events, error = _stream(base, sp.admin_key, model, tokens=20, interval=0.2)
    assert error is None and events[-1] == "[DONE]" and _tokens(events) == 20
    assert time.monotonic() - started > 3.5  # it did last several idle timeouts
    events, error = _stream(base, sp.admin_key, model, tokens=3, interval=3.0)
    assert error is not None, events  # cut: the response is incomplete, not ended as if whole
    assert "[DONE]" not in events and _tokens(events) == 1


@pytest.mark.slow
def test_a_stream_longer_than_60_s_is_not_cut(world: World) -> None:
    """NVCF's gateway has a 60 s absolute write timeout (spec part 2, 8.5); ours is an idle
    timeout only: 70 tokens a second apart stream to the end."""
    started = time.monotonic()
    events, error = _stream(world.base, world.admin, f"{world.fid}/{MODEL}", tokens=70, interval=1.0, timeout=120)
    assert error is None and events[-1] == "[DONE]" and _tokens(events) == 70
    assert time.monotonic() - started > 65
