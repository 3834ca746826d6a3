"""The image catalog: `containerImage` names -> local command lines.

So that NVCF-style create requests work unchanged on the local backend, an image
name maps to the argv of a local process. `{host}` and `{port}` in a command are
replaced by the instance's address. The sample images ship by default; users add
their own in the config file (`images: {name: "cmd --port {port}"}`).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence

from .base import BackendError


def _sample(module: str) -> list[str]:
    return [sys.executable, "-m", module, "--host", "{host}", "--port", "{port}"]


DEFAULT_IMAGES: dict[str, list[str]] = {
    "fngate/echo": _sample("fngate.backends.samples.echo"),
    "fngate/sse": _sample("fngate.backends.samples.sse"),
    "fngate/llm": _sample("fngate.backends.samples.llm"),
    "fngate/progress": _sample("fngate.backends.samples.progress"),  # pexec progress and large results
    "fngate/grpc-echo": _sample("fngate.backends.samples.grpc_echo"),
}


class UnknownImage(BackendError):
    pass


def _strip_tag(image: str) -> str:
    """`fngate/echo:1.0` -> `fngate/echo` (a `:` before the last `/` is a registry port)."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


class ImageCatalog:
    def __init__(self, entries: Mapping[str, str | Sequence[str]] | None = None, *, defaults: bool = True) -> None:
        self._entries: dict[str, list[str]] = dict(DEFAULT_IMAGES) if defaults else {}
        for name, cmd in (entries or {}).items():
            argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
            if not argv:
                raise ValueError(f"image {name!r}: empty command")
            self._entries[name] = argv

    def images(self) -> list[str]:
        return sorted(self._entries)

    def command(self, image: str, host: str, port: int) -> list[str]:
        argv = self._entries.get(image) or self._entries.get(_strip_tag(image))
        if argv is None:
            raise UnknownImage(f"unknown container image {image!r}; the local catalog has {', '.join(self.images())}")
        return [a.replace("{host}", host).replace("{port}", str(port)) for a in argv]
