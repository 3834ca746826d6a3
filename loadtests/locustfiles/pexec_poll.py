"""pexec: legacy pexec with polling (202 → status polls → result) as one logical request."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.pexec_user import PexecUser  # noqa: F401
