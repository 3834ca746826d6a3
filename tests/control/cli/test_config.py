"""`fngate serve` options: defaults, a YAML/TOML config file, command-line precedence, bad values."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fngate.control.config import ConfigError, ServeConfig, add_serve_arguments, from_args


def parse(*argv: str) -> ServeConfig:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    return from_args(p.parse_args(list(argv)))


def test_defaults():
    cfg = parse()
    assert (cfg.host, cfg.api_port, cfg.http_port, cfg.grpc_port, cfg.admin_port) == ("127.0.0.1", 8080, 8000, 10081, 9090)
    assert cfg.data_dir == Path(".fngate") and cfg.store == "sqlite" and cfg.workers == 1 and cfg.samples is True


def test_yaml_file_sets_options_and_sections_and_flags_win(tmp_path):
    f = tmp_path / "fngate.yaml"
    f.write_text("api-port: 9000\nworkers: 2\ndata_dir: /var/lib/fngate\ninventory:\n  gpus: {H100: 2}\n")
    cfg = parse("--config", str(f), "--workers", "3", "--no-samples")
    assert cfg.api_port == 9000 and cfg.workers == 3 and cfg.data_dir == Path("/var/lib/fngate") and cfg.samples is False
    assert cfg.section("inventory") == {"gpus": {"H100": 2}} and cfg.section("catalog") == {}


def test_toml_file(tmp_path):
    f = tmp_path / "fngate.toml"
    f.write_text('store = "redis://127.0.0.1:6379/0"\n[backends.local]\nkind = "local"\n')
    cfg = parse("--config", str(f))
    assert cfg.store_is_redis and cfg.section("backends") == {"local": {"kind": "local"}}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--api-port", "70000"], "--api-port"),
        (["--workers", "0"], "--workers"),
        (["--store", "mysql://x"], "--store"),
        (["--tls-cert", "c.pem"], "--tls-key"),
        (["--trace-sample-ratio", "1.5"], "--trace-sample-ratio"),
        (["--otlp-endpoint", "collector:4318"], "--otlp-endpoint"),
        (["--stream-idle-timeout", "0"], "--stream-idle-timeout"),
    ],
)
def test_bad_options(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(*argv)


def test_traces_and_access_log_are_off_unless_set(tmp_path):
    cfg = parse()
    assert (cfg.otlp_endpoint, cfg.trace_sample_ratio, cfg.access_log) == (None, 1.0, None)
    f = tmp_path / "fngate.yaml"
    f.write_text("otlp-endpoint: http://127.0.0.1:4318\ntrace_sample_ratio: 0.25\n")
    cfg = parse("--config", str(f), "--access-log", "-")
    assert (cfg.otlp_endpoint, cfg.trace_sample_ratio, cfg.access_log) == ("http://127.0.0.1:4318", 0.25, "-")
    with pytest.raises(ConfigError, match="trace-sample-ratio must be a number, got 'x'"):
        from_args(_ns(f, "x"))


def test_stream_idle_timeout_from_the_command_line_or_the_file(tmp_path):
    assert parse().stream_idle_timeout == 300.0
    assert parse("--stream-idle-timeout", "1.5").stream_idle_timeout == 1.5
    f = tmp_path / "fngate.yaml"
    f.write_text("stream-idle-timeout: 30\n")
    assert parse("--config", str(f)).stream_idle_timeout == 30.0


def _ns(config: Path, ratio: str) -> argparse.Namespace:
    """Options as a config file gives them: a ratio that is not a number reaches from_args."""
    config.write_text(f"trace_sample_ratio: {ratio}\n")
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    return p.parse_args(["--config", str(config)])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        parse("--config", str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="does not parse"):
        parse("--config", str(broken))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse("--config", str(listy))
    typed = tmp_path / "typed.yaml"
    typed.write_text("api_port: eighty\n")
    with pytest.raises(ConfigError, match="api-port must be an integer"):
        parse("--config", str(typed))
