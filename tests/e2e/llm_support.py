"""What the LLM gateway's end-to-end tests share: the `fngate/llm` function each test
varies only by its name and models (`llm_function`, `llm_model`), and `Gateway`, one
`fngate serve` as an LLM client sees it (`Host: llm.<domain>` over httpx and the official
openai SDK, sync and async), which also creates, deploys and waits for LLM functions.

`World` is the module-scoped setting of tests/e2e/test_llm_gateway.py and
test_llm_routing.py: a main function on two instances, a token-limited one, and keys of
the same account, of another account and of an account both functions are shared with."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.conftest import ServeProcess
from tests.e2e.helpers import instance_port
from tests.support.keys import INVOCATION_SCOPES, function_resource, key_body, key_headers
from tests.support.serve_api import ServeApi, gpu_spec

HOST = "llm.fngate.test"
MODEL = "meta/llama-3-8b"  # a model name with a slash: the instance must see it whole
URIS = ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"]
HEALTH = {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200}
AUTHORIZATIONS = "/v2/nvcf/authorizations/functions"


def llm_model(name: str, uris: list[str] | None = None, **config: str) -> dict[str, Any]:
    """One `models[]` entry: its `llmConfig.uris` (every endpoint unless given), plus e.g.
    tokenRateLimit= or routingMethod=."""
    return {"name": name, "llmConfig": {"uris": URIS if uris is None else uris, **config}}


def llm_function(name: str, *models: dict[str, Any]) -> dict[str, Any]:
    """The create body of an LLM function on the fngate/llm sample (MODEL when no models)."""
    return {
        "name": name,
        "containerImage": "fngate/llm",
        "functionType": "LLM",
        "inferenceUrl": "/",
        "inferencePort": 8000,
        "health": HEALTH,
        "models": list(models) or [llm_model(MODEL)],
    }


def stream_body(model: str, tokens: int, interval: float) -> dict[str, Any]:
    """A streamed chat the sample answers with `tokens` tokens, `interval` seconds apart."""
    return {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True, "max_tokens": tokens, "interval": interval}


class Gateway:
    """The LLM endpoints of one `fngate serve` (its HTTP port with the `llm.` host)."""

    def __init__(self, sp: ServeProcess) -> None:
        self.sp = sp
        self.api = ServeApi(sp)
        self.base = f"http://127.0.0.1:{sp.ready['http_port']}"
        self.admin: str = sp.admin_key

    # -- functions --------------------------------------------------------------------------
    def create(self, name: str, *models: dict[str, Any]) -> tuple[str, str]:
        return self.api.create_function(llm_function(name, *models))

    def deploy(self, fid: str, vid: str, *, instances: int = 1, concurrency: int = 8, spec: dict[str, Any] | None = None) -> None:
        self.api.deploy_specs(fid, vid, spec or gpu_spec(min_i=instances, max_i=instances, concurrency=concurrency))

    def wait_ready(self, fid: str, vid: str, instances: int = 1) -> None:
        """ACTIVE with `instances` ready, and routed by the gateway (listed for the admin key)."""
        self.api.wait_status(fid, vid, "ACTIVE", 90)
        self.api.wait(lambda: len(self.api.ready_instances(fid, vid)) >= instances, f"{instances} ready instances", 60)
        self.wait_listed(fid)

    def launch(self, name: str, *models: dict[str, Any], instances: int = 1, concurrency: int = 8, spec: dict[str, Any] | None = None) -> tuple[str, str]:  # fmt: skip
        """Create, deploy and wait for an LLM function; its (function id, version id)."""
        fid, vid = self.create(name, *models)
        self.deploy(fid, vid, instances=instances, concurrency=concurrency, spec=spec)
        self.wait_ready(fid, vid, instances)
        return fid, vid

    def wait_listed(self, fid: str, key: str | None = None, listed: bool = True) -> None:
        """The gateway sees functions, keys and sharing a moment after the API answers."""
        self.api.wait(lambda: (fid in self.models(key).text) == listed, f"the gateway {'lists' if listed else 'drops'} {fid}", 30, 0.1)

    # -- requests ---------------------------------------------------------------------------
    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Host": HOST, **({"Authorization": f"Bearer {key}"} if key else {}), **extra}

    def post(self, path: str, body: Any, key: str | None = None, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.base + path, content=content, headers={**self.headers(key), **(headers or {})}, timeout=30, **kw)

    def chat(self, model: str, key: str | None = None, **extra: Any) -> httpx.Response:
        return self.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi there"}], **extra}, key)

    def models(self, key: str | None = None) -> httpx.Response:
        return httpx.get(self.base + "/v1/models", headers=self.headers(key or self.admin), timeout=30)

    def sdk(self, key: str | None = None, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key or self.admin, default_headers={"Host": HOST}, max_retries=0, **kw)

    def asdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base + "/v1", api_key=key or self.admin, default_headers={"Host": HOST}, max_retries=0)

    def curl(self, path: str, *args: str) -> list[str]:
        """curl's argv for one call to the LLM host (response head included, no buffering)."""
        return ["curl", "-sS", "-N", "-i", self.base + path, "-H", f"Host: {HOST}", *args]

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.sp.ready['admin_port']}/metrics").text

    # -- keys and sharing -------------------------------------------------------------------
    def key(self, scopes: list[str], resources: list[dict[str, str]] | None, nca: str | None = None) -> str:
        body = key_body(scopes, resources)
        if nca:
            body["nca_id"] = nca
        headers = {**self.api.headers, **key_headers(f"{uuid.uuid4().hex[:6]}@t")}
        r = httpx.post(f"{self.sp.api_url}/v1/keys", headers=headers, json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["value"])

    def share(self, fid: str, *accounts: str) -> None:
        self.api.call("POST", f"{AUTHORIZATIONS}/{fid}", {"authorizedParties": [{"ncaId": a} for a in accounts]})


