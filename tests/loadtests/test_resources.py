"""The resource sampler's arithmetic (least-squares slope) and what it finds in /proc."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fngate.loadtests.resources import ResourceSampler, Series, late_slope_per_hour, slope_per_hour


def test_slope_of_a_straight_line_is_its_rise_per_hour():
    seconds = [0.0, 5.0, 10.0, 15.0]
    assert slope_per_hour(seconds, [100 + 2 * t for t in seconds]) == pytest.approx(7200.0)
    assert slope_per_hour(seconds, [50.0] * 4) == 0.0
    assert slope_per_hour(seconds, [40 - t / 3600 for t in seconds]) == pytest.approx(-1.0)


def test_slope_is_the_least_squares_fit_not_the_end_points():
    # end points alone would say flat; the fit through (0,0) (1,3) (2,0) (3,3) rises 0.6 per second
    assert slope_per_hour([0, 1, 2, 3], [0, 3, 0, 3]) == pytest.approx(0.6 * 3600)
    # one spike in the middle does not tilt it
    assert slope_per_hour([0, 1, 2, 3, 4], [10, 10, 90, 10, 10]) == pytest.approx(0.0)


def test_slope_with_too_few_samples_is_zero_and_mismatched_series_are_refused():
    assert slope_per_hour([], []) == 0.0
    assert slope_per_hour([3.0], [7.0]) == 0.0
    assert slope_per_hour([2.0, 2.0], [1.0, 9.0]) == 0.0  # no spread in time
    with pytest.raises(ValueError, match="2 times but 1 values"):
        slope_per_hour([0, 1], [1])


def test_series_reports_first_last_and_slope():
    s = Series("serve-a", 42, seconds=[0.0, 1800.0, 3600.0], rss_bytes=[100, 150, 200], fds=[10, 10, 13])
    doc = s.as_dict()
    assert (doc["rss_start_bytes"], doc["rss_end_bytes"], doc["rss_slope_bytes_per_h"]) == (100, 200, pytest.approx(100.0))
    assert (doc["fds_start"], doc["fds_end"], doc["fds_slope_per_h"]) == (10, 13, pytest.approx(3.0))
    assert doc["samples"] == 3 and doc["series"]["fds"] == [10, 10, 13]


def test_late_slope_tells_a_warm_up_from_a_leak():
    hours = [h * 600.0 for h in range(7)]  # an hour in 10-minute samples
    warm_up = Series("pool", 1, seconds=hours, rss_bytes=[0] * 7, fds=[20, 60, 70, 70, 70, 70, 70])
    leak = Series("leak", 2, seconds=hours, rss_bytes=[0] * 7, fds=[20, 30, 40, 50, 60, 70, 80])
    assert warm_up.as_dict()["fds_slope_per_h"] > 30  # over the whole run both grow
    assert warm_up.as_dict()["fds_late_slope_per_h"] == pytest.approx(0.0)
    assert leak.as_dict()["fds_late_slope_per_h"] == pytest.approx(60.0)
    assert late_slope_per_hour([], []) == 0.0


def test_sampler_finds_a_root_and_its_children_with_their_rss_and_descriptors(tmp_path):
    # a parent holding 20 extra open files, with one child below it
    code = (
        "import subprocess, sys, time\n"
        f"files = [open({str(tmp_path)!r} + f'/f{{i}}', 'w') for i in range(20)]\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
        sampler = ResourceSampler({"parent": parent.pid}, interval=0.05)
        with sampler:
            pass  # start and stop each take a sample
        report = sampler.report()
        labels = {p["label"]: p for p in report["processes"]}
        assert len(labels) == 2 and "parent" in labels, labels
        root = labels["parent"]
        assert root["pid"] == parent.pid and root["samples"] >= 2
        assert root["fds_end"] >= 23  # stdin/out/err and the 20 files
        assert root["rss_end_bytes"] > 1024 * 1024
        [child] = [p for p in report["processes"] if p["label"] != "parent"]
        assert child["label"].startswith("parent/") and child["pid"] != parent.pid
    finally:
        parent.kill()
        parent.wait()
