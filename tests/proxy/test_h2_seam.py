"""The HTTP/2 driver's side of the client seam, without sockets: an H2Exchange as the
call uses it (send, flush, end, abort, backpressure) and the stream operations the
gRPC relay uses, on live, ended and closed streams. Bytes in, bytes and callbacks out."""

from __future__ import annotations

import asyncio

from fngate.proxy.calls.exchange import ClientGone
from fngate.proxy.drivers.h2 import QUEUE_HIGH

from .h2frames import DATA, END_STREAM, HEADERS, frame, goaway_of, headers, parse, request_fields, resets_of, rst_stream, window_update
from .test_h2_transcript import HELLO, connect, feed, response_heads


def open_stream(end_stream: bool = True, **config):
    server, transport, handler = connect(**config)
    transport.take()
    feed(server, transport, HELLO + headers(1, request_fields(method=b"POST"), end_stream=end_stream))
    (ex,) = handler.started
    return server, transport, ex


def data_frames(out: bytes) -> list[tuple[int, int, bytes]]:
    return [(sid, flags & END_STREAM, p) for kind, flags, sid, p in parse(out) if kind == DATA]


async def settle(transport) -> bytes:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return transport.take()


async def test_what_is_sent_between_two_flushes_leaves_together_and_end_stream_rides_the_head():
    _server, transport, ex = open_stream()
    ex.start_response_block(200, b"content-type: text/plain\r\n", False, b"rid-1", b"fulfilled")
    ex.send(b"a")
    ex.send(b"b")
    ex.flush()
    ex.send(b"c")
    ex.end()
    out = await settle(transport)
    head = response_heads(out)[1]
    assert head[b":status"] == b"200" and head[b"nvcf-reqid"] == b"rid-1" and head[b"content-type"] == b"text/plain"
    assert b"".join(p for _, _, p in data_frames(out)) == b"abc" and data_frames(out)[-1][1] == END_STREAM
    # an empty answer: END_STREAM on the HEADERS frame itself, no DATA
    _server2, transport2, ex2 = open_stream()
    ex2.start_response(204, [(b"x-a", b"1"), (b"connection", b"close")])
    ex2.send(b"ignored: 204 has no body")
    ex2.end()
    out2 = await settle(transport2)
    assert [(k, f & END_STREAM) for k, f, _, _ in parse(out2) if k == HEADERS] == [(HEADERS, END_STREAM)]
    assert response_heads(out2)[1] == {b":status": b"204", b"x-a": b"1"} and not data_frames(out2)


async def test_a_stream_the_client_reset_tells_the_call_once_and_takes_nothing_more():
    server, transport, ex = open_stream()
    gone = []
    ex.on_disconnect = lambda: gone.append(1)
    feed(server, transport, rst_stream(1))
    assert gone == [1]
    ex.start_response(200, [(b"content-length", b"1")])
    ex.send(b"x")
    ex.flush()  # the stream is gone: nothing goes out, nothing raises
    ex.end()
    assert gone == [1] and not data_frames(await settle(transport))
    ex.abort()  # harmless after the fact


async def test_abort_resets_with_cancel_before_the_head_and_internal_error_after():
    server, transport, ex = open_stream()
    ex.abort()
    assert resets_of(await settle(transport)) == {1: 8}  # CANCEL
    feed(server, transport, headers(3, request_fields()))
    ex3 = connect_handler_last(server)
    ex3.start_response(200, [])
    ex3.flush()
    ex3.abort()
    assert resets_of(await settle(transport)) == {3: 2}  # INTERNAL_ERROR


def connect_handler_last(server):
    return server.handler.started[-1]


async def test_a_client_whose_window_is_shut_backlogs_its_stream_until_a_window_update():
    server, transport, ex = open_stream()
    ex.start_response(200, [])
    ex.send(b"x" * (QUEUE_HIGH * 3))  # the default stream window is 65,535
    ex.flush()
    await settle(transport)
    assert ex.backlogged()
    woken = []
    ex.when_writable(lambda: woken.append(1))
    assert woken == []
    feed(server, transport, window_update(0, 1 << 20) + window_update(1, 1 << 20))
    await settle(transport)
    assert woken == [1] and not ex.backlogged()


