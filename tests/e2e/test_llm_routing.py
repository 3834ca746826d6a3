"""The LLM gateway's routing beyond the basics (spec part 2, 8.2; nvcf-api.md 8), against a
real `fngate serve` and real `fngate/llm` instances: NVCF's "different routing key"
refusal, `llmConfig.routingMethod`, stickiness by the conversation's opening when no
session id is sent, and a pinned request waiting for its own instance."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import ServeProcess, start_serve
from tests.e2e.llm_support import MODEL, World, llm_model

OTHER_KEY = "model targets a different routing key"


class MethodsWorld(World):
    """World, plus `llm-methods`: two instances of one slot each, one model per routing method."""

    def __init__(self, sp: ServeProcess) -> None:
        super().__init__(sp)
        self.rr_fid, self.rr_vid = self.launch(
            "llm-methods",
            llm_model("rr", routingMethod="ROUND_ROBIN"),
            llm_model("p2", routingMethod="power_of_two"),
            llm_model("prefix", routingMethod="pulsar"),
            instances=2,
            concurrency=1,
        )
        self.api.wait(lambda: len({_served(self, self.rr_fid, "rr") for _ in range(4)}) == 2, "the gateway routes to both", 30, 0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MethodsWorld]:
    sp = start_serve(tmp_path_factory.mktemp("llm-routing") / "fngate", timeout=120)  # a loaded machine starts slowly
    try:
        yield MethodsWorld(sp)
    finally:
        sp.stop()


def _served(world: World, fid: str, model: str, messages: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> str:
    """The instance that answered (the sample's system_fingerprint)."""
    body = {"model": f"{fid}/{model}", "messages": messages or [{"role": "user", "content": "hi"}], "max_tokens": 1}
    r = world.post("/v1/chat/completions", body, world.admin, headers)
    assert r.status_code == 200, r.text
    return str(r.json()["system_fingerprint"])


def _raw(world: World, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return world.post("/v1/chat/completions", json.dumps(body).encode(), world.admin, headers)


def test_a_model_that_targets_another_routing_key_is_refused(world: World) -> None:
    """NVCF auths on the body's exact `model` and serves the model its decoder reads, which
    also takes `Model`/`MODEL` (the last wins): when the two name different functions the
    request is refused rather than served by a function it was not authorized for."""
    msgs = [{"role": "user", "content": "x"}]
    for variant in ("Model", "MODEL"):
        r = _raw(world, {"model": f"{world.fid}/{MODEL}", variant: f"{world.lim_fid}/tiny", "messages": msgs, "max_tokens": 1})
        assert (r.status_code, r.json()) == (400, {"message": OTHER_KEY}), variant
    # the same key in both spellings is served, and the instance sees one `model`: the model name
    r = _raw(world, {"model": f"{world.fid}/{MODEL}", "Model": f"{world.fid.upper()}/{MODEL}", "messages": msgs, "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL


def test_round_robin_takes_the_instances_in_turn(world: MethodsWorld) -> None:
    fid = world.rr_fid
    order = [_served(world, fid, "rr") for _ in range(10)]
    assert len(set(order)) == 2 and all(a != b for a, b in itertools.pairwise(order)), order
    # power_of_two (the default) picks among the free instances at random: both serve
    assert len({_served(world, fid, "p2") for _ in range(16)}) == 2


def _conversation(opening: str, turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": opening}]
    for i in range(turns - 1):
        msgs += [{"role": "assistant", "content": f"answer {i}"}, {"role": "user", "content": f"and then {i}?"}]
    return msgs


def test_a_conversation_without_a_session_id_stays_on_one_instance(world: MethodsWorld) -> None:
    """No x-multi-turn-session-id: the turns of one conversation share its opening, and go
    to one instance (the key is echoed for the client to send on); different conversations
    spread over both."""
    served: dict[int, set[str]] = {}
    for c in range(10):
        for turns in (2, 3, 4):
            r = world.post(
                "/v1/chat/completions",
                {"model": f"{world.fid}/{MODEL}", "messages": _conversation(f"topic {c}", turns), "max_tokens": 1},
                world.admin,
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-multi-turn-session-id"].startswith("mt:v1:prefix:")
            served.setdefault(c, set()).add(str(r.json()["system_fingerprint"]))
    assert all(len(s) == 1 for s in served.values()), served
    assert len(set().union(*served.values())) == 2
    # a lone prompt is not pinned under the least-loaded method: the same one spreads
    assert len({_served(world, world.fid, MODEL) for _ in range(16)}) == 2
    # under pulsar the first turn is pinned too
    fid = world.rr_fid
    assert len({_served(world, fid, "prefix", _conversation("same opening", t)) for t in (1, 2, 3, 1)}) == 1


def test_a_pinned_request_waits_for_its_own_instance(world: MethodsWorld) -> None:
    """One slot per instance. A conversation's first turn streams on its instance (A); its
    next turn must queue, and waits for A although B is free; a request that may go
    anywhere, sent after it, is served by B meanwhile instead of queueing behind it."""
    fid = world.rr_fid
    h = world.headers(world.admin)
    first = {"model": f"{fid}/prefix", "messages": _conversation("pinned talk", 1), "stream": True, "max_tokens": 4000, "interval": 0.05}
    with httpx.Client(base_url=world.base, headers=h, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        with client.stream("POST", "/v1/chat/completions", content=json.dumps(first).encode()) as stream:
            lines = stream.iter_lines()
            line = next(lines)
            a = json.loads(line[6:])["system_fingerprint"]
            second = {"model": f"{fid}/prefix", "messages": _conversation("pinned talk", 2), "max_tokens": 1}
            turn2 = pool.submit(client.post, "/v1/chat/completions", content=json.dumps(second).encode())
            _wait_queued(world, world.rr_vid)
            # may go anywhere: B is free (A streams); it must not wait behind the pinned turn
            other = client.post(
                "/v1/chat/completions",
                json={"model": f"{fid}/p2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
                timeout=20,
            )
            assert other.status_code == 200 and other.json()["system_fingerprint"] != a
            assert not turn2.done(), "the pinned turn was served while its instance streamed"
        # the stream is closed: A's slot frees, the pinned turn takes it
        r = turn2.result(timeout=30)
    assert r.status_code == 200 and r.json()["system_fingerprint"] == a


def _wait_queued(world: World, vid: str) -> None:
    """Until the gateway reports one request of `vid` queued (its /metrics)."""
    line = f'fngate_queue_depth{{version_id="{vid}"}} 1'
    world.api.wait(lambda: line in world.metrics().splitlines(), "a queued request", 20, 0.05)
