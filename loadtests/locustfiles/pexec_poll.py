"""pexec: legacy pexec with polling (202 → status polls → result) as one logical request."""

from loadtests.pexec_user import PexecUser  # noqa: F401
import loadtests.plugin  # noqa: F401  (final CSV write)
