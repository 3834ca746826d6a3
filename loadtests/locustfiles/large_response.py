"""large response: closed-loop invokers asking for large bodies (FNGATE_LT_RESPONSE_SIZE)."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.invoke_users import Invoker  # noqa: F401
