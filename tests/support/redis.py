"""Finding and probing a real redis-server for the tests."""

from __future__ import annotations

import os
import shutil
import socket


def find_redis_server() -> str | None:
    for candidate in (shutil.which("redis-server"), "/usr/sbin/redis-server", "/usr/bin/redis-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def redis_answers(port: int) -> bool:
    """A redis-server on 127.0.0.1:port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
