"""Read-your-writes between the management API and the gateways (issue 16).

An API answer goes out only once the routing table published to the gateways reflects
every store write made before it: a deploy answered ACTIVE (or a GET that reports
ACTIVE, after the reconciler's write) is then already in the table the in-process
gateway holds, in the internal long poll's answer and in Redis, and a gateway that
has not fetched it yet fetches it on its first miss (proxy/routing/refresh.py).
The wait is the publisher's debounce (~15 ms) after a write, and one store revision
read otherwise. On a Redis replica that does not lead the control loops there is no
publisher here, and no wait.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .context import CONTEXT


@web.middleware
async def answer_after_routing(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    wait = request.config_dict[CONTEXT].routing_caught_up
    if wait is not None and response.status < 400:
        await wait()
    return response
