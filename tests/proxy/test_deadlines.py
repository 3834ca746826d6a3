"""The fast path's coarse deadlines: never early, at most one tick late, removable."""

from __future__ import annotations

import asyncio

from fngate.proxy.deadlines import Deadlines


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
    dl.remove(keys[0.12], probes[0.12])
    await asyncio.sleep(0.45)
    fired = {p: t for p, t in log}
    assert len(log) == 3 and probes[0.12] not in fired
    for delay in (0.0, 0.07, 0.3):
        late = fired[probes[delay]] - (now + delay)
        assert -0.002 <= late <= 0.05 + 0.03  # never early (ms clock), at most one tick late
    assert not dl.buckets and dl._timer is None  # nothing left: the loop timer stopped


async def test_a_deadline_added_after_a_quiet_spell_and_in_the_past_fires_at_once():
    loop = asyncio.get_running_loop()
    dl = Deadlines(loop, tick=0.05)
    await asyncio.sleep(0.2)  # the tick timer is not running meanwhile
    log: list = []
    p = Probe(loop, log)
    dl.add(loop.time() - 1.0, p)
    await asyncio.sleep(0.12)
    assert [x for x, _ in log] == [p]
    dl.close()
