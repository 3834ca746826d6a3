"""FakeCluster: the fake API server and its kubelet on a free loopback port, plus a kubeconfig."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from fngate.backends.catalog import ImageCatalog

from .fake_apiserver import FakeApiServer
from .fake_kubelet import FakeKubelet


class FakeCluster:
    def __init__(self, tmp_path: Path, catalog: ImageCatalog | None = None, *, namespace: str = "fngate-test") -> None:
        self.namespace = namespace
        self.api = FakeApiServer()
        self.kubelet = FakeKubelet(self.api, catalog or ImageCatalog())
        self.kubeconfig = tmp_path / "kubeconfig.yaml"
        self._runner = web.AppRunner(self.api.app, handle_signals=False, shutdown_timeout=0.5)
        self.url = ""

    async def start(self) -> FakeCluster:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started: the server exists
        self.url = f"http://127.0.0.1:{port}"
        self.api.write_kubeconfig(self.kubeconfig, self.url, self.namespace)
        self.kubelet.start()
        return self

    async def stop(self) -> None:
        await self.kubelet.stop()
        self.api.drop_watches()
        await self._runner.cleanup()

    # -- what a user would look at ------------------------------------------------------------
    def deployments(self) -> list[dict]:
        return self.api.list("deployments", self.namespace)

    def pods(self, *, live: bool = True) -> list[dict]:
        pods = self.api.list("pods", self.namespace)
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")] if live else pods

    def secrets(self) -> list[dict]:
        return self.api.list("secrets", self.namespace)
