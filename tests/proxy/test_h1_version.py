"""The HTTP/1.1 driver tells HTTP/1.1 from the other versions by llhttp's keep-alive
verdict when a request has no Connection field (proxy/drivers/h1.py, on_headers_complete):
the installed httptools must keep such a request alive exactly when it is HTTP/1.1, and
refuse the versions llhttp does not take."""

from __future__ import annotations

import httptools
import pytest


class Head:
    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | None = None
        self.seen: tuple[str, bool] | None = None

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.seen = (self.parser.get_http_version(), self.parser.should_keep_alive())


def parse(version: str, fields: str = "") -> tuple[str, bool]:
    head = Head()
    head.parser = httptools.HttpRequestParser(head)
    head.parser.feed_data(f"GET / HTTP/{version}\r\nHost: a\r\n{fields}\r\n".encode())
    assert head.seen is not None
    return head.seen


@pytest.mark.parametrize("version", ["0.9", "1.0", "1.1", "2.0"])
def test_without_a_connection_field_keep_alive_is_http11(version):
    got, keep_alive = parse(version)
    assert got == version
    assert keep_alive == (version == "1.1")


@pytest.mark.parametrize("version", ["1.2", "1.9", "2.1", "3.0"])
def test_other_versions_are_refused(version):
    with pytest.raises(httptools.HttpParserError):
        parse(version)


@pytest.mark.parametrize("name", ["Connection", "Proxy-Connection"])
@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_a_connection_field_decides_keep_alive_whatever_the_version(name, version):
    # (so the driver asks for the version itself when the request has one)
    assert parse(version, f"{name}: keep-alive\r\n")[1] is True
    assert parse(version, f"{name}: close\r\n")[1] is False
