"""HPACK as the gateway codes it (proxy/h2_codec.py): raw string literals out,
remembered Huffman strings and header blocks in, and still a standard HPACK peer
on both sides."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack import NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hyperframe.frame import DataFrame

from fngate.proxy.h2_codec import MemoDecoder, PlainEncoder, decode_huffman

RESPONSES = [
    [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"nvcf-reqid", b"a" * 36)],
    [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"nvcf-reqid", b"b" * 36)],
    [(b"grpc-status", b"0")],
    [(b":status", b"404"), (b"content-type", b"application/problem+json"), (b"x-note", b"\xc3\xa9t\xc3\xa9 ok")],
]


def test_a_standard_decoder_reads_every_block_the_plain_encoder_writes():
    encoder, decoder = PlainEncoder(), hpack.Decoder()
    for headers in RESPONSES * 3:  # repeats go through the dynamic table on both sides
        block = encoder.encode(headers)
        assert decoder.decode(block, raw=True) == headers


def test_the_plain_encoder_writes_what_hpack_writes_without_huffman():
    # same bytes as hpack's own encoder, through table changes, evictions, size
    # updates, never-indexed fields and repeated fields the plain encoder remembers
    ours, reference = PlainEncoder(), hpack.Encoder()
    rng = random.Random(5)
    fields = [
        (b":status", b"200"),
        (b":status", b"404"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"0"),
        (b"x-a", b"1"),
        (b"x-b", b"2" * 40),
        (b"content-length", b"10"),
    ]
    for n in range(3000):
        if n % 500 == 499:
            ours.header_table_size = reference.header_table_size = rng.choice([0, 128, 4096])
        headers = [rng.choice(fields) for _ in range(rng.randint(1, 5))]
        if n % 3 == 0:
            headers.append(NeverIndexedHeaderTuple(b"nvcf-reqid", b"%d" % n))
        if n % 11 == 0:
            headers.append((b"x-new", b"%d" % n))
        assert ours.encode(headers) == reference.encode(headers, huffman=False)


def test_literals_are_sent_without_huffman_coding():
    block = PlainEncoder().encode([(b"x-custom", b"some value")])
    # literal with incremental indexing, new name: 0x40, then the name and the value,
    # each as a length byte without the Huffman bit and the raw octets
    assert block == b"\x40\x08x-custom\x0asome value"


def test_huffman_strings_decode_the_same_every_time():
    coder = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    value = b"Bearer nvapi-" + b"k" * 40
    coded = coder.encode(value)
    assert decode_huffman(coded) == value
    assert decode_huffman(coded) == value
    long_value = b"v" * 1000  # past the memo's length cap: decoded each time
    assert decode_huffman(coder.encode(long_value)) == long_value


def test_a_bad_huffman_code_fails_every_time_it_arrives():
    # an EOS symbol (30 one-bits) inside the string is a decoding error (RFC 7541 5.2)
    bad = b"\xff\xff\xff\xff"
    for _ in range(3):
        with pytest.raises(HPACKDecodingError):
            decode_huffman(bad)
    # and through a whole header block, as a client would send it
    block = b"\x40\x01a\x84" + bad  # new name "a" (raw), value: the bad code (Huffman, 4 octets)
    for _ in range(2):
        with pytest.raises(HPACKDecodingError):
            hpack.Decoder().decode(block)


def test_remembered_blocks_decode_as_a_plain_decoder_would(monkeypatch):
    # a few requests sent again and again, now and then a new field that changes the
    # table (a small one, so entries are evicted and indices move under the same bytes)
    encoder, plain, memo = hpack.Encoder(), hpack.Decoder(), MemoDecoder()
    encoder.header_table_size = plain.header_table_size = memo.header_table_size = 256
    decodes = []
    full_decode = hpack.Decoder.decode
    monkeypatch.setattr(hpack.Decoder, "decode", lambda self, *a, **kw: decodes.append(self) or full_decode(self, *a, **kw))
    rng = random.Random(8)
    requests = [[(b":method", b"GET"), (b":path", b"/%d" % i), (b"x-a", b"v%d" % i)] for i in range(3)]
    for n in range(3000):
        headers = list(rng.choice(requests))
        if n % 50 == 0:
            headers.append((b"x-new", b"%d" % n))
        block = encoder.encode(headers, huffman=n % 2 == 0)
        assert memo.decode(block, raw=True) == plain.decode(block, raw=True) == headers
    assert decodes.count(plain) == 3000
    assert 100 < decodes.count(memo) < 1000  # most blocks were served from memory


def test_a_remembered_block_still_obeys_the_header_list_limit():
    encoder, memo = hpack.Encoder(), MemoDecoder()
    headers = [(b"x-big", b"v" * 100)]
    memo.decode(encoder.encode(headers), raw=True)
    block = encoder.encode(headers)  # now one indexed field
    assert memo.decode(block, raw=True) == headers
    assert memo.decode(block, raw=True) == headers  # remembered
    memo.max_header_list_size = 100
    with pytest.raises(OversizedHeaderListError):
        memo.decode(block, raw=True)


def test_frames_still_say_what_they_are():
    assert repr(DataFrame(7, b"x")) == "DataFrame(stream_id=7)"
