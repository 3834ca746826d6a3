"""The backend contract suite (tests/backends/test_contract.py) against the Kubernetes backend on the fake cluster."""

from __future__ import annotations

import pytest

from fngate.backends.kubernetes import KubernetesBackend
from tests.backends.test_contract import (  # noqa: F401  (collected here, with the subject below)
    test_apply_converges_up_down_and_is_idempotent,
    test_capacity_accounts_for_placed_instances,
    test_is_a_backend,
    test_new_subscription_replays_ready_instances,
    test_remove_stops_everything_and_is_idempotent,
    test_stop_instances_stops_exactly_the_chosen_ones,
)
from tests.support.toys import Tracker, toy_spec


@pytest.fixture
async def subject(cluster):
    backend = KubernetesBackend("kubernetes", namespace=cluster.namespace, kubeconfig=str(cluster.kubeconfig), startup_timeout=15)
    tracker = Tracker(backend)
    yield "kubernetes", backend, toy_spec(), tracker
    await backend.aclose()
    await tracker.close()
