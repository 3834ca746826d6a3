"""Open-loop arrivals for Locust, like k6's constant/ramping-arrival-rate executors.

Locust users are closed-loop: a slow response delays the next request, so a saturated
system quietly receives less load. A scheduler user here instead issues arrivals at
fixed times (`rate_per_user` per second) and runs each one on its own greenlet, at most
`max_inflight` at once. An arrival due while that many are still in flight is not sent;
it is recorded as a failed `DROPPED` entry (k6's `dropped_iterations`), so the SLI
evaluation sees that the target could not keep up. When the run ends, arrivals stop and
those in flight may finish (within Locust's `--stop-timeout`) so they are recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
from gevent.pool import Pool
from locust.user.task import LOCUST_STATE_STOPPING

from .checks import DROPPED, Failed

if TYPE_CHECKING:
    from locust.env import Environment

    from .knobs import Knobs

_DROP_MESSAGE = f"{DROPPED} arrival: too many in flight"
_RAMP_FLOOR = 0.02  # a ramp starts at 2% of the rate, not at zero (which would never issue)


class ArrivalRate:
    """Mixed into a User that has `knobs`, `invoke()` and `arrival_name()`."""

    # provided by the User this is mixed into
    knobs: Knobs
    environment: Environment
    _state: str | None
    invoke: Callable[[], None]
    arrival_name: Callable[[], str]

    def arrival_rate(self) -> float:
        """Arrivals per second this user issues (a user driving another kind of call overrides it)."""
        return self.knobs.rate_per_user

    def run_arrivals(self) -> None:
        rate = self.arrival_rate()
        if rate <= 0:
            raise ValueError(f"open-loop scenarios need a positive arrival rate ({type(self).__name__} has {rate})")
        ramp_up = self.knobs.ramp_up
        pool = Pool(max(1, min(self.knobs.max_inflight, getattr(self, "concurrency", 10))))
        started = due = time.perf_counter()
        try:
            while True:
                delay = due - time.perf_counter()
                if delay > 0:
                    gevent.sleep(delay)
                if self._state == LOCUST_STATE_STOPPING:  # the run is over: no new arrivals
                    break
                if pool.full():
                    self._drop()
                else:
                    pool.spawn(self.invoke)
                share = min(1.0, (due - started) / ramp_up) if ramp_up > 0 else 1.0
                due += 1.0 / (rate * max(share, _RAMP_FLOOR))
            pool.join()
        finally:
            pool.kill(block=False)

    def _drop(self) -> None:
        self.environment.events.request.fire(
            request_type="DROPPED",
            name=self.arrival_name(),
            response_time=0,
            response_length=0,
            exception=Failed(_DROP_MESSAGE),
            context={},
        )
