"""The parent's /metrics of a --workers N gateway: every worker's samples under one
HELP/TYPE per family, each with its worker label."""

from __future__ import annotations

from fngate.proxy.ops.worker_admin import merge_metrics

W0 = """# HELP fngate_requests_total Invocations answered.
# TYPE fngate_requests_total counter
fngate_requests_total{function_id="f",status="200"} 3
# HELP fngate_in_flight_requests Invocations being served right now.
# TYPE fngate_in_flight_requests gauge
fngate_in_flight_requests 1
"""
W1 = """# HELP fngate_requests_total Invocations answered.
# TYPE fngate_requests_total counter
fngate_requests_total{function_id="f",status="200"} 4
# HELP fngate_in_flight_requests Invocations being served right now.
# TYPE fngate_in_flight_requests gauge
fngate_in_flight_requests 0
"""


def test_families_once_with_a_worker_label_on_every_sample():
    text = merge_metrics([("gw-0", W0), ("gw-1", W1)])
    assert text.splitlines() == [
        "# HELP fngate_requests_total Invocations answered.",
        "# TYPE fngate_requests_total counter",
        'fngate_requests_total{worker="gw-0",function_id="f",status="200"} 3',
        'fngate_requests_total{worker="gw-1",function_id="f",status="200"} 4',
        "# HELP fngate_in_flight_requests Invocations being served right now.",
        "# TYPE fngate_in_flight_requests gauge",
        'fngate_in_flight_requests{worker="gw-0"} 1',
        'fngate_in_flight_requests{worker="gw-1"} 0',
    ]


def test_empty_label_set_and_no_workers():
    assert merge_metrics([("w", "up{} 1\n")]) == 'up{worker="w"} 1\n'
    assert merge_metrics([]) == ""
