"""large response: closed-loop invokers asking for large bodies (FNGATE_LT_RESPONSE_SIZE)."""

from loadtests.invoke_users import Invoker  # noqa: F401
import loadtests.plugin  # noqa: F401  (final CSV write)
