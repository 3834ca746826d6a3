"""soak: a constant open-loop arrival rate (default 125/s per function) held for a duration."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.invoke_users import ArrivalInvoker  # noqa: F401
