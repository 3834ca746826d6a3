"""The control plane's view of gateway load, assembled from LoadReports.

Every gateway process sends a LoadReport on a timer (in-process, over the internal
HTTP channel, or through Redis). The board keeps the newest report per gateway,
forgets gateways that went quiet, and answers the questions the queue endpoints
and the autoscaler ask. Nothing here is on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fngate.proxy.routing.snapshot import LoadReport, VersionLoad


class LoadBoard:
    def __init__(self, stale_after: float = 10.0, clock: Callable[[], float] = time.time, remember: int = 10_000) -> None:
        self._reports: dict[str, LoadReport] = {}
        self._stale_after = stale_after
        self._clock = clock
        # request ids some gateway reported queued, newest last: a request that left the
        # queue is still known (NVCF answers 400 for it, 404 only for ids it never saw)
        self._seen: dict[str, str] = {}
        self._remember = remember

    def update(self, report: LoadReport) -> None:
        self._reports[report.gateway_id] = report
        for vid, v in report.versions.items():
            for rid in v.queued_ids:
                self._seen.pop(rid, None)
                self._seen[rid] = vid
        while len(self._seen) > self._remember:
            del self._seen[next(iter(self._seen))]

    def was_queued(self, request_id: str) -> str | None:
        """The version id of a request some gateway once reported queued, else None."""
        return self._seen.get(request_id)

    def _live(self) -> list[LoadReport]:
        cutoff = self._clock() - self._stale_after
        for gid in [g for g, r in self._reports.items() if r.at < cutoff]:
            del self._reports[gid]
        return list(self._reports.values())

    def version_load(self, version_id: str) -> VersionLoad:
        """The sum over live gateways (counters added, newest request time kept)."""
        total = VersionLoad()
        for report in self._live():
            v = report.versions.get(version_id)
            if v is None:
                continue
            total.queue_depth += v.queue_depth
            total.in_flight += v.in_flight
            total.busy_seconds += v.busy_seconds
            total.requests += v.requests
            total.cold_waiting += v.cold_waiting
            total.last_request_at = max(total.last_request_at, v.last_request_at)
            for eid, n in v.endpoint_in_flight.items():
                total.endpoint_in_flight[eid] = total.endpoint_in_flight.get(eid, 0) + n
        return total

    def endpoint_in_flight(self, version_id: str, endpoint_id: str) -> int | None:
        """Requests in flight on one endpoint over all live gateways, or None when no
        gateway reports per-endpoint counts for the version."""
        reported = False
        total = 0
        for report in self._live():
            v = report.versions.get(version_id)
            if v is None or not v.endpoint_in_flight:
                continue
            reported = True
            total += v.endpoint_in_flight.get(endpoint_id, 0)
        return total if reported else None

    def in_flight(self) -> int:
        """Requests holding an instance slot, over every version and live gateway."""
        return sum(v.in_flight for r in self._live() for v in r.versions.values())

    def queue_depth(self, version_id: str) -> int:
        return self.version_load(version_id).queue_depth

    def position(self, request_id: str) -> tuple[str, int] | None:
        """(version id, 1-based position) of a queued request, or None if no gateway
        reports it as queued. Positions are per gateway: an estimate, as in NVCF."""
        for report in self._live():
            for vid, v in report.versions.items():
                try:
                    return vid, v.queued_ids.index(request_id) + 1
                except ValueError:
                    continue
        return None

    def gateway_ids(self) -> set[str]:
        """The gateways (of this process, of other workers and replicas) that reported lately."""
        return {r.gateway_id for r in self._live()}

    def version_ids(self) -> set[str]:
        return {vid for r in self._live() for vid in r.versions}
