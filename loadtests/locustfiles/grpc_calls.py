"""grpc: unary and server-streaming calls to the sample Echo service through the gateway."""

from loadtests.grpc_user import GrpcUser  # noqa: F401
import loadtests.plugin  # noqa: F401  (final CSV write)
