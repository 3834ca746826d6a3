"""Request ids are random version 4 UUIDs in their canonical text form."""

from __future__ import annotations

import uuid

from fngate.proxy.calls.request_ids import new_request_id


def test_ids_are_canonical_random_v4_uuids():
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for rid in ids:
        u = uuid.UUID(rid.decode())
        assert str(u).encode() == rid and u.version == 4 and u.variant == uuid.RFC_4122
    # every one of the 122 random bits varies (version and variant bits are the only fixed ones)
    ints = [uuid.UUID(r.decode()).int for r in ids]
    fixed = 0xF << 76 | 0xC << 60
    varying = 0
    for n in ints:
        varying |= n ^ ints[0]
    assert varying == ((1 << 128) - 1) ^ fixed


def test_the_bits_map_to_the_uuid_in_order():
    assert new_request_id(lambda bits: (1 << bits) - 1) == b"ffffffff-ffff-4fff-bfff-ffffffffffff"
    assert new_request_id(lambda bits: 0) == b"00000000-0000-4000-8000-000000000000"
