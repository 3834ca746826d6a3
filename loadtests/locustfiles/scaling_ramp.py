"""scaling-ramp: NVCF's long scaling ramp (users up, down and up again) of closed-loop HTTP invokers."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.invoke_users import Invoker  # noqa: F401
from fngate.loadtests.shapes import SteppedRamp  # noqa: F401
