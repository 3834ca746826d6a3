"""`fngate serve` configuration: command-line options plus an optional config file.

The file (YAML or TOML, by extension) may set any option under its long name with
dashes or underscores (`api_port: 8080`) and carries the sections other parts read:
`inventory` (the simulated GPUs), `catalog` (image -> command), `backends`.
Command-line options win over the file; the file wins over the defaults.
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from fngate.proxy.config import LOOPBACK


class ConfigError(Exception):
    """A bad option or config file; the message says which and why."""


@dataclass(frozen=True)
class ServeConfig:
    host: str = LOOPBACK
    api_port: int = 8080
    http_port: int = 8000
    grpc_port: int = 10081
    admin_port: int = 9090
    data_dir: Path = Path(".fngate")
    store: str = "sqlite"  # "sqlite" or a redis:// URL
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ready_file: Path | None = None
    samples: bool = True
    nca_id: str = "fngate"
    max_body: int = 1024 * 1024  # management API request body limit
    drain_timeout: float = 30.0  # on stop, how long the gateway lets requests in flight finish
    otlp_endpoint: str | None = None  # OTLP/HTTP collector for the gateway's traces; None: no tracing
    trace_sample_ratio: float = 1.0
    access_log: str | None = None  # JSON access log file, or "-" (standard output); None: off
    stream_idle_timeout: float = 300.0  # a started response (a stream) with no byte for this long is cut
    sections: dict[str, Any] = field(default_factory=dict)  # inventory, catalog, backends, ...

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name) or {})

    @property
    def store_is_redis(self) -> bool:
        return self.store.startswith(("redis://", "rediss://", "unix://"))

    def validate(self) -> ServeConfig:
        for name in ("api_port", "http_port", "grpc_port", "admin_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0-65535, got {port}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.store != "sqlite" and not self.store_is_redis:
            raise ConfigError(f"--store must be 'sqlite' or a redis:// URL, got {self.store!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if not 0 <= self.drain_timeout <= 86400:
            raise ConfigError(f"--drain-timeout must be 0-86400 seconds, got {self.drain_timeout:g}")
        if not 0 < self.stream_idle_timeout <= 86400:
            raise ConfigError(f"--stream-idle-timeout must be more than 0 and at most 86400 seconds, got {self.stream_idle_timeout:g}")
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise ConfigError(f"--trace-sample-ratio must be within 0..1, got {self.trace_sample_ratio:g}")
        if self.otlp_endpoint is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.otlp_endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--otlp-endpoint must be an http(s) URL (OTLP/HTTP), got {self.otlp_endpoint!r}")
        return self


_OPTIONS = {f.name for f in fields(ServeConfig)} - {"sections"}
_PATHS = {"data_dir", "tls_cert", "tls_key", "ready_file"}
_INTS = {"api_port", "http_port", "grpc_port", "admin_port", "workers", "max_body"}
_FLOATS = {"drain_timeout", "trace_sample_ratio", "stream_idle_timeout"}


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    # defaults are None so that an option left out does not override the config file
    p.add_argument("--host", help=f"bind address of every listener (default {LOOPBACK})")
    p.add_argument("--api-port", type=int, help="management API port (default 8080; 0 = any free port)")
    p.add_argument("--http-port", type=int, help="HTTP invocation port (default 8000)")
    p.add_argument("--grpc-port", type=int, help="gRPC invocation port (default 10081)")
    p.add_argument("--admin-port", type=int, help="gateway admin/metrics port (default 9090)")
    p.add_argument("--data-dir", type=Path, help="where state and the admin key live (default ./.fngate)")
    p.add_argument("--store", help="'sqlite' (default, in the data dir) or a redis:// URL")
    p.add_argument("--workers", type=int, help="gateway worker processes (default 1)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    p.add_argument("--config", type=Path, help="YAML or TOML file: options plus inventory/catalog/backends sections")
    p.add_argument("--ready-file", type=Path, help="write a JSON file with the bound URLs/ports once listening")
    p.add_argument(
        "--drain-timeout",
        type=float,
        help="on SIGTERM/SIGINT, seconds to let requests in flight finish before closing them (default 30); a second signal stops at once",
    )
    p.add_argument("--otlp-endpoint", help="export the gateway's traces over OTLP/HTTP to this collector (e.g. http://127.0.0.1:4318)")
    p.add_argument("--trace-sample-ratio", type=float, help="share of new traces recorded, 0..1 (default 1)")
    p.add_argument("--access-log", metavar="PATH|-", help="write one JSON line per request to PATH, or - for standard output")
    p.add_argument(
        "--stream-idle-timeout",
        type=float,
        help="seconds a started response (a stream) may go without a byte before it is cut (default 300); there is no total limit",
    )
    p.add_argument("--no-samples", dest="samples", action="store_const", const=False, help="do not deploy the sample functions")


def from_args(args: argparse.Namespace) -> ServeConfig:
    values: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        for name, value in load_file(args.config).items():
            norm = name.replace("-", "_")
            if norm in _OPTIONS:
                values[norm] = value
            else:
                sections[name] = value
    for name in _OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    for name in _PATHS & values.keys():
        values[name] = Path(values[name])
    for name in _INTS & values.keys():
        try:
            values[name] = int(values[name])
        except (TypeError, ValueError):
            raise ConfigError(f"{name.replace('_', '-')} must be an integer, got {values[name]!r}") from None
    for name in _FLOATS & values.keys():
        try:
            values[name] = float(values[name])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name.replace('_', '-')} must be a number{' of seconds' if name.endswith('timeout') else ''}, got {values[name]!r}"
            ) from None
    try:
        cfg = replace(ServeConfig(), sections=sections, **values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return cfg.validate()
