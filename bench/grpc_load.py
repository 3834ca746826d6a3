"""gRPC for the load generator: the sample instance, the framed request body, a status probe.

h2load sends a length-prefixed protobuf body with gRPC headers, which costs far less
CPU than a Python client. It cannot read `grpc-status`, so before measuring, one real
grpcio call per target checks that unary and streaming calls end with OK.
"""

from __future__ import annotations

import struct
from pathlib import Path

from fngate.bench.procs import PYTHON, Proc, free_port, wait_port
from fngate.proxy.config import LOOPBACK

PAYLOAD = b"x" * 100


def grpc_body(replies: int) -> bytes:
    """One gRPC message (5-byte prefix + EchoRequest): unary when replies == 0, else EchoStream."""
    from fngate.backends.samples import grpc_echo_pb2 as pb

    req = pb.EchoRequest(message="bench", payload=PAYLOAD, repeat=replies)
    raw = req.SerializeToString()
    return struct.pack(">BI", 0, len(raw)) + raw


class GrpcEcho:
    """`python -m fngate.backends.samples.grpc_echo --impl grpcio` on a free port."""

    def __init__(self, cpus: str | None, log_dir: Path, impl: str = "grpcio") -> None:
        self.port = free_port()
        cmd = [PYTHON, "-m", "fngate.backends.samples.grpc_echo", "--host", LOOPBACK, "--port", str(self.port), "--impl", impl]
        self.proc = Proc(f"grpc-echo-{impl}", cmd, cpus, log_dir)
        wait_port(self.port, timeout=30, proc=self.proc)

    def stop(self) -> None:
        self.proc.stop()


def probe(address: str, headers: dict[str, str], replies: int) -> None:
    """One unary and one streaming call through `address`; raises unless both end OK."""
    import grpc

    from fngate.backends.samples import grpc_echo_pb2 as pb
    from fngate.backends.samples import grpc_echo_pb2_grpc as pb_grpc

    metadata = tuple(headers.items())
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EchoStub(channel)
        reply = stub.Echo(pb.EchoRequest(message="probe", payload=PAYLOAD), metadata=metadata, timeout=10)
        if reply.payload != PAYLOAD:
            raise RuntimeError(f"gRPC probe through {address}: unexpected reply {reply!r}")
        got = list(stub.EchoStream(pb.EchoRequest(message="probe", repeat=replies), metadata=metadata, timeout=10))
        if len(got) != max(replies, 1):
            raise RuntimeError(f"gRPC probe through {address}: {len(got)} of {replies} stream replies")
