"""sse: users holding SSE streams, recording time to first event, gaps and stream duration."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.sse_user import SseUser  # noqa: F401
