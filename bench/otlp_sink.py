"""A discarding OTLP/HTTP trace receiver for the tracing-on bench row: it answers every
POST /v1/traces with an empty ExportTraceServiceResponse (200, no body needed by the SDK)
and counts what it got, so the gateway pays the export's real cost (protobuf encoding and
the HTTP round trip on the exporter's thread) without a collector on the machine.

    python -m fngate.bench.otlp_sink --port P
"""

from __future__ import annotations

import argparse

from aiohttp import web

from fngate.proxy.config import LOOPBACK


def make_app() -> web.Application:
    received = {"requests": 0, "bytes": 0}

    async def export(request: web.Request) -> web.Response:
        body = await request.read()
        received["requests"] += 1
        received["bytes"] += len(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", export)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fngate.bench.otlp_sink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host=LOOPBACK, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
