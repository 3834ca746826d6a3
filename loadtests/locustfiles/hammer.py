"""hammer: open-loop HTTP arrivals at a fixed total rate, to find where the target breaks."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.invoke_users import ArrivalInvoker  # noqa: F401
