"""The LLM gateway's errors: NVCF's `{"message": "..."}` bodies (spec part 2, 8.4), or
OpenAI's `{"error": {...}}` for a client that asks for it with `X-Error-Format: openai`.

NVCF's gateway answers echo's default shape; the OpenAI SDKs read either (they take the
message from `error.message` or from the whole body). The OpenAI shape is opt-in so
that a client written against NVCF sees what NVCF sends."""

from __future__ import annotations

import orjson

from fngate.proxy.errors import ProxyError

JSON = b"application/json"

# gRPC code names of NVCF's AuthLlmInvocation -> the deliberately generic answers (8.3)
AUTH_MESSAGES = {
    400: "invalid request",
    401: "authentication failed",
    403: "permission denied",
    404: "not found",
    503: "authentication service unavailable",
    504: "authentication timed out",
}

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


class LlmError(ProxyError):
    """A gateway answer with NVCF's LLM body; `http_status` is per instance."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = (), openai: bool = False) -> None:
        super().__init__(message, headers)
        self.http_status = status
        self.openai = openai

    def body(self) -> tuple[bytes, bytes]:
        return JSON, message_body(self.http_status, self.detail, self.openai)


def message_body(status: int, message: str, openai: bool) -> bytes:
    if openai:
        kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": str(status)}})
    return orjson.dumps({"message": message})


def generic_auth_error(err: ProxyError, openai: bool) -> LlmError:
    """NVCF's key check errors (proxy/routing/lookup.py) as the LLM gateway words them: the
    status class only, never which part failed. A public function of another account
    (NVCF's 402) is a permission error here."""
    status = err.http_status
    if status == 402:
        status = 403
    message = AUTH_MESSAGES.get(status)
    if message is None:
        return LlmError(502, "authentication failed", openai=openai)
    return LlmError(status, message, openai=openai)
