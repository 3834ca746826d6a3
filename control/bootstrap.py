"""Start-up bootstrap of `fngate serve`: register and deploy the four sample
functions (idempotently: an existing sample is reused, and redeployed only when
INACTIVE), wait until they are ACTIVE, and print ready-to-paste commands."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from fngate.proxy.config import LOOPBACK

log = logging.getLogger("fngate.bootstrap")

SAMPLE_TAG = "fngate-sample"


def _health(protocol: str, uri: str) -> dict[str, Any]:
    return {"protocol": protocol, "uri": uri, "port": 8000, "timeout": "PT5S", "expectedStatusCode": 200}


SAMPLES: list[dict[str, Any]] = [
    {
        "name": "echo",
        "containerImage": "fngate/echo",
        "inferenceUrl": "/echo",
        "inferencePort": 8000,
        "health": _health("HTTP", "/health"),
        "description": "fngate sample: echoes the request as JSON",
    },
    {
        "name": "sse",
        "containerImage": "fngate/sse",
        "inferenceUrl": "/v1/chat/completions",
        "inferencePort": 8000,
        "health": _health("HTTP", "/health"),
        "description": "fngate sample: OpenAI-style chat completions over SSE",
    },
    {
        "name": "grpc-echo",
        "containerImage": "fngate/grpc-echo",
        "inferenceUrl": "/grpc",
        "inferencePort": 8000,
        "health": _health("gRPC", "/"),
        "description": "fngate sample: gRPC Echo service",
    },
    {
        "name": "llm",
        "containerImage": "fngate/llm",
        "functionType": "LLM",
        "inferenceUrl": "/",
        "inferencePort": 8000,
        "health": _health("HTTP", "/health"),
        "models": [
            {
                "name": "fngate-llm",
                "llmConfig": {"uris": ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"]},
            }
        ],
        "description": "fngate sample: an OpenAI-compatible LLM behind the LLM gateway (Host llm.<domain>)",
    },
]


def _gpu_spec(capacity: list[dict[str, Any]]) -> dict[str, Any]:
    """Prefer an L40S slot, else whatever has the most free capacity."""
    usable = sorted(capacity, key=lambda c: (c.get("gpu") != "L40S", -int(c.get("free", 0))))
    gpu, itype = (usable[0]["gpu"], usable[0]["name"]) if usable else ("L40S", "NCP.GPU.L40S_1x")
    return {"gpu": gpu, "instanceType": itype, "minInstances": 1, "maxInstances": 2, "maxRequestConcurrency": 8}


class SampleBootstrap:
    def __init__(
        self,
        api_url: str,
        admin_key: str,
        capacity: Callable[[], list[dict[str, Any]]],
        say: Callable[[str], None],
        *,
        http_port: int,
        grpc_port: int,
        host: str = LOOPBACK,
        data_dir: str = ".fngate",
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.capacity = capacity
        self.say = say
        self.http_port, self.grpc_port, self.host, self.data_dir = http_port, grpc_port, host, data_dir
        self.function_ids: dict[str, str] = {}

    async def run(self, timeout: float = 120.0) -> dict[str, str]:
        # our own API, possibly behind a self-signed --tls-cert: no verification needed
        async with aiohttp.ClientSession(headers=self.headers, connector=aiohttp.TCPConnector(ssl=False)) as http:
            existing = await self._get(http, "/v2/nvcf/functions")
            for sample in SAMPLES:
                fid, vid, status = await self._ensure(http, sample, existing.get("functions", []))
                self.function_ids[sample["name"]] = fid
                if status == "INACTIVE":
                    await self._call(
                        http,
                        "POST",
                        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
                        {"deploymentSpecifications": [_gpu_spec(self.capacity())]},
                    )
            states = await self._wait_active(http, timeout)
        self._print_commands(states)
        return self.function_ids

    async def _ensure(self, http: aiohttp.ClientSession, sample: dict[str, Any], functions: list[dict[str, Any]]) -> tuple[str, str, str]:
        mine = [f for f in functions if f.get("name") == sample["name"] and SAMPLE_TAG in (f.get("tags") or [])]
        if mine:
            newest = max(mine, key=lambda f: f.get("createdAt", ""))
            return newest["id"], newest["versionId"], newest["status"]
        created = (await self._call(http, "POST", "/v2/nvcf/functions", {**sample, "tags": [SAMPLE_TAG]}))["function"]
        return created["id"], created["versionId"], created["status"]

    async def _wait_active(self, http: aiohttp.ClientSession, timeout: float) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            functions = (await self._get(http, "/v2/nvcf/functions")).get("functions", [])
            states = {f["name"]: f["status"] for f in functions if f.get("id") in self.function_ids.values()}
            if all(s in ("ACTIVE", "ERROR") for s in states.values()) or loop.time() > deadline:
                return states
            await asyncio.sleep(0.25)

    def _print_commands(self, states: dict[str, str]) -> None:
        base = f"http://{self.host}:{self.http_port}"
        key_file = Path(self.data_dir) / "admin.key"
        key_line = f"  export FNGATE_KEY=$(cat {key_file})" if key_file.exists() else "  export FNGATE_KEY=$FNGATE_ADMIN_KEY"
        cli = Path(sys.executable).with_name("fngate")
        cli_cmd = str(cli) if cli.exists() else "fngate"
        ids = self.function_ids
        lines = [
            "fngate: sample functions: " + ", ".join(f"{n} {ids[n]} {states.get(n, '?')}" for n in ids),
            key_line,
            "  # echo (HTTP):",
            f'  curl -s {base}/echo -H "function-id: {ids["echo"]}" -H "Authorization: Bearer $FNGATE_KEY" -d \'hello\'',
            "  # sse (streams tokens as they are generated):",
            f'  curl -N {base}/v1/chat/completions -H "function-id: {ids["sse"]}" -H "Authorization: Bearer $FNGATE_KEY"'
            ' -H \'Content-Type: application/json\' -d \'{"messages":[{"role":"user","content":"hi"}],"stream":true}\'',
            "  # grpc-echo (gRPC through the gateway):",
            f"  {cli_cmd} invoke {ids['grpc-echo']} --grpc --grpc-target {self.host}:{self.grpc_port} --method Echo --message hello",
        ]
        if "llm" in ids:
            lines += [
                "  # llm (OpenAI-compatible, routed by `model`; OpenAI SDK: base_url=<this>/v1, model=<fid>/fngate-llm):",
                f'  curl -s {base}/v1/chat/completions -H "Host: llm.fngate.local" -H "Authorization: Bearer $FNGATE_KEY"'
                f' -H \'Content-Type: application/json\' -d \'{{"model":"{ids["llm"]}/fngate-llm","messages":[{{"role":"user","content":"hi"}}]}}\'',
            ]
        for name, state in states.items():
            if state != "ACTIVE":
                lines.append(f"  note: sample {name} is {state}; see `fngate instance logs <version-id>`")
        for line in lines:
            self.say(line)

    async def _get(self, http: aiohttp.ClientSession, path: str) -> dict[str, Any]:
        return await self._call(http, "GET", path)

    async def _call(self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with http.request(method, self.api_url + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {data.get('detail') if isinstance(data, dict) else data}")
            return data or {}
