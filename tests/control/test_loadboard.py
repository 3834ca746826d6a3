from fngate.control.loadboard import LoadBoard
from fngate.proxy.routing.snapshot import LoadReport, VersionLoad


def test_board_sums_gateways_and_forgets_stale_ones():
    now = [100.0]
    board = LoadBoard(stale_after=5, clock=lambda: now[0])
    board.update(
        LoadReport(
            "g1",
            99.0,
            {"v": VersionLoad(queue_depth=2, in_flight=1, busy_seconds=3, requests=5, last_request_at=98, queued_ids=["a", "b"])},
        )
    )
    board.update(
        LoadReport(
            "g2", 99.5, {"v": VersionLoad(queue_depth=1, in_flight=4, busy_seconds=1, requests=2, last_request_at=99, queued_ids=["c"])}
        )
    )
    total = board.version_load("v")
    assert (total.queue_depth, total.in_flight, total.busy_seconds, total.requests, total.last_request_at) == (3, 5, 4, 7, 99)
    assert board.position("b") == ("v", 2)
    assert board.position("c") == ("v", 1)
    assert board.position("zzz") is None
    now[0] = 104.2  # g1 (at 99.0) is now older than 5 s; g2 (at 99.5) is not
    assert board.queue_depth("v") == 1
    assert board.position("a") is None
    assert board.version_ids() == {"v"}
