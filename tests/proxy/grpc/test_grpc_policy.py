"""The gRPC rules the gateway applies without decoding protobuf (proxy/grpc/protocol.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fngate.proxy import errors
from fngate.proxy.grpc.protocol import (
    FramingError,
    MessageFraming,
    Status,
    encode_message,
    format_timeout,
    is_grpc_content_type,
    parse_timeout,
    status_of,
)
from fngate.proxy.instances.h2 import UpstreamLost


@pytest.mark.parametrize(
    "value,seconds", [("1S", 1.0), ("250m", 0.25), ("3M", 180.0), ("2H", 7200.0), ("100u", 1e-4), ("99999999n", 0.099999999)]
)
def test_parse_timeout(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "1", "1s", "123456789S", "-1S", "1.5S", "soon"])
def test_parse_timeout_rejects_malformed(value):
    with pytest.raises(ValueError):
        parse_timeout(value)


@given(st.floats(min_value=0, max_value=10_000_000))
def test_format_timeout_round_trips_never_shorter(seconds):
    text = format_timeout(seconds)
    assert len(text) <= 9
    back = parse_timeout(text)
    assert back >= seconds - 1e-9 and back <= seconds * 1.0001 + 1e-6


def test_content_type_detection():
    for ok in ("application/grpc", "application/grpc+proto", "application/grpc;charset=x", "Application/GRPC"):
        assert is_grpc_content_type(ok)
    for no in (None, "", "application/grpc-web", "application/grpcx", "application/json"):
        assert not is_grpc_content_type(no)


def test_grpc_message_percent_encoding():
    assert encode_message("plain text") == "plain text"
    assert encode_message("100% ✓\n") == "100%25 %E2%9C%93%0A"


class _HttpOnly(Exception):
    http_status = 404


def _proxy_errors() -> list[type[errors.ProxyError]]:
    found, todo = [], [errors.ProxyError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == errors.__name__]


@pytest.mark.parametrize("cls", _proxy_errors(), ids=lambda c: c.__name__)
def test_every_gateway_error_names_its_own_grpc_status(cls):
    """Each error class states its gRPC status beside its HTTP status (none inherits a
    guess), and status_of answers with it and the error's detail."""
    assert "grpc_status" in vars(cls) and "http_status" in vars(cls)
    assert status_of(cls("why")) == (Status(cls.grpc_status), "why")


def test_status_of_never_guesses_from_http():
    assert status_of(errors.QueueFull("full")) == (Status.RESOURCE_EXHAUSTED, "full")
    assert status_of(errors.NotReady("deploying")) == (Status.UNAVAILABLE, "deploying")
    assert status_of(UpstreamLost("gone")) == (Status.UNAVAILABLE, "gone")
    assert status_of(_HttpOnly("nope")) == (Status.INTERNAL, "nope")  # an HTTP status alone says nothing for gRPC
    assert status_of(RuntimeError("boom")) == (Status.INTERNAL, "boom")


def _frame(n: int, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", n) + b"x" * n


@given(st.lists(st.integers(0, 3000), max_size=20), st.integers(1, 700))
def test_framing_follows_prefixes_across_any_split(sizes, chunk):
    stream = b"".join(_frame(n) for n in sizes)
    framing = MessageFraming(1 << 20)
    for i in range(0, len(stream), chunk):
        framing.feed(stream[i : i + chunk])
    assert framing.at_boundary()


def test_framing_rejects_bad_prefixes():
    with pytest.raises(FramingError):
        MessageFraming(100).feed(_frame(3, flag=2))
    with pytest.raises(FramingError):
        MessageFraming(100).feed(_frame(101))
    partial = MessageFraming(100)
    partial.feed(_frame(10)[:8])
    assert not partial.at_boundary()
