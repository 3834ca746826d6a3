"""hammer: open-loop HTTP arrivals at a fixed total rate, to find where the target breaks."""

from fngate.loadtests.invoke_users import ArrivalInvoker  # noqa: F401
import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
