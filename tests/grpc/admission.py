"""A stand-in for the gateway limiter used until the relay runs inside the Gateway:
per-instance concurrency (maxRequestConcurrency) with a bounded FIFO queue."""

from __future__ import annotations

import asyncio
from collections import deque

from proxy.grpc import GrpcError, Status


class _Lease:
    def __init__(self, admission, endpoint):
        self.admission, self.endpoint, self.released = admission, endpoint, False

    def release(self):
        if not self.released:
            self.released = True
            self.admission.in_flight[self.endpoint.id] -= 1
            self.admission.wake()


class SlotAdmission:
    def __init__(self):
        self.in_flight: dict[str, int] = {}
        self.waiters: deque = deque()

    def wake(self):
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def __call__(self, route, deadline, request_id=""):
        while True:
            for ep in route.endpoints:
                if not ep.draining and self.in_flight.get(ep.id, 0) < route.max_concurrency:
                    self.in_flight[ep.id] = self.in_flight.get(ep.id, 0) + 1
                    return _Lease(self, ep)
            if len(self.waiters) >= route.queue_limit:
                raise GrpcError(Status.RESOURCE_EXHAUSTED, "queue full")
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut
