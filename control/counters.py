"""Counters of the control loops that outlive any one run of them.

A replica's reconciler is replaced each time the replica becomes the leader again, so its
counts live here, owned by the server, and the API's /metrics reads them
(control/api/prometheus.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ControlCounters:
    drain_timeouts: int = 0  # drains that hit reconciler.drainTimeout and stopped instances with work in flight
