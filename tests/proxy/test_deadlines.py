"""The calls' coarse deadlines: never early, at most one tick late, removable."""

from __future__ import annotations

import asyncio

from fngate.proxy.calls.deadlines import Deadlines
from tests.support.waiting import wait_for


class Probe:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: list) -> None:
        self.loop = loop
        self.log = log

    def on_deadline(self) -> None:
        self.log.append((self, self.loop.time()))


async def test_deadlines_fire_in_time_and_removed_ones_do_not():
    loop = asyncio.get_running_loop()
    dl = Deadlines(loop, tick=0.05)
    log: list = []
    now = loop.time()
    probes = {delay: Probe(loop, log) for delay in (0.0, 0.07, 0.12, 0.3)}
    keys = {delay: dl.add(now + delay, p) for delay, p in probes.items()}
    for delay, key in keys.items():
        # at most one tick late, by construction: the bucket's timer is due within a tick of the deadline
        assert now + delay <= key * dl.tick <= now + delay + dl.tick
    dl.remove(keys[0.12], probes[0.12])
    await wait_for(lambda: len(log) == 3, 10, "the three remaining deadlines")
    fired = dict(log)
    assert probes[0.12] not in fired  # its bucket came due before the last one's: it will not fire later
    for delay in (0.0, 0.07, 0.3):
        assert fired[probes[delay]] >= now + delay - 0.002  # never early (the loop clock has ms resolution)
    assert [fired[probes[d]] for d in (0.0, 0.07, 0.3)] == sorted(fired.values())  # in deadline order
    assert not dl.buckets and dl._timer is None  # nothing left: the loop timer stopped


async def test_a_deadline_added_after_a_quiet_spell_and_in_the_past_fires_at_once():
    loop = asyncio.get_running_loop()
    dl = Deadlines(loop, tick=0.05)
    await asyncio.sleep(0.2)  # the tick timer is not running meanwhile
    log: list = []
    p = Probe(loop, log)
    key = dl.add(loop.time() - 1.0, p)
    # at once: in the next tick's bucket, not in one of the buckets that passed while idle
    assert key * dl.tick <= loop.time() + dl.tick
    await wait_for(lambda: log, 10, "the past deadline")
    assert [x for x, _ in log] == [p]
    dl.close()
