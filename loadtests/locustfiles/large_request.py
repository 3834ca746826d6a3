"""large request: closed-loop invokers sending large bodies (FNGATE_LT_BODY_SIZE)."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.invoke_users import Invoker  # noqa: F401
