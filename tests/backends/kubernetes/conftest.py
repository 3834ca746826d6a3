from __future__ import annotations

import pytest

from fngate.backends.kubernetes import KubernetesBackend
from tests.support.toys import toy_catalog

from .cluster import FakeCluster


@pytest.fixture
async def cluster(tmp_path):
    c = await FakeCluster(tmp_path, toy_catalog()).start()
    yield c
    await c.stop()


@pytest.fixture
async def k8s_backend(cluster):
    backend = KubernetesBackend("k8s", namespace=cluster.namespace, kubeconfig=str(cluster.kubeconfig), startup_timeout=5)
    yield backend
    await backend.aclose()
