"""gRPC: the protocol rules the gateway needs (status, deadlines, framing), routing a
call to its function, the relay to the instance, and the gRPC metrics."""
