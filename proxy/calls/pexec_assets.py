"""Input assets at invocation (spec part 2, 6.2-6.3), for pexec and exec only.

`NVCF-INPUT-ASSET-REFERENCES` names asset ids of the caller's account. Each is resolved
through the control plane's asset lookup (`GET {api}/fngate/internal/assets/{nca}/{id}`,
admin key: content type and a presigned GET, as NVCF's invocation service HEADs the
object and presigns it), then downloaded, as NVCF's worker does, to
`{NVCF-ASSET-DIR}/{assetId}` (mode 0644, the directory 0777) before the instance is
called; the instance also gets `NVCF-FUNCTION-ASSET-IDS`. The directory goes when the
request ends.

Why a lookup and not the routing snapshot: assets are per caller and short-lived (24 h),
uploaded at any moment and used right after; carrying every account's assets in the
table would grow it and republish it on every upload. Only requests that carry the
header (path routes, never the host-routed hot path) ask, and the answers are cached
in a bounded LRU (4096 entries, 60 s; a miss is never cached, so an asset uploaded a
moment ago is found at once).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO

import aiohttp

from fngate.proxy.errors import BadRequest, NotFound, ProxyError

CACHE_SIZE = 4096
CACHE_SECONDS = 60.0
_CHUNK = 1024 * 1024
HEADER = b"nvcf-input-asset-references"


class InvalidAssetHeader(BadRequest):
    """axum's TypedHeader rejection for an entry that is not a UUID: plain text."""

    plain = True


class AssetLookupFailed(ProxyError):
    """The lookup could not be answered (NVCF: an S3 error other than not-found, 500)."""

    http_status, grpc_status = 500, 13  # INTERNAL


class AssetDownloadFailed(ProxyError):
    """NVCF's worker: any failed download is this 500 problem."""

    http_status, grpc_status = 500, 13  # INTERNAL

    def body(self) -> tuple[bytes, bytes]:
        import orjson

        doc = {
            "type": "urn:nvcf-worker-service:problem-details:internal-server-error",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "Internal error while downloading assets",
        }
        return b"application/problem+json", orjson.dumps(doc)


def parse_asset_header(values: list[bytes]) -> list[str]:
    """NVCF's InputAssetHeader: every value (repeats concatenated), split on commas,
    trimmed, empty entries skipped, each a UUID (else 400); values that are not
    visible ASCII are skipped, as `HeaderValue::to_str` fails on them."""
    ids: list[str] = []
    for raw in values:
        if not raw.isascii():
            continue
        for part in raw.decode("ascii").split(","):
            part = part.strip()
            if not part:
                continue
            try:
                ids.append(str(uuid.UUID(part)))
            except ValueError:
                raise InvalidAssetHeader("invalid HTTP header (nvcf-input-asset-references)") from None
    return ids


@dataclass(frozen=True, slots=True)
class AssetRef:
    content_type: str
    url: str


class StagedAssets:
    """One request's downloaded assets."""

    __slots__ = ("header_lines", "path")

    def __init__(self, path: str, asset_ids: list[str]) -> None:
        self.path = path
        self.header_lines = b"NVCF-FUNCTION-ASSET-IDS: %s\r\n" % ",".join(asset_ids).encode()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class AssetResolver:
    def __init__(self, api_url: str, admin_key: str, asset_dir: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.asset_dir = asset_dir
        self._auth = {"Authorization": f"Bearer {admin_key}"}
        self._cache: OrderedDict[tuple[str, str], tuple[float, AssetRef]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60))
        return self._session

    async def lookup(self, nca_id: str, asset_id: str) -> AssetRef:
        key = (nca_id, asset_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        url = f"{self.api_url}/fngate/internal/assets/{nca_id}/{asset_id}"
        try:
            async with self._client().get(url, headers=self._auth, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status == 404:
                    raise NotFound(f"NotFound error: failed to find asset {asset_id}")
                if resp.status != 200:
                    raise AssetLookupFailed(f"the asset lookup answered {resp.status}")
                doc = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AssetLookupFailed(f"the asset lookup failed: {exc}") from None
        if not doc.get("contentType"):
            raise AssetLookupFailed("asset missing content type")
        ref = AssetRef(doc["contentType"], doc["url"])
        self._cache[key] = (now + CACHE_SECONDS, ref)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return ref

    async def stage(self, nca_id: str, asset_ids: list[str], request_id: str) -> StagedAssets:
        """Resolve every id for the caller's account (404 for one it does not have),
        then download them all in parallel into the request's asset directory."""
        refs = await asyncio.gather(*(self.lookup(nca_id, a) for a in asset_ids))
        staged = StagedAssets(os.path.join(self.asset_dir, request_id), asset_ids)
        try:
            await asyncio.to_thread(_make_dir, staged.path)
            await asyncio.gather(*(self._download(ref, os.path.join(staged.path, a)) for a, ref in zip(asset_ids, refs, strict=True)))
        except (OSError, aiohttp.ClientError, TimeoutError, AssetDownloadFailed):
            staged.remove()
            raise AssetDownloadFailed() from None
        return staged

    async def _download(self, ref: AssetRef, path: str) -> None:
        async with self._client().get(ref.url) as resp:
            if resp.status != 200:
                raise AssetDownloadFailed()
            f = await asyncio.to_thread(_open_for_asset, path)
            try:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    await asyncio.to_thread(f.write, chunk)
            finally:
                f.close()

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                asyncio.get_running_loop().create_task(session.close())
            except RuntimeError:  # no loop any more: nothing is open on it either
                pass


def _make_dir(path: str) -> None:
    os.makedirs(path, mode=0o777, exist_ok=True)
    os.chmod(path, 0o777)  # NVCF's worker: 0777 (makedirs' mode is masked by the umask)


def _open_for_asset(path: str) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, "wb")
