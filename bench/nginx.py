"""nginx in two roles: the static upstream (the physical limit) and the reverse proxy (the anchor),
the latter also as a gRPC proxy (`grpc_pass`) in front of the gRPC instance.

Both run in the foreground (`daemon off`) from a private prefix directory, with one
worker unless told otherwise, access logs off, and the upstream keep-alive the
baseline used (`keepalive 256`), so the proxy row measures a proxy and not TCP setup.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fngate.bench.procs import Proc, free_port, wait_port
from fngate.proxy.config import LOOPBACK

# path -> body size: the three response sizes of the HTTP scenarios
BODIES = {"/small": 100, "/1k": 1024, "/1m": 1024 * 1024}


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise RuntimeError("nginx is not installed: run `make bench` as root, or apt-get install nginx")
    return found


def _common(prefix: Path, workers: int) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; multi_accept on; }}
"""


def _http_common(prefix: Path) -> str:
    return f"""    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


def write_bodies(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for path, size in BODIES.items():
        body = b'{"ok":true,"pad":"' + b"x" * max(size - 20, 0) + b'"}'
        (root / path.lstrip("/")).write_bytes(body[:size] if size >= 20 else body)


def upstream_conf(prefix: Path, port: int, h2c_port: int) -> str:
    """A static server: /small, /1k, /1m over HTTP/1.1 on `port` and h2c on `h2c_port`."""
    root = prefix / "www"
    return (
        _common(prefix, 1)
        + f"""http {{
{_http_common(prefix)}    default_type application/json;
    sendfile on;
    tcp_nopush on;
    server {{
        listen {LOOPBACK}:{port} reuseport backlog=4096;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
    server {{
        listen {LOOPBACK}:{h2c_port} http2 reuseport backlog=4096;
        http2_max_concurrent_streams 256;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
}}
"""
    )


def proxy_conf(prefix: Path, port: int, h2c_port: int, upstream_port: int, workers: int) -> str:
    """A reverse proxy to 127.0.0.1:upstream_port with upstream keep-alive, h1 and h2c fronts."""
    location = """        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_max_temp_file_size 0;
        }
"""
    return (
        _common(prefix, workers)
        + f"""http {{
{_http_common(prefix)}    upstream up {{
        server {LOOPBACK}:{upstream_port};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen {LOOPBACK}:{port} reuseport backlog=4096;
{location}    }}
    server {{
        listen {LOOPBACK}:{h2c_port} http2 reuseport backlog=4096;
        http2_max_concurrent_streams 256;
{location}    }}
}}
"""
    )


def grpc_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    """nginx's own gRPC proxy: h2c on `port`, `grpc_pass` to the instance at upstream_port over
    kept-alive HTTP/2 connections (nginx runs one call per upstream connection at a time)."""
    return (
        _common(prefix, 1)
        + f"""http {{
{_http_common(prefix)}    upstream grpc_up {{
        server {LOOPBACK}:{upstream_port};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen {LOOPBACK}:{port} http2 reuseport backlog=4096;
        http2_max_concurrent_streams 256;
        location / {{ grpc_pass grpc://grpc_up; }}
    }}
}}
"""
    )


class Nginx:
    """One nginx (upstream or proxy) in its own prefix directory."""

    def __init__(self, name: str, prefix: Path, conf: str, port: int, h2c_port: int, cpus: str | None, log_dir: Path):
        self.name, self.port, self.h2c_port = name, port, h2c_port
        prefix.mkdir(parents=True, exist_ok=True)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / sub).mkdir(exist_ok=True)
        conf_path = prefix / "nginx.conf"
        conf_path.write_text(conf)
        self.proc = Proc(name, [nginx_binary(), "-p", str(prefix), "-c", str(conf_path), "-e", str(prefix / "error.log")], cpus, log_dir)
        wait_port(port, proc=self.proc)
        wait_port(h2c_port, proc=self.proc)

    @classmethod
    def upstream(cls, work: Path, cpus: str | None, log_dir: Path) -> Nginx:
        prefix = work / "nginx-upstream"
        write_bodies(prefix / "www")
        port, h2c_port = free_port(), free_port()
        return cls("nginx-upstream", prefix, upstream_conf(prefix, port, h2c_port), port, h2c_port, cpus, log_dir)

    @classmethod
    def proxy(cls, work: Path, upstream_port: int, cpus: str | None, log_dir: Path, workers: int = 1) -> Nginx:
        name = f"nginx-proxy-{workers}w"
        prefix = work / name
        port, h2c_port = free_port(), free_port()
        conf = proxy_conf(prefix, port, h2c_port, upstream_port, workers)
        return cls(name, prefix, conf, port, h2c_port, cpus, log_dir)

    @classmethod
    def grpc_proxy(cls, work: Path, upstream_port: int, cpus: str | None, log_dir: Path) -> Nginx:
        """The gRPC anchor: one port (h2c), so `port` and `h2c_port` are the same."""
        prefix = work / "nginx-grpc-proxy"
        port = free_port()
        return cls("nginx-grpc-proxy", prefix, grpc_proxy_conf(prefix, port, upstream_port), port, port, cpus, log_dir)

    def stop(self) -> None:
        self.proc.stop()
