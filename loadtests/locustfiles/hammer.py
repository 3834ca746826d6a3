"""hammer: open-loop HTTP arrivals at a fixed total rate, to find where the target breaks."""

from loadtests.invoke_users import ArrivalInvoker  # noqa: F401
import loadtests.plugin  # noqa: F401  (final CSV write)
