"""Every error the gateway itself produces, with its HTTP and gRPC status, and the one
place that turns it into an HTTP answer (`error_fields`): problem+json `{status, title,
detail}` (spec 3.2). On a gRPC stream the same error is a grpc-status, built in one place
too (proxy/grpc/protocol.error_headers, from `grpc_status`).

Missing or unparseable `Authorization` is the spec's exception: a plain-text 401."""

from __future__ import annotations

from http import HTTPStatus

import orjson

PROBLEM_JSON = b"application/problem+json"


class ProxyError(Exception):
    http_status = 502
    grpc_status = 14  # UNAVAILABLE
    plain = False  # body is text/plain instead of problem+json
    empty = False  # body is empty (504 on the poll window, per spec)

    def __init__(self, detail: str = "", headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers

    def body(self) -> tuple[bytes, bytes]:
        """(content type, body) of the response."""
        if self.empty:
            return b"", b""
        if self.plain:
            return b"text/plain; charset=utf-8", self.detail.encode()
        doc = {"status": self.http_status, "title": HTTPStatus(self.http_status).phrase}
        if self.detail:
            doc["detail"] = self.detail
        return PROBLEM_JSON, orjson.dumps(doc)


class BadRequest(ProxyError):
    http_status, grpc_status = 400, 3  # INVALID_ARGUMENT


class Degraded(ProxyError):
    http_status, grpc_status = 400, 9  # FAILED_PRECONDITION


class MissingAuth(ProxyError):
    http_status, grpc_status, plain = 401, 16, True  # UNAUTHENTICATED


class Unauthorized(ProxyError):
    http_status, grpc_status = 401, 16  # UNAUTHENTICATED


class PaymentRequired(ProxyError):
    """NVCF's answer for a public function invoked by an account that does not own it."""

    http_status, grpc_status = 402, 7  # PERMISSION_DENIED


class Forbidden(ProxyError):
    http_status, grpc_status = 403, 7  # PERMISSION_DENIED


class NotFound(ProxyError):
    http_status, grpc_status = 404, 5  # NOT_FOUND


class NotInvokable(ProxyError):
    """A gRPC call for a version that exists but takes no calls (INACTIVE, ...). HTTP
    answers 404 for the same state (proxy/lookup.resolve); a gRPC client expects
    FAILED_PRECONDITION: the call will not work until the function changes."""

    http_status, grpc_status = 404, 9  # FAILED_PRECONDITION


class NotReady(NotInvokable):
    """A gRPC call for a version that takes no calls yet (DEPLOYING): UNAVAILABLE, which
    gRPC clients retry."""

    http_status, grpc_status = 404, 14  # UNAVAILABLE


class WrongProtocol(ProxyError):
    """A gRPC call for a function that is not a gRPC function."""

    http_status, grpc_status = 400, 9  # FAILED_PRECONDITION


class HeadersTooLarge(ProxyError):
    http_status, grpc_status = 431, 8  # RESOURCE_EXHAUSTED


class RequestTimeout(ProxyError):
    """The client did not send its request (head or body) in time."""

    http_status, grpc_status = 408, 4  # DEADLINE_EXCEEDED


class QueueFull(ProxyError):
    http_status, grpc_status = 429, 8  # RESOURCE_EXHAUSTED


class RateLimited(ProxyError):
    """A function rate limit (proxy/routing/rate_limits.py): NVCF's bare 429 problem, plus the
    `Retry-After` NVCF does not send."""

    http_status, grpc_status = 429, 8  # RESOURCE_EXHAUSTED


class PollTimeout(ProxyError):
    """No response headers within NVCF-POLL-SECONDS + grace: 504, empty body."""

    http_status, grpc_status, empty = 504, 4, True  # DEADLINE_EXCEEDED


class UpstreamUnavailable(ProxyError):
    http_status, grpc_status = 502, 14  # UNAVAILABLE


class UpstreamTimeout(ProxyError):
    http_status, grpc_status = 504, 4  # DEADLINE_EXCEEDED


class Draining(ProxyError):
    http_status, grpc_status = 503, 14  # UNAVAILABLE


class StoreUnavailable(ProxyError):
    """The shared store (Redis) a pexec poll must read cannot be reached: 503 with a
    `Retry-After`, not the 404 that would tell the client its request is gone."""

    http_status, grpc_status = 503, 14  # UNAVAILABLE

    def __init__(self, detail: str = "the result store is unreachable; poll again", retry_after: int = 1) -> None:
        super().__init__(detail, ((b"retry-after", b"%d" % retry_after),))


def error_fields(err: ProxyError, request_id: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(header fields, body) of the HTTP answer to a gateway error: the one place they are
    built, for the call (proxy/calls/call.answer_error) and for the drivers' refusals of
    requests they cannot hand on. Every answer names its request (nvcf-reqid) and says it
    errored (nvcf-status), as NVCF's do."""
    ctype, body = err.body()
    headers = [(b"content-length", b"%d" % len(body))]
    if ctype:
        headers.append((b"content-type", ctype))
    headers.extend(err.headers)
    headers.append((b"nvcf-reqid", request_id))
    headers.append((b"nvcf-status", b"errored"))
    return headers, body


def status_for_nvcf(status: int) -> bytes:
    """The `nvcf-status` value for a response status (spec 5.4)."""
    if status == 202:
        return b"in-progress"
    if status >= 400:
        return b"errored"
    return b"fulfilled"


class InternalError(ProxyError):
    """A defect in the gateway itself: the request is answered, never left hanging."""

    http_status, grpc_status = 500, 13  # INTERNAL


class GatewayTimeout(ProxyError):
    """A 504 with a detail (a poll for a request its instance side gave up on)."""

    http_status, grpc_status = 504, 4  # DEADLINE_EXCEEDED
