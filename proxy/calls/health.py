"""The gateway's own health answer on the invocation port (`/health`, `/v2/health/ready`):
200 while it serves; the admin listener has the fuller /healthz and /readyz."""

from __future__ import annotations

from fngate.proxy.calls.exchange import Exchange

HEALTH_PATHS = frozenset({b"/health", b"/v2/health/ready"})
_BODY = b'{"status":"ok"}'
_HEAD = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]


def answer_health(ex: Exchange) -> int:
    ex.start_response(200, _HEAD)
    ex.send(_BODY)
    ex.end()
    return 200