class World(Gateway):
    """`llm-main` (MODEL and `chat-only`, two instances) and `llm-limited` (`tiny`, 10
    tokens a second), both shared with the account `shared-team`; keys: the admin's, one
    of the same account naming only llm-main (`narrow`), one without invoke_function,
    one of `other-team`, and two of `shared-team` (with and without authorized-functions)."""

    SHARED = "shared-team"

    def __init__(self, sp: ServeProcess, access_log: Path | None = None) -> None:
        super().__init__(sp)
        self.access_log = access_log
        self.fid, self.vid = self.create("llm-main", llm_model(MODEL), llm_model("chat-only", ["/v1/chat/completions"]))
        self.lim_fid, self.lim_vid = self.create("llm-limited", llm_model("tiny", tokenRateLimit="10-S"))
        self.deploy(self.fid, self.vid, instances=2)
        self.deploy(self.lim_fid, self.lim_vid)
        self.narrow = self.key(INVOCATION_SCOPES, [function_resource(self.fid)])
        self.no_invoke = self.key(["list_functions"], None)
        for nca in ("other-team", self.SHARED):
            self.api.call("POST", f"/v2/nvcf/accounts/{nca}", {"name": nca})
        self.other = self.key(INVOCATION_SCOPES, None, nca="other-team")
        self.shared = self.key(INVOCATION_SCOPES, None, nca=self.SHARED)
        self.shared_own_only = self.key(INVOCATION_SCOPES, [{"id": "*", "type": "account-functions"}], nca=self.SHARED)
        self.share(self.fid, self.SHARED)
        self.share(self.lim_fid, self.SHARED)
        self.wait_ready(self.fid, self.vid, 2)
        self.wait_ready(self.lim_fid, self.lim_vid)
        for key in (self.narrow, self.shared):
            self.wait_listed(self.fid, key)
        self.wait_listed(self.lim_fid, self.shared)

    def instance_stats(self) -> list[dict[str, Any]]:
        """Each llm-main instance's own counts (the sample's /stats: active, cancelled, ...)."""
        out = []
        for inst in self.api.ready_instances(self.fid, self.vid):
            port = instance_port(self.sp.data_dir, self.vid, inst["instanceId"])
            out.append(httpx.get(f"http://127.0.0.1:{port}/stats").json())
        return out
