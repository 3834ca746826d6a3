"""How `fngate loadtest` turns a scenario and options into a Locust run (no load here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fngate.loadtests import plan as planning
from fngate.loadtests.knobs import Knobs
from fngate.loadtests.plan import LoadTestError, Options, Target, make_plan, parse_duration
from fngate.loadtests.runner import locust_command
from fngate.loadtests.scenarios import SCENARIOS

GATEWAY = Target(url="http://127.0.0.1:1", key="k", function_ids=("f1", "f2"), sse_function_id="s",
                 grpc_function_id="g", grpc_target="127.0.0.1:2")  # fmt: skip


def test_knobs_survive_the_trip_through_the_environment():
    knobs = Knobs(key="k", function_ids=("a", "b"), direct=True, steps=(1, 5), delay=0.25, body_size=10, path="/x")
    assert Knobs.from_env(knobs.env()) == knobs


@pytest.mark.parametrize("text, seconds", [("90", 90), ("30s", 30), ("10m", 600), ("1h30m", 5400), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m10", "10m5"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_soak_rate_is_per_function_and_split_over_the_generators(monkeypatch):
    monkeypatch.setattr(planning.os, "cpu_count", lambda: 4)
    plan = make_plan(SCENARIOS["soak"], GATEWAY, Options())
    # HTTP: 125/s for each of the two functions; SSE and gRPC: 125/s each
    assert plan.rates == {"http": 250.0, "sse": 125.0, "grpc": 125.0}
    assert plan.rate == 500.0 and plan.workers == 1 and plan.duration == 600
    assert plan.users == 3 and plan.knobs.users_per_kind == 1  # one scheduler per kind and process
    assert (plan.knobs.rate_per_user, plan.knobs.sse_rate_per_user, plan.knobs.grpc_rate_per_user) == (250.0, 125.0, 125.0)
    assert locust_command(plan, "http://h", Path("/tmp/x"))[-3:] == ["ArrivalInvoker", "ArrivalSse", "ArrivalGrpc"]
    split = make_plan(SCENARIOS["soak"], GATEWAY, Options(rate=4000))
    assert split.workers == 4 and split.knobs.users_per_kind == 4 and split.users == 12
    assert split.knobs.sse_rate_per_user * split.knobs.users_per_kind == 4000.0
    big = make_plan(SCENARIOS["hammer"], GATEWAY, Options(rate=7000))
    assert big.workers == 3 and big.users == 3  # one Locust process per 3000 arrivals/s
    assert "--processes" in locust_command(big, "http://h", Path("/tmp/x"))
    capped = make_plan(SCENARIOS["hammer"], GATEWAY, Options(rate=100_000))
    assert capped.workers == 4  # never more processes than cores
    assert make_plan(SCENARIOS["hammer"], GATEWAY, Options(rate=100, workers=2)).workers == 2


def test_soak_drives_the_kinds_asked_for_each_at_its_own_rate():
    plan = make_plan(SCENARIOS["soak"], GATEWAY, Options(kinds=("sse", "grpc"), rate=20, grpc_rate=7))
    assert plan.rates == {"sse": 20.0, "grpc": 7.0} and plan.users == 2
    assert plan.knobs.kinds == ("sse", "grpc") and plan.knobs.rate_per_user == 0
    assert locust_command(plan, "http://h", Path("/tmp/x"))[-2:] == ["ArrivalSse", "ArrivalGrpc"]
    assert plan.settings()["rates_per_s"] == {"sse": 20.0, "grpc": 7.0}
    http_only = Target(url="http://h", key="k", function_ids=("f1",))
    assert make_plan(SCENARIOS["soak"], http_only, Options(http_rate=3)).rates == {"http": 3.0}  # what the target names
    with pytest.raises(LoadTestError, match="needs --sse-function-id"):
        make_plan(SCENARIOS["soak"], http_only, Options(kinds=("http", "sse")))
    with pytest.raises(LoadTestError, match="must be positive"):
        make_plan(SCENARIOS["soak"], GATEWAY, Options(sse_rate=0))


def test_hammer_ramps_its_arrival_rate_over_the_run_unless_told_otherwise():
    assert make_plan(SCENARIOS["hammer"], GATEWAY, Options(duration=90)).knobs.ramp_up == 90
    assert make_plan(SCENARIOS["hammer"], GATEWAY, Options(ramp_up=0)).knobs.ramp_up == 0
    assert make_plan(SCENARIOS["soak"], GATEWAY, Options()).knobs.ramp_up == 0  # soak: constant from the start


def test_ramp_spreads_the_duration_over_the_steps():
    plan = make_plan(SCENARIOS["ramp"], GATEWAY, Options(steps=(5, 25, 100, 500), duration=120))
    assert plan.knobs.steps == (5, 25, 100, 500) and plan.knobs.step_seconds == 30 and plan.users == 500


def test_options_override_the_scenario_shape():
    plan = make_plan(SCENARIOS["large-response"], GATEWAY, Options(response_size=5 << 20, users=3, routing="host"))
    assert (plan.knobs.response_size, plan.users, plan.knobs.routing) == (5 << 20, 3, "host")
    assert plan.knobs.function_ids == ("f1", "f2") and plan.knobs.key == "k"


@pytest.mark.parametrize(
    "scenario, target, message",
    [
        ("soak", Target(url="http://h"), "needs --function-id"),
        ("sse", Target(url="http://h"), "needs --sse-function-id"),
        ("grpc", Target(url="http://h"), "needs --grpc-target"),
        ("pexec", Target(url="http://h", direct=True), "needs a gateway"),
    ],
)
def test_a_scenario_without_what_it_calls_is_refused(scenario, target, message):
    with pytest.raises(LoadTestError, match=message):
        make_plan(SCENARIOS[scenario], target, Options())
