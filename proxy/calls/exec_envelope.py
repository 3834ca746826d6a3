"""`/v2/nvcf/exec/...`: pexec in NVCF's JSON envelope (spec part 2, 1.9; NVCF's post_exec.rs).

The request is `{"requestHeader": {"inputAssetReferences": [...], "pollDurationSeconds": N},
"requestBody": ...}`; the instance gets only `Content-Type: application/json` and the
serialized `requestBody`. The answer is `{"reqId", "status", "responseReference",
"percentComplete", "errorCode", "response"}` (absent fields left out) with pexec's status,
except that a large result's 302 is a 200 carrying its Location; no nvcf-reqid header.
Errors before the request is queued (key, rate limit, ...) stay plain problem+json.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from fngate.proxy.calls.exchange import RequestBody
from fngate.proxy.errors import BadRequest, ProxyError

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import Exchange, Headers
    from fngate.proxy.calls.pexec_files import Progress
    from fngate.proxy.calls.pexec_jobs import Job

BODY_LIMIT = 2 * 1024 * 1024  # axum's DefaultBodyLimit, which NVCF's exec route keeps
_JSON = b"application/json"


class InternalError(ProxyError):
    http_status, grpc_status = 500, 13  # INTERNAL


class _Collect:
    """A BodyListener that gathers a whole request body, up to `limit` bytes."""

    def __init__(self, ex: Exchange, limit: int) -> None:
        self.ex = ex
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_request_data(self, data: bytes) -> None:
        self.ex.body.consumed(len(data))
        if self.done.done():
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.set_exception(BadRequest("failed to collect request body: length limit exceeded"))
            return
        self.parts.append(data)

    def on_request_end(self) -> None:
        if not self.done.done():
            self.done.set_result(b"".join(self.parts))

    def on_request_gone(self) -> None:
        if not self.done.done():
            self.done.set_exception(BadRequest("failed to collect request body: the client went away"))


def _field_error(message: str) -> BadRequest:
    return BadRequest(message)  # serde's message is the detail; NVCF's wording differs in its positions


def parse_request(raw: bytes) -> tuple[bytes, bytes | None, list[str]]:
    """(serialized requestBody, poll header value or None, asset ids); 400 like NVCF's serde."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _field_error(str(exc)) from None
    if not isinstance(doc, dict):
        raise _field_error("invalid type: expected struct InvokeFunctionRequest")
    if "requestBody" not in doc:
        raise _field_error("missing field `requestBody`")
    header = doc.get("requestHeader")
    poll: bytes | None = None
    assets: list[str] = []
    if header is not None:
        if not isinstance(header, dict):
            raise _field_error("invalid type: expected struct RequestHeader")
        seconds = header.get("pollDurationSeconds")
        if seconds is not None:
            if not isinstance(seconds, int) or isinstance(seconds, bool):
                raise _field_error("invalid type: expected i64 for `pollDurationSeconds`")
            poll = b"%d" % seconds  # a negative one fails the poll-duration parse: 400, as NVCF
        refs = header.get("inputAssetReferences")
        if refs is not None:
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise _field_error("invalid type: expected a sequence of strings for `inputAssetReferences`")
            for ref in refs:
                try:
                    assets.append(str(uuid.UUID(ref)))
                except ValueError:  # NVCF: the parse error goes through the generic conversion, 500
                    raise InternalError(f"invalid asset id '{ref}'") from None
    return orjson.dumps(doc["requestBody"]), poll, assets


class ExecRequest(NamedTuple):
    """What the instance gets for an exec request, and its window and assets."""

    headers: Headers
    body: RequestBody
    poll: bytes | None  # the NVCF-POLL-SECONDS value `pollDurationSeconds` stands for
    asset_ids: list[str]


async def read_request(ex: Exchange) -> ExecRequest:
    """The client's envelope, read whole (at most 2 MiB) and unwrapped; 400 as NVCF."""
    collect = _Collect(ex, BODY_LIMIT)
    ex.read_body(collect)
    try:
        raw = await collect.done
    finally:
        ex.body.detach()
    body, poll_h, assets = parse_request(raw)
    instance_body = RequestBody(1 << 62, lambda n: None)
    instance_body.feed(body)
    instance_body.feed_eof()
    return ExecRequest([(b"content-type", _JSON)], instance_body, poll_h, assets)


def _envelope(ex: Exchange, status: int, doc: dict[str, Any]) -> int:
    body = orjson.dumps(doc)
    ex.start_response(status, [(b"content-type", _JSON), (b"content-length", b"%d" % len(body))])
    ex.send(body)
    ex.end()
    return status


class Envelope:
    """exec's answers (the Answer interface of proxy/calls/pexec.py)."""

    def result(self, ex: Exchange, job: Job) -> int:
        rid = job.request_id.decode()
        status = job.status
        if status == 302:
            location = next((v for n, v in job.headers if n == b"location"), b"").decode("latin-1")
            doc = {"reqId": rid, "status": "fulfilled", "responseReference": location, "percentComplete": 100}
            return _envelope(ex, 200, doc)
        if status != 200:  # NVCF: only 200 and 302 are fulfilled; any other status is errored
            return _envelope(ex, status, {"reqId": rid, "status": "errored", "errorCode": status})
        try:
            response = orjson.loads(job.body)
        except orjson.JSONDecodeError:
            raise InternalError(f"invalid json in response body for request_id: {rid}") from None
        return _envelope(ex, 200, {"reqId": rid, "status": "fulfilled", "percentComplete": 100, "response": response})

    def in_progress(self, ex: Exchange, request_id: bytes, progress: Progress | None) -> int:
        return _envelope(ex, 202, {"reqId": request_id.decode(), "status": "in-progress"})  # progress is dropped

    def timed_out(self, ex: Exchange, request_id: bytes, err: ProxyError) -> int:
        return _envelope(ex, err.http_status, {"reqId": request_id.decode(), "status": "errored", "errorCode": err.http_status})


ENVELOPE = Envelope()
