"""Two `fngate serve` replicas on one Redis: how long a key created or revoked through
one replica's management API takes to be honoured by the other replica's gateway.

The key is created (or deleted) on replica A; replica B's gateway is then asked with it
every millisecond or so until it answers as it should (200 once created, 401 once
revoked). That is the whole path: store write, the leader's publisher, the routing
delta through Redis, B's source applying it. Reported as p50 / p99 / max over the
trials, in milliseconds.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fngate.bench.procs import Proc, free_port, wait_port
from fngate.bench.runner import Settings, say
from fngate.proxy.config import LOOPBACK

ADMIN_KEY = "nvapi-bench-replicas-admin"
SERVICE_ID = "nvidia-cloud-functions-ncp-service-id-aketm"
KEY_HEADERS = {"Key-Issuer-Service": "nvcf-api", "Key-Issuer-Id": SERVICE_ID, "Key-Owner-Id": "bench@fngate.local"}
TRIALS = 40
POLL_EVERY = 0.001
GIVE_UP = 10.0


def _serve(name: str, redis_url: str, settings: Settings, env: dict[str, str]) -> tuple[Proc, dict[str, Any]]:
    data = settings.work / f"replica-{name}"
    data.mkdir(parents=True, exist_ok=True)
    ready = data / "ready.json"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "fngate", "serve", "--data-dir", str(data), "--ready-file", str(ready), "--store", redis_url]
    cmd += ["--api-port", "0", "--http-port", "0", "--grpc-port", "0", "--admin-port", "0", "--no-samples"]
    proc = Proc(f"replica-{name}", cmd, None, settings.logs, env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            tail = proc.output_tail()
            proc.stop()
            raise RuntimeError(f"replica {name} did not start: {tail}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def _key_body(fid: str) -> dict[str, Any]:
    return {
        "description": "bench",
        "expires_at": (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "audience_service_ids": [SERVICE_ID],
        "authorizations": {
            "policies": [
                {
                    "aud": SERVICE_ID,
                    "auds": [SERVICE_ID],
                    "product": "nv-cloud-functions",
                    "resources": [{"id": f"{fid}/*", "type": "function"}],
                    "scopes": ["invoke_function"],
                }
            ]
        },
    }


def _until(check: Any) -> float:
    """Seconds until check() is true (GIVE_UP at most)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > GIVE_UP:
            raise RuntimeError(f"not seen within {GIVE_UP} s")
        time.sleep(POLL_EVERY)
    return time.monotonic() - started


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "trials": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        "max_ms": ms[-1],
    }


def key_propagation(settings: Settings, skipped: dict, trials: int = TRIALS) -> dict[str, Any] | None:
    from fngate.bench.fngate import _redis_server

    redis_port = free_port()
    redis = Proc("replicas-redis", [_redis_server(), "--port", str(redis_port), "--bind", LOOPBACK, "--save", ""], None, settings.logs)
    procs = [redis]
    try:
        wait_port(redis_port, proc=redis)
        url = f"redis://{LOOPBACK}:{redis_port}/0"
        env = {"FNGATE_ADMIN_KEY": ADMIN_KEY, "FNGATE_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
        (a, ready_a), (b, ready_b) = _serve("a", url, settings, env), _serve("b", url, settings, env)
        procs += [a, b]
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(timeout=30) as http:
            api_a = ready_a["api_url"]
            made = http.post(
                f"{api_a}/v2/nvcf/functions",
                headers=admin,
                json={"name": "bench-echo", "inferenceUrl": "/echo", "containerImage": "fngate/echo", "inferencePort": 8000},
            ).json()["function"]
            fid, vid = made["id"], made["versionId"]
            spec = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 1, "maxInstances": 1, "maxRequestConcurrency": 8}
            http.post(
                f"{api_a}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=admin, json={"deploymentSpecifications": [spec]}
            )
            gateway_b = f"http://{LOOPBACK}:{ready_b['http_port']}/echo"
            _until(lambda: http.post(gateway_b, headers={**admin, "function-id": fid}).status_code == 200)
            created: list[float] = []
            revoked: list[float] = []
            for _ in range(trials):
                made_key = http.post(f"{api_a}/v1/keys", headers={**admin, **KEY_HEADERS}, json=_key_body(fid))
                if made_key.status_code != 200:
                    raise RuntimeError(f"creating a key answered {made_key.status_code}: {made_key.text}")
                token, key_id = made_key.json()["value"], made_key.json()["id"]
                auth = {"Authorization": f"Bearer {token}", "function-id": fid}
                created.append(_until(lambda auth=auth: http.post(gateway_b, headers=auth).status_code == 200))
                http.delete(f"{api_a}/v1/keys/{key_id}", headers={**admin, **KEY_HEADERS})
                revoked.append(_until(lambda auth=auth: http.post(gateway_b, headers=auth).status_code == 401))
        result = {"created": _summary(created), "revoked": _summary(revoked)}
        say(f"key propagation across replicas: {result}")
        return result
    except Exception as exc:  # the other scenarios' figures still count
        skipped["replicas"] = f"replicas scenario failed: {exc}"
        say(skipped["replicas"])
        return None
    finally:
        for p in reversed(procs):
            p.stop()


def markdown(result: dict[str, Any]) -> list[str]:
    out = [
        "## Key creation and revocation across replicas",
        "",
        "Two `fngate serve` replicas on one Redis: a key created or revoked through replica A's API,",
        "until replica B's gateway answers with it as it should (200, then 401), polled every ~1 ms.",
        "",
        "| change | trials | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for kind in ("created", "revoked"):
        s = result[kind]
        out.append(f"| key {kind} | {s['trials']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |")
    return [*out, ""]


def _main() -> None:  # python -m fngate.bench.replicas: this scenario alone
    work = Path("/tmp/fngate-bench-replicas")
    work.mkdir(exist_ok=True)
    print(json.dumps(key_propagation(Settings(work=work, logs=work), {}, int(sys.argv[1]) if len(sys.argv) > 1 else TRIALS)))


if __name__ == "__main__":
    _main()
