"""grpc: unary, server-streaming and bidirectional calls to the sample Echo service."""

from loadtests.grpc_user import GrpcUser  # noqa: F401
import loadtests.plugin  # noqa: F401  (final CSV write)
