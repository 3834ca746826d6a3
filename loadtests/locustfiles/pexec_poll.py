"""pexec: legacy pexec with polling (202 → status polls → result) as one logical request."""

from fngate.loadtests.pexec_user import PexecUser  # noqa: F401
import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
