"""Rate-limit settings: /v2/nvcf/ratelimit/** (spec part 2, 2.1 and 0.2).

Only the settings: the `rateLimit` object of a function version, set here (deprecated
PUT, a full replacement) or through the version's PUT/POST, and cleared only by DELETE.
Enforcement is the gateway's.
"""

from __future__ import annotations

from aiohttp import web

from .. import records
from ..store.base import Conflict as StoreConflict
from ..store.base import Record
from .access import owner_of
from .auth import Principal, require
from .context import ctx, read_json_object
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .validation import validate_rate_limit

SCOPE = "update_function"

routes = web.RouteTableDef()

PATH = "/v2/nvcf/ratelimit/functions/{functionId}/versions/{functionVersionId}"


async def _owned_version(request: web.Request, principal: Principal) -> tuple[str, str, Record]:
    fid, vid = request.match_info["functionId"], request.match_info["functionVersionId"]
    fn = await ctx(request).store.get(records.FUNCTIONS, records.version_key(fid, vid))
    if fn is None or not (principal.all_accounts or owner_of(fn.value) == principal.nca_id):
        raise NotFound(f"Function id '{fid}', version '{vid}': Not found for account '{principal.nca_id}'")
    if not principal.reaches(fid, vid, owner=owner_of(fn.value), shared=False):
        raise Forbidden(f"Function id '{fid}', version '{vid}': Forbidden to update ratelimit for this function")
    return fid, vid, fn


async def _store(request: web.Request, fid: str, vid: str, fn: Record, doc: dict[str, object]) -> None:
    try:
        await ctx(request).store.put(records.FUNCTIONS, records.version_key(fid, vid), doc, expect=fn.revision)
    except StoreConflict:
        raise Conflict("The function version changed while its rate limit was being set; retry") from None


@routes.put(PATH)
async def put_rate_limit(request: web.Request) -> web.Response:
    """Deprecated; the body is an UpdateFunctionRequest, {"rateLimit": {...}}."""
    principal = await require(request, SCOPE)
    body = await read_json_object(request)
    rate_limit = validate_rate_limit(body)
    if rate_limit is None:
        raise BadRequest("Validation failed: field 'rateLimit' is required")
    fid, vid, fn = await _owned_version(request, principal)
    await _store(request, fid, vid, fn, {**fn.value, "rateLimit": rate_limit})
    return web.Response(status=204)


@routes.delete(PATH)
async def delete_rate_limit(request: web.Request) -> web.Response:
    principal = await require(request, SCOPE)
    fid, vid, fn = await _owned_version(request, principal)
    if "rateLimit" in fn.value:
        await _store(request, fid, vid, fn, {k: v for k, v in fn.value.items() if k != "rateLimit"})
    return web.Response(status=204)
