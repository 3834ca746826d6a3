"""grpc: unary, server-streaming and bidirectional calls to the sample Echo service."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.grpc_user import GrpcUser  # noqa: F401
