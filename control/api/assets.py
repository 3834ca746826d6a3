"""Assets: /v2/nvcf/assets/** (spec part 2, section 6), stored by fngate itself.

NVCF hands out presigned S3 URLs; fngate plays the bucket. `POST /v2/nvcf/assets` returns
an `uploadUrl` on this API port, signed (HMAC-SHA256, a key derived from the secrets key)
for the asset, its Content-Type and an expiry 35 minutes on; the client PUTs the bytes
there without a bearer key, as it would to S3. The content lands in
`<data-dir>/assets/<ncaId>/<assetId>`; the metadata in the store's `assets` kind. Until
the upload, the asset does not exist (GET/list/DELETE answer as S3 would for a missing
object). Assets expire `ttl` seconds after creation (24 h, as managed NVCF), and an
upload may not exceed `maxSize` bytes (5 GB, as managed NVCF).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from fngate.proxy.routing.snapshot import key_digest

from .. import records
from ..records import now_iso
from .auth import require
from .context import CONTEXT, ctx, json_response, read_json_object
from .errors import BadRequest, ControlError, NotFound, PayloadTooLarge

log = logging.getLogger("fngate.api.assets")

SCOPE = "invoke_function"
BUCKET = "fngate-assets"
CONTENT_TYPE_RE = re.compile(r"^(\w+)/([-+.\w]+)$")
NO_DESCRIPTION = "Description not available"
UPLOAD_TTL = 35 * 60  # NVCF's presigned PUT
DOWNLOAD_TTL = 35 * 60
OBJECT_PATH = "/fngate/asset-objects/{objectId}"  # the "bucket": presigned, no bearer key
_CHUNK = 256 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

routes = web.RouteTableDef()


@dataclass(frozen=True, slots=True)
class AssetSettings:
    root: Path  # <data-dir>/assets
    signing_key: bytes
    ttl: float = 24 * 3600.0
    max_size: int = 5 * 1024**3
    sweep_interval: float = 600.0

    @classmethod
    def from_config(cls, data_dir: Path, signing_key: bytes, section: dict[str, Any]) -> AssetSettings:
        unknown = set(section) - {"ttl", "maxSize", "sweepInterval"}
        if unknown:
            raise ValueError(f"unknown assets setting(s): {', '.join(sorted(unknown))}")
        return cls(
            root=data_dir / "assets",
            signing_key=signing_key,
            ttl=float(section.get("ttl", 24 * 3600)),
            max_size=int(section.get("maxSize", 5 * 1024**3)),
            sweep_interval=float(section.get("sweepInterval", 600)),
        )


SETTINGS = web.AppKey("fngate.api.assets", AssetSettings)


class BadSignature(ControlError):
    """S3 answers a bad or expired presigned URL with 403."""

    status = 403


def _settings(request: web.Request) -> AssetSettings:
    settings = request.config_dict.get(SETTINGS)
    if settings is None:
        raise NotFound("Assets are not enabled on this server")
    return settings


def _signature(settings: AssetSettings, method: str, object_id: str, content_type: str, expires: int) -> str:
    message = f"{method}\n{object_id}\n{content_type}\n{expires}".encode()
    return hmac.new(settings.signing_key, message, hashlib.sha256).hexdigest()


def _object_id(nca_id: str, asset_id: str) -> str:
    return f"{nca_id}.{asset_id}"


def _presigned(request: web.Request, settings: AssetSettings, method: str, object_id: str, content_type: str, ttl: int) -> str:
    expires = int(time.time()) + ttl
    sig = _signature(settings, method, object_id, content_type, expires)
    path = OBJECT_PATH.format(objectId=object_id)
    return str(request.url.origin().with_path(path).with_query({"expires": str(expires), "signature": sig}))


def _file(settings: AssetSettings, nca_id: str, asset_id: str) -> Path:
    # an account id is a directory name only when it is a plain word (never "..", never "/")
    folder = nca_id if _SAFE_NAME.match(nca_id) else "nca-" + hashlib.sha256(nca_id.encode()).hexdigest()[:32]
    return settings.root / folder / asset_id


def _expired(doc: dict[str, Any], settings: AssetSettings) -> bool:
    return time.time() > float(doc.get("createdEpoch", 0)) + settings.ttl


async def _uploaded(request: web.Request, nca_id: str, asset_id: str) -> dict[str, Any] | None:
    rec = await ctx(request).store.get(records.ASSETS, records.asset_key(nca_id, asset_id))
    if rec is None or not rec.value.get("uploaded") or _expired(rec.value, _settings(request)):
        return None
    doc: dict[str, Any] = rec.value
    return doc


@routes.post("/v2/nvcf/assets")
async def create_asset(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    settings = _settings(request)
    body = await read_json_object(request)
    content_type, description = body.get("contentType"), body.get("description")
    for field, value in (("contentType", content_type), ("description", description)):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f"Validation failed: field '{field}' is required")
    assert isinstance(content_type, str) and isinstance(description, str)
    if not CONTENT_TYPE_RE.match(content_type):
        raise BadRequest(f"Invalid contentType '{content_type}' in the request payload")
    c = ctx(request)
    asset_id = str(uuid.uuid4())
    doc = {
        "assetId": asset_id,
        "ncaId": principal.nca_id,
        "contentType": content_type,
        "description": description,
        "createdEpoch": time.time(),
        "uploaded": False,
    }
    await c.store.put(records.ASSETS, records.asset_key(principal.nca_id, asset_id), doc, expect=0)
    url = _presigned(request, settings, "PUT", _object_id(principal.nca_id, asset_id), content_type, UPLOAD_TTL)
    return json_response({"assetId": asset_id, "uploadUrl": url, "contentType": content_type, "description": description})


@routes.get("/v2/nvcf/assets")
async def list_assets(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    settings = _settings(request)
    c = ctx(request)
    recs = await c.store.list(records.ASSETS, principal.nca_id + "/")
    ids = [r.value["assetId"] for r in recs if r.value.get("uploaded") and not _expired(r.value, settings)]
    return json_response({"assets": [{"assetId": i} for i in ids[:1000]]})  # S3 ListObjects v1: one page


@routes.get("/v2/nvcf/assets/{assetId}")
async def get_asset(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    asset_id = request.match_info["assetId"]
    doc = await _uploaded(request, principal.nca_id, asset_id)
    if doc is None:
        key = f"{principal.nca_id}/{asset_id}"
        raise NotFound(f"Bucket '{BUCKET}' does not contain an object with key '{key}' - The specified key does not exist.")
    asset = {
        "assetId": asset_id,
        "description": doc.get("description") or NO_DESCRIPTION,
        "contentType": doc["contentType"],
        "createdAt": doc.get("createdAt"),
    }
    return json_response({"asset": asset})


@routes.get("/v2/nvcf/assets/{assetId}/content-redirect")
async def content_redirect(request: web.Request) -> web.Response:
    """JSON with a presigned GET, not an HTTP redirect; no existence check (as NVCF)."""
    principal = await require(request, SCOPE)
    settings = _settings(request)
    object_id = _object_id(principal.nca_id, request.match_info["assetId"])
    return json_response({"presignedUrl": _presigned(request, settings, "GET", object_id, "", DOWNLOAD_TTL)})


@routes.delete("/v2/nvcf/assets/{assetId}")
async def delete_asset(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    c = ctx(request)
    asset_id = request.match_info["assetId"]
    if await _uploaded(request, principal.nca_id, asset_id) is None:
        raise NotFound(f"Asset '{asset_id}' does not exist for account '{principal.nca_id}'")
    await _remove(c.store, _settings(request), principal.nca_id, asset_id)
    return web.Response(status=204)


async def _remove(store: Any, settings: AssetSettings, nca_id: str, asset_id: str) -> None:
    await store.delete(records.ASSETS, records.asset_key(nca_id, asset_id))
    with contextlib.suppress(FileNotFoundError):
        _file(settings, nca_id, asset_id).unlink()


def _check_presigned(request: web.Request, settings: AssetSettings, method: str, content_type: str) -> tuple[str, str]:
    object_id = request.match_info["objectId"]
    nca_id, _, asset_id = object_id.rpartition(".")
    try:
        expires = int(request.query.get("expires", ""))
    except ValueError:
        raise BadSignature("The presigned URL lacks a valid 'expires'") from None
    given = request.query.get("signature", "")
    if not hmac.compare_digest(given, _signature(settings, method, object_id, content_type, expires)):
        raise BadSignature("The request signature does not match (URL, method or Content-Type changed)")
    if time.time() > expires:
        raise BadSignature("The presigned URL has expired")
    return nca_id, asset_id


@routes.put(OBJECT_PATH)
async def upload_object(request: web.Request) -> web.Response:
    """The presigned PUT: the body is streamed to disk, never held in memory."""
    settings = _settings(request)
    store = ctx(request).store
    content_type = request.headers.get("Content-Type", "")
    nca_id, asset_id = _check_presigned(request, settings, "PUT", content_type)
    rec = await store.get(records.ASSETS, records.asset_key(nca_id, asset_id))
    if rec is None or _expired(rec.value, settings):
        raise NotFound(f"Asset '{asset_id}' does not exist for account '{nca_id}'")
    if request.content_length is not None and request.content_length > settings.max_size:
        raise PayloadTooLarge(f"An asset may hold at most {settings.max_size} bytes")
    target = _file(settings, nca_id, asset_id)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{asset_id}.{uuid.uuid4().hex}.part")
    size = 0
    try:
        with open(tmp, "wb") as out:  # noqa: ASYNC230 - chunked writes of a local file
            async for chunk in request.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > settings.max_size:
                    raise PayloadTooLarge(f"An asset may hold at most {settings.max_size} bytes")
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    description = request.headers.get("x-amz-meta-nvcf-asset-description") or rec.value.get("description")
    doc = {**rec.value, "uploaded": True, "size": size, "createdAt": now_iso(), "description": description}
    await store.put(records.ASSETS, rec.key, doc)
    return web.Response(status=200)


GATEWAY_LOOKUP_PATH = "/fngate/internal/assets/{ncaId}/{assetId}"
GATEWAY_DOWNLOAD_TTL = 34 * 60  # NVCF's invocation service hands its worker a 34 min GET


class InternalUnauthorized(ControlError):
    status = 401


@routes.get(GATEWAY_LOOKUP_PATH)
async def gateway_lookup(request: web.Request) -> web.Response:
    """For a gateway resolving NVCF-INPUT-ASSET-REFERENCES (admin key only, as NVCF's
    invocation service HEADs the caller's object): `{"contentType", "url"}`, the URL a
    presigned GET, or 404 when the account has no such uploaded, unexpired asset."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:] if auth[:7].lower() == "bearer " else ""
    if not token or not hmac.compare_digest(key_digest(token), ctx(request).admin_digest):
        raise InternalUnauthorized("the asset lookup needs the admin key as a Bearer token")
    settings = _settings(request)
    nca_id, asset_id = request.match_info["ncaId"], request.match_info["assetId"]
    doc = await _uploaded(request, nca_id, asset_id)
    if doc is None or not _file(settings, nca_id, asset_id).exists():
        raise NotFound(f"Asset '{asset_id}' does not exist for account '{nca_id}'")
    url = _presigned(request, settings, "GET", _object_id(nca_id, asset_id), "", GATEWAY_DOWNLOAD_TTL)
    return json_response({"contentType": doc["contentType"], "url": url})


@routes.get(OBJECT_PATH)
async def download_object(request: web.Request) -> web.StreamResponse:
    settings = _settings(request)
    nca_id, asset_id = _check_presigned(request, settings, "GET", "")
    rec = await ctx(request).store.get(records.ASSETS, records.asset_key(nca_id, asset_id))
    path = _file(settings, nca_id, asset_id)
    if rec is None or not rec.value.get("uploaded") or _expired(rec.value, settings) or not path.exists():
        raise NotFound(f"Asset '{asset_id}' does not exist for account '{nca_id}'")
    return web.FileResponse(path, headers={"Content-Type": rec.value["contentType"]})


async def sweep(store: Any, settings: AssetSettings) -> int:
    """Delete expired assets (record and file); returns how many."""
    removed = 0
    for rec in await store.list(records.ASSETS):
        if _expired(rec.value, settings):
            await _remove(store, settings, rec.value["ncaId"], rec.value["assetId"])
            removed += 1
    return removed


def enable(app: web.Application, settings: AssetSettings, clock_sleep: Callable[[float], Any] = asyncio.sleep) -> None:
    """Give the asset routes (mounted by make_app; without this they answer 404) their
    settings, and start the expiry sweeper with the app."""
    app[SETTINGS] = settings

    async def sweeper(app_: web.Application) -> AsyncIterator[None]:
        store = app_[CONTEXT].store

        async def loop() -> None:
            while True:
                try:
                    await sweep(store, settings)
                except Exception:  # the next round tries again; a sweep never takes the API down
                    log.exception("asset expiry sweep failed")
                await clock_sleep(settings.sweep_interval)

        task = asyncio.create_task(loop(), name="fngate-asset-sweeper")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sweeper)
