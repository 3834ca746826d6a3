"""Locust hooks shared by every scenario file (imported by each of them).

Locust's CSV writer rewrites the stats files once a second from its own greenlet and
is not refreshed when the run ends, so the last second of a run would be missing
from `_stats.csv`. Yielding on `quit` for one writer interval lets it write the final
numbers before Locust closes the files; the SLI evaluation then reads complete stats.
"""

from __future__ import annotations

import gevent
from locust import events
from locust.stats import CSV_STATS_INTERVAL_SEC


@events.quit.add_listener
def _let_csv_writer_finish(exit_code: int, **_: object) -> None:
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)
