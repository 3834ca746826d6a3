"""The few Kubernetes API calls the backend makes, over kubernetes-asyncio.

Bodies go in and come out as plain JSON dicts (the wire form, camelCase), so the
rest of the backend reads like the Kubernetes docs and never touches generated
model classes. Every API failure becomes a KubeError carrying the HTTP status
and the API's own Status message.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
from kubernetes_asyncio import client, config

# What the backend does to the API, as (apiGroup, resource, verbs). The Role in
# deploy/kubernetes/ must allow at least this; a test compares the two.
PERMISSIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apps", "deployments", ("create", "get", "list", "patch", "update", "delete")),
    ("", "pods", ("list", "watch", "patch")),
    ("", "secrets", ("create", "get", "update", "delete")),
)


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _wrap(exc: client.ApiException) -> KubeError:
    message = exc.reason or "error"
    try:
        message = orjson.loads(exc.body).get("message") or message  # type: ignore[arg-type]  # no body: TypeError, handled
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        pass
    return KubeError(exc.status or 0, f"Kubernetes API {exc.status}: {message}")


async def connect(*, kubeconfig: str | None = None, context: str | None = None, in_cluster: bool = False) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, or from the pod's service account."""
    cfg = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)
    else:
        # None: $KUBECONFIG or ~/.kube/config; expanduser reads only the environment
        path = os.path.expanduser(kubeconfig) if kubeconfig else None  # noqa: ASYNC240
        await config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


class KubeApi:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self._client = api_client
        self.namespace = namespace
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    def _dict(self, obj: Any) -> dict[str, Any]:
        return self._client.sanitize_for_serialization(obj)

    async def _call(self, method, *args, **kwargs) -> dict[str, Any]:
        try:
            return self._dict(await method(*args, **kwargs))
        except client.ApiException as exc:
            raise _wrap(exc) from None

    # -- Deployments ------------------------------------------------------------------
    async def create_deployment(self, body: dict) -> dict:
        return await self._call(self._apps.create_namespaced_deployment, self.namespace, body)

    async def get_deployment(self, name: str) -> dict | None:
        try:
            return await self._call(self._apps.read_namespaced_deployment, name, self.namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_deployments(self, selector: str) -> list[dict]:
        result = await self._call(self._apps.list_namespaced_deployment, self.namespace, label_selector=selector)
        return result.get("items") or []

    async def replace_deployment(self, name: str, body: dict) -> dict:
        return await self._call(self._apps.replace_namespaced_deployment, name, self.namespace, body)

    async def scale_deployment(self, name: str, replicas: int) -> dict:
        return await self._call(
            self._apps.patch_namespaced_deployment,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json",
        )

    async def delete_deployment(self, name: str) -> bool:
        """False when it was already gone."""
        return await self._delete(self._apps.delete_namespaced_deployment, name)

    # -- Secrets ----------------------------------------------------------------------
    async def put_secret(self, body: dict) -> dict:
        """Create, or replace when it exists."""
        name = body["metadata"]["name"]
        try:
            return await self._call(self._core.create_namespaced_secret, self.namespace, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return await self._call(self._core.replace_namespaced_secret, name, self.namespace, body)

    async def delete_secret(self, name: str) -> bool:
        return await self._delete(self._core.delete_namespaced_secret, name)

    async def _delete(self, method, name: str) -> bool:
        try:
            await method(name, self.namespace, body={"propagationPolicy": "Background"})
            return True
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise _wrap(exc) from None

    # -- Pods ---------------------------------------------------------------------------
    async def list_pods(self, selector: str) -> tuple[list[dict], str]:
        """(pods, the list's resourceVersion to watch from)."""
        result = await self._call(self._core.list_namespaced_pod, self.namespace, label_selector=selector)
        return result.get("items") or [], (result.get("metadata") or {}).get("resourceVersion", "")

    async def annotate_pod(self, name: str, annotations: dict[str, str]) -> dict:
        return await self._call(
            self._core.patch_namespaced_pod,
            name,
            self.namespace,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
        )

    async def watch_pods(self, selector: str, resource_version: str, *, timeout_s: int = 240) -> AsyncIterator[dict]:
        """Raw watch events `{"type", "object"}` (objects as dicts) until the server
        ends the stream. An ERROR event (e.g. 410 Gone) is passed through as is."""
        try:
            # _preload_content=False: the raw aiohttp response, not the V1PodList the stubs name
            resp: Any = await self._core.list_namespaced_pod(
                self.namespace,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_s,
                _preload_content=False,
                _request_timeout=(10, timeout_s + 30),
            )
        except client.ApiException as exc:
            raise _wrap(exc) from None
        async with resp:
            if resp.status >= 300:
                body = await resp.read()
                try:
                    message = orjson.loads(body).get("message") or resp.reason
                except (orjson.JSONDecodeError, AttributeError):
                    message = resp.reason
                raise KubeError(resp.status, f"Kubernetes API {resp.status}: {message}")
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                if line.strip():
                    yield orjson.loads(line)

    async def aclose(self) -> None:
        await self._client.close()
