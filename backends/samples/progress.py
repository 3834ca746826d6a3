"""Sample HTTP function for NVCF's long-running pexec contract: reports progress and
can answer a large result with artifacts.

    python -m fngate.backends.samples.progress --host H --port P

POST (any path) with JSON `{"steps": N, "stepSeconds": S, "resultBytes": B,
"artifacts": {"relative/path": "text"}}` (all optional): for each of N steps it writes
`{NVCF-LARGE-OUTPUT-DIR}/progress` = `{"id": <NVCF-REQID>, "progress": <percent>,
"partialResponse": {"step": i, "of": N}}` and sleeps S seconds; then it writes the
artifacts into that directory and answers B bytes (application/octet-stream) or, without
`resultBytes`, `{"done": true, "steps": N, "path": ..., "assets": {id: text}}` (the input
assets named by NVCF-FUNCTION-ASSET-IDS, read from NVCF-ASSET-DIR). `/health` answers 200.
"""

from __future__ import annotations

import asyncio
import json
import os

from aiohttp import web

from fngate.backends.samples._common import HEALTH_PATHS, health, parse_args, serve

_CHUNK = b"r" * 65536


def _write_progress(out_dir: str, request_id: str, step: int, steps: int) -> None:
    if not out_dir or not os.path.isdir(out_dir):  # (not a pexec request: no output directory)
        return
    doc = {"id": request_id, "progress": round(100 * step / steps), "partialResponse": {"step": step, "of": steps}}
    tmp = os.path.join(out_dir, ".progress.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(out_dir, "progress"))  # never seen half-written


def _write_artifacts(out_dir: str, artifacts: dict[str, str]) -> None:
    for rel, text in artifacts.items():
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def _read_assets(asset_dir: str, ids: str) -> dict[str, str]:
    """The input assets the gateway laid out, by id (their text, for a test to compare)."""
    found = {}
    for asset_id in filter(None, ids.split(",")):
        try:
            with open(os.path.join(asset_dir, asset_id), "rb") as f:
                found[asset_id] = f.read(4096).decode("latin-1")
        except OSError:
            found[asset_id] = "<missing>"
    return found


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def run(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        job = json.loads(raw) if raw else {}
        if not isinstance(job, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        out_dir = request.headers.get("NVCF-LARGE-OUTPUT-DIR", "")
        request_id = request.headers.get("NVCF-REQID", "")
        steps = int(job.get("steps", 0))
        for step in range(1, steps + 1):
            _write_progress(out_dir, request_id, step, steps)
            await asyncio.sleep(float(job.get("stepSeconds", 0)))
        _write_artifacts(out_dir, job.get("artifacts") or {})
        if "resultBytes" not in job:
            answer = {"done": True, "steps": steps, "path": request.path, "query": request.query_string}
            answer["assets"] = _read_assets(request.headers.get("NVCF-ASSET-DIR", ""), request.headers.get("NVCF-FUNCTION-ASSET-IDS", ""))
            return web.json_response(answer)
        total = int(job["resultBytes"])
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        resp.content_length = total
        await resp.prepare(request)
        left = total
        while left > 0:
            piece = _CHUNK if left >= len(_CHUNK) else _CHUNK[:left]
            await resp.write(piece)
            left -= len(piece)
        await resp.write_eof()
        return resp

    for path in HEALTH_PATHS:
        app.router.add_get(path, health)
    app.router.add_route("*", "/{tail:.*}", run)
    return app


def main() -> None:
    args = parse_args("progress")
    asyncio.run(serve(make_app(), args.host, args.port, "progress"))


if __name__ == "__main__":
    main()
