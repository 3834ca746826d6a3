"""What the gRPC side needs of the instance slots: the limiter's (proxy/routing/limiter.py)
two ways to take one, and the lease they give. A gRPC session (proxy/grpc/sessions.py)
offers the same to the calls it seats, so the relay takes either."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fngate.proxy.routing.snapshot import Endpoint, VersionRoute


class Lease(Protocol):
    @property
    def endpoint(self) -> Endpoint: ...

    def release(self) -> None: ...


class Slots(Protocol):
    def try_acquire(self, route: VersionRoute, exclude: str | None = None, owner: object = None) -> Lease | None: ...
    async def admit(
        self,
        route: VersionRoute,
        deadline: float | None,
        request_id: str = "",
        exclude: str | None = None,
        *,
        owner: object = None,
        pin: str | None = None,  # the only instance a queued request may take (LLM sticky sessions)
    ) -> Lease: ...
