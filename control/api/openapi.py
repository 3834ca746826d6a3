"""The OpenAPI 3 document of the management API, served at /openapi.json."""

from __future__ import annotations

from aiohttp import web

from .context import json_response

routes = web.RouteTableDef()

DOCUMENT: dict = {"openapi": "3.0.3", "info": {"title": "fngate management API", "version": "0.1.0"}, "paths": {}}


@routes.get("/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)
