"""ramp: closed-loop HTTP invokers stepped up through FNGATE_LT_STEPS (Host- and header-routed)."""

from loadtests.invoke_users import Invoker  # noqa: F401
from loadtests.shapes import SteppedRamp  # noqa: F401
import loadtests.plugin  # noqa: F401  (final CSV write)
