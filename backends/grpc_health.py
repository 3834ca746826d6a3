"""gRPC health checks of instances (standard grpc.health.v1.Health/Check).

Used by backends for functions whose `health.protocol` is gRPC: an instance is ready
when Check answers SERVING within the timeout. Each check opens its own short-lived
h2c connection, so a wedged instance cannot hold a probe beyond its timeout.
"""

from __future__ import annotations

import asyncio

from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse


async def probe_grpc_health(host: str, port: int, service: str = "", timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail): detail is the serving status name, or why the check failed."""
    channel = Channel(host, port)
    try:
        async with asyncio.timeout(timeout):
            reply = await HealthStub(channel).Check(HealthCheckRequest(service=service))
    except TimeoutError:
        return False, f"gRPC health check timed out after {timeout:g} s"
    except Exception as exc:  # any failure to get an answer (refused, reset, grpc-status) means not healthy
        return False, f"gRPC health check failed: {type(exc).__name__}: {exc}"
    finally:
        channel.close()
    status = HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == HealthCheckResponse.SERVING, status


async def check_grpc_health(host: str, port: int, service: str = "", timeout: float = 2.0) -> bool:
    """True when the instance answers SERVING for `service` ("" = the whole server)."""
    healthy, _ = await probe_grpc_health(host, port, service, timeout)
    return healthy