async def test_a_full_socket_holds_every_stream_until_it_drains():
    server, _transport, ex = open_stream()
    server.pause_writing()
    assert ex.backlogged()
    woken = []
    ex.when_writable(lambda: woken.append(1))
    server.resume_writing()
    assert woken == [1]
    ex.when_writable(lambda: woken.append(2))  # not backlogged: soon, from the loop
    await asyncio.sleep(0)
    assert woken == [1, 2]


async def test_request_trailers_end_the_body_of_an_exchange():
    server, transport, ex = open_stream(end_stream=False)
    got = []

    class Listener:
        def on_request_data(self, data: bytes) -> None:
            got.append(data)
            ex.body.consumed(len(data))

        def on_request_end(self) -> None:
            got.append(b"<end>")

    ex.read_body(Listener())
    feed(server, transport, frame(DATA, 0, 1, b"body") + headers(1, [(b"x-trailer", b"1")], end_stream=True))
    assert got == [b"body", b"<end>"]


async def test_stream_operations_on_an_ended_stream_or_a_closed_connection_are_refused_quietly():
    server, _transport, _ex = open_stream()
    for fn in (lambda: server.send_headers(99, [(b":status", b"200")], False), lambda: server.send_trailers(99, [(b"x", b"1")])):
        try:
            fn()
            raise AssertionError("expected ClientGone")
        except ClientGone:
            pass
    assert server.queue_data(99, b"x", True) is False
    server.reset(99, 8)
    server.ack(99, 10)
    server.end_stream(99)
    try:
        await server.send_data(99, b"x", False)
        raise AssertionError("expected ClientGone")
    except ClientGone:
        pass
    server.close()
    for fn in (lambda: server.send_headers(1, [(b":status", b"200")], False), lambda: server.send_trailers(1, [])):
        try:
            fn()
            raise AssertionError("expected ClientGone")
        except ClientGone:
            pass
    assert server.queue_data(1, b"x", True) is False
    called = []
    server.when_writable(1, lambda: called.append(1))
    assert called == [1]
    server.reset(1, 8)
    server.ack(1, 10)


async def test_send_data_waits_for_the_window_and_fails_when_the_connection_closes():
    server, transport, _ex = open_stream()
    server.send_headers(1, [(b":status", b"200")], False)
    sending = asyncio.ensure_future(server.send_data(1, b"y" * (QUEUE_HIGH * 3), False))
    await settle(transport)
    assert not sending.done()  # the client's window holds it back
    feed(server, transport, window_update(0, 1 << 20) + window_update(1, 1 << 20))
    await asyncio.wait_for(sending, 2)
    blocked = asyncio.ensure_future(server.send_data(1, b"z" * (QUEUE_HIGH * 40), False))
    await settle(transport)
    server.connection_lost(None)
    try:
        await asyncio.wait_for(blocked, 2)
        raise AssertionError("expected ClientGone")
    except ClientGone:
        pass


async def test_a_grpc_request_line_http1_would_refuse_gets_a_trailers_only_status():
    server, transport, handler = connect()
    transport.take()
    grpc = request_fields(method=b"POST", path=b"/pkg.Svc/M#x", extra=[(b"content-type", b"application/grpc")])
    out = feed(server, transport, HELLO + headers(1, grpc))
    out += await settle(transport)
    head = response_heads(out)[1]
    assert head[b":status"] == b"200" and head[b"grpc-status"] == b"3"  # INVALID_ARGUMENT
    assert handler.started == []


async def test_a_refused_stream_whose_body_is_still_coming_is_stopped_after_the_answer():
    server, transport, handler = connect()
    transport.take()
    refused = headers(1, request_fields(method=b"POST", path=b"/a#b"), end_stream=False)
    out = feed(server, transport, HELLO + refused + frame(DATA, 0, 1, b"x" * 1000))  # its body in the same batch
    out += await settle(transport)
    assert response_heads(out)[1][b":status"] == b"400"
    assert resets_of(out) == {1: 0}  # NO_ERROR once the answer is out (RFC 9113 8.1)
    assert handler.started == []


async def test_a_graceful_stop_waits_for_the_open_stream_then_goes_away():
    server, transport, ex = open_stream()
    server.shutdown()
    assert goaway_of(await settle(transport)) is None  # a stream is still open
    ex.start_response(200, [(b"content-length", b"0")])
    ex.end()
    out = await settle(transport)
    assert response_heads(out)[1][b":status"] == b"200"
    assert goaway_of(out) == (1, 0) and transport.closed
