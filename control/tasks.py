"""Stopping the control loops' tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_EVERY = 0.5  # seconds


async def cancel_until_done(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again those still
    running every RECANCEL_EVERY seconds: a client library can swallow a cancel whole
    (redis-py turns one landing inside a blocking read into an ordinary error, which a
    loop's `except Exception` then survives), and a single cancel would wait forever."""
    pending = set(tasks)
    everything = list(pending)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
    await asyncio.gather(*everything, return_exceptions=True)
