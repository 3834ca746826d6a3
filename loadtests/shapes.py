"""Load shapes: NVCF's stepped ramp (5 → 25 → 100 → 500 → 1000 users, ramp then hold)."""

from __future__ import annotations

from locust import LoadTestShape

from .knobs import Knobs


class SteppedRamp(LoadTestShape):
    """Each step takes `step_seconds`: the first third ramps to its user count, the rest holds."""

    def __init__(self) -> None:
        super().__init__()
        knobs = Knobs.from_env()
        self.steps = knobs.steps or (1,)
        self.step_seconds = knobs.step_seconds

    def tick(self):
        step = int(self.get_run_time() // self.step_seconds)
        if step >= len(self.steps):
            return None
        previous = self.steps[step - 1] if step else 0
        users = self.steps[step]
        ramp_seconds = max(self.step_seconds / 3.0, 0.1)
        return users, max(abs(users - previous) / ramp_seconds, 1.0)
