"""The concurrent-stream limit with h2's per-stream walk amortised away
(proxy/h2_limits.py CheapStreamCount): enforced exactly, closed streams still dropped."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived
from h2.exceptions import TooManyStreamsError
from h2.settings import SettingCodes, Settings

from fngate.proxy.h2_limits import CheapStreamCount

REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")]


def pair(limit: int) -> tuple[CheapStreamCount, H2Connection]:
    """A client with the cheap count, talking in memory to a plain h2 server that
    allows `limit` concurrent streams."""
    client = CheapStreamCount(H2Configuration(client_side=True, header_encoding=None))
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.local_settings = Settings(client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: limit})
    client.initiate_connection()
    server.initiate_connection()
    exchange(client, server)
    return client, server


def exchange(client: H2Connection, server: H2Connection) -> list:
    events = []
    for _ in range(3):
        events += server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    return events


def test_the_limit_is_enforced_exactly():
    client, server = pair(limit=10)
    sids = []
    for _ in range(10):
        sids.append(client.get_next_available_stream_id())
        client.send_headers(sids[-1], REQUEST)
    with pytest.raises(TooManyStreamsError):
        client.send_headers(client.get_next_available_stream_id(), REQUEST)
    # one stream done (answered and ended both ways): exactly one more may open
    exchange(client, server)
    server.send_headers(sids[0], [(b":status", b"200")], end_stream=True)
    client.end_stream(sids[0])
    exchange(client, server)
    assert client.open_outbound_streams == 9
    client.send_headers(client.get_next_available_stream_id(), REQUEST)
    with pytest.raises(TooManyStreamsError):
        client.send_headers(client.get_next_available_stream_id(), REQUEST)


def test_closed_streams_are_still_dropped():
    client, server = pair(limit=100)
    for _ in range(2000):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST, end_stream=True)
        assert any(isinstance(e, RequestReceived) for e in exchange(client, server))
        server.send_headers(sid, [(b":status", b"200")], end_stream=True)
        exchange(client, server)
        assert len(client.streams) < 40
