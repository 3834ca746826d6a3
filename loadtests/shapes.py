"""Load shapes: NVCF's stepped ramps, each step ramping then holding: the ramp test
(5 → 25 → 100 → 500 → 1000 users, 1 min ramps, 2 min holds) and the long scaling test
(100 → 500 → 200 → 50 → 1000 users, 5 min ramps, 15 min holds), steps that may go down."""

from __future__ import annotations

from locust import LoadTestShape

from .knobs import Knobs


class SteppedRamp(LoadTestShape):
    """Each step takes `step_seconds`: the first `ramp_fraction` of it ramps (up or down) to its
    user count, the rest holds."""

    def __init__(self) -> None:
        super().__init__()
        knobs = Knobs.from_env()
        self.steps = knobs.steps or (1,)
        self.step_seconds = knobs.step_seconds
        self.ramp_fraction = knobs.ramp_fraction

    def tick(self):
        step = int(self.get_run_time() // self.step_seconds)
        if step >= len(self.steps):
            return None
        previous = self.steps[step - 1] if step else 0
        users = self.steps[step]
        ramp_seconds = max(self.step_seconds * self.ramp_fraction, 0.1)
        return users, max(abs(users - previous) / ramp_seconds, 1.0)
