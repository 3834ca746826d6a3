"""Two more HTTP/2 anchors beside nginx: nghttpx and haproxy as h2c -> HTTP/1.1 reverse proxies.

nginx's HTTP/2 is not the fastest there is, so the h2c scenario also runs nghttpx
(nghttp2's own proxy, built on the same libnghttp2 that ngh2 binds) and haproxy. Each
gets one worker (nghttpx `--workers=1`, haproxy `nbthread 1`), no access log, and
keep-alive to the same nginx static upstream as the nginx row, so the three rows
differ only in the proxy. Both run in the foreground from a private directory and read
no system-wide configuration.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fngate.bench.procs import Proc, free_port, wait_port
from fngate.proxy.config import LOOPBACK

# tool -> the Debian package that has it (the Makefile's ensure-tools list names the same)
PACKAGES = {"nghttpx": "nghttp2-proxy", "haproxy": "haproxy"}


def binary(tool: str) -> str | None:
    """The tool's path, or None when it is not installed (its row is then skipped)."""
    return shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)


def missing(tool: str) -> str:
    return f"{tool} is not installed: run `make bench` as root, or apt-get install {PACKAGES[tool]}"


class Nghttpx:
    """nghttpx with an h2c front (prior knowledge) and an HTTP/1.1 back to 127.0.0.1:upstream_port."""

    def __init__(self, work: Path, upstream_port: int, cpus: str | None, log_dir: Path) -> None:
        path = binary("nghttpx")
        if path is None:
            raise RuntimeError(missing("nghttpx"))
        self.port = free_port()
        cmd = [
            path,
            "--conf=/dev/null",  # else it reads /etc/nghttpx/nghttpx.conf
            f"--frontend={LOOPBACK},{self.port};no-tls",
            f"--backend={LOOPBACK},{upstream_port};;proto=http/1.1",
            "--workers=1",
            "--frontend-http2-max-concurrent-streams=256",  # as the nginx row's http2_max_concurrent_streams
            "--backend-keep-alive-timeout=120s",
            "--no-via",  # pass the request through as nginx does, without adding headers
            "--no-server-rewrite",
            "--log-level=WARN",
            f"--pid-file={work / 'nghttpx.pid'}",
        ]
        work.mkdir(parents=True, exist_ok=True)
        self.proc = Proc("nghttpx", cmd, cpus, log_dir)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        self.proc.stop()


def haproxy_conf(port: int, upstream_port: int) -> str:
    """One thread, h2c front, HTTP/1.1 back with idle connections shared by every stream."""
    return f"""global
    nbthread 1
    maxconn 8000  # haproxy needs about 2 descriptors per connection; the hard limit here is 20,000
    tune.h2.max-concurrent-streams 256

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    # reuse idle upstream connections for any stream, as nginx's `keepalive` pool does
    http-reuse always

frontend h2c
    bind {LOOPBACK}:{port} proto h2
    default_backend upstream

backend upstream
    server static {LOOPBACK}:{upstream_port}
"""


class Haproxy:
    """haproxy in the foreground (`-db`) with the configuration above."""

    def __init__(self, work: Path, upstream_port: int, cpus: str | None, log_dir: Path) -> None:
        path = binary("haproxy")
        if path is None:
            raise RuntimeError(missing("haproxy"))
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "haproxy.cfg"
        conf.write_text(haproxy_conf(self.port, upstream_port))
        self.proc = Proc("haproxy", [path, "-db", "-f", str(conf)], cpus, log_dir)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        self.proc.stop()
