"""A request the held routing table refuses (an unknown function or key) is tried once
more after the source fetched the newest table (proxy/routing/refresh.py): what the
management API reported a moment ago is then invokable at once (read-your-writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from fngate.proxy.errors import NotFound, ProxyError, Unauthorized

if TYPE_CHECKING:
    from fngate.proxy.calls.call import Engine
    from fngate.proxy.calls.exchange import Exchange
    from fngate.proxy.routing.snapshot import KeyGrant, VersionRoute

Authorized = tuple["VersionRoute", "KeyGrant", float]


def may_be_stale(engine: Engine, err: ProxyError) -> bool:
    """A newer table might change this answer (and this process can fetch one)."""
    return engine.holder.refresh is not None and isinstance(err, NotFound | Unauthorized)


async def authorize_fresh(engine: Engine, authorize: Callable[[], Authorized]) -> Authorized:
    """`authorize()`, and once more after a refresh when the held table refused it."""
    try:
        return authorize()
    except ProxyError as err:
        refresh = engine.holder.refresh
        if refresh is None or not may_be_stale(engine, err):
            raise
        await refresh()
        return authorize()


def retry_after_refresh(
    engine: Engine, ex: Exchange, authorize: Callable[[], Authorized], run: Callable[[Authorized], None], fail: Callable[[ProxyError], None]
) -> None:
    """The same for a call started from a callback: a small task waits for the refresh
    (the client going away cancels it), then `run`s the call or answers the error."""

    async def again() -> None:
        try:
            got = await authorize_fresh(engine, authorize)
        except ProxyError as err:
            ex.on_disconnect = None
            fail(err)
            return
        ex.on_disconnect = None
        run(got)

    task = asyncio.get_running_loop().create_task(again())
    ex.on_disconnect = lambda: _cancel(task)


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
