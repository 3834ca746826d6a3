"""Large-result zips shared through a real redis-server (proxy/calls/pexec_results.py):
stored for NVCF's 35 min, and one over the size limit answered with a clear error
elsewhere instead of a 404. The two-replica path: tests/e2e/test_replicas_pexec.py."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from fngate.proxy.calls.pexec_files import LOCATION_TTL
from fngate.proxy.calls.pexec_results import SHARED_ZIP_MAX_BYTES, ZIP_PREFIX, SharedResults, SharedZipTooLarge


async def test_a_zip_is_shared_for_35_minutes_and_one_over_the_limit_is_a_clear_502(redis_url, tmp_path):
    assert SHARED_ZIP_MAX_BYTES < 512 * 1024 * 1024  # Redis' value limit
    shared = SharedResults(aioredis.from_url(redis_url), 60, zip_max_bytes=1000)
    try:
        small, big = tmp_path / "small.zip", tmp_path / "big.zip"
        small.write_bytes(b"PK" + b"s" * 998)
        big.write_bytes(b"PK" + b"b" * 1999)
        await shared.store_zip("small.zip", str(small))
        await shared.store_zip("big.zip", str(big))
        assert await shared.fetch_zip("small.zip") == small.read_bytes()
        assert LOCATION_TTL - 5 <= await shared.redis.ttl(ZIP_PREFIX + "small.zip") <= LOCATION_TTL
        with pytest.raises(SharedZipTooLarge) as err:
            await shared.fetch_zip("big.zip")
        assert err.value.http_status == 502
        assert err.value.detail == (
            "the large result is 2001 bytes, over the 1000 bytes shared across gateway replicas;"
            " only the replica that ran the request serves it"
        )
        assert await shared.fetch_zip("unknown.zip") is None
    finally:
        await shared.aclose()
