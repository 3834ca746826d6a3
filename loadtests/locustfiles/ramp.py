"""ramp: closed-loop HTTP invokers stepped up through FNGATE_LT_STEPS (Host- and header-routed)."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.invoke_users import Invoker  # noqa: F401
from fngate.loadtests.shapes import SteppedRamp  # noqa: F401
