"""Backends from the `fngate serve` config file.

    inventory: {gpus: {H100: 4}, instanceTypes: [...]}     # the local machine's simulated GPUs
    catalog: {"acme/model": "python -m acme.serve --port {port}"}
    backends:                                              # default: one local backend "local"
      - {name: local, type: local, startupTimeout: 120}
      - {name: edge, type: static}
      - {name: k8s, type: kubernetes, namespace: fngate}

The first backend is the default for deployments that name none. A mapping of
name -> settings (TOML `[backends.local]` tables) works too; `kind` = `type`.
Bad settings raise ValueError with the entry and the setting named.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Backend
from .catalog import ImageCatalog
from .inventory import Inventory
from .local import LocalBackend
from .static import StaticBackend

_LOCAL_KNOBS = {
    "probeInterval": ("probe_interval", float),
    "startupTimeout": ("startup_timeout", float),
    "unhealthyAfter": ("unhealthy_after", int),
    "restartBackoff": ("restart_backoff", float),
    "restartBackoffMax": ("restart_backoff_max", float),
    "stopGrace": ("stop_grace", float),
    "host": ("host", str),
    "region": ("region", str),
}
_STATIC_KNOBS = {k: _LOCAL_KNOBS[k] for k in ("probeInterval", "startupTimeout", "unhealthyAfter")}


def _knobs(cfg: Mapping[str, Any], table: dict[str, tuple[str, type]], where: str) -> dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        if key in ("name", "type", "kind", "inventory"):
            continue
        if key not in table:
            raise ValueError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(table))})")
        attr, conv = table[key]
        out[attr] = conv(value)
    return out


def build_backends(
    entries: list[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None,
    *,
    data_dir: Path,
    inventory: Inventory | None = None,
    catalog: ImageCatalog | None = None,
) -> dict[str, Backend]:
    if isinstance(entries, Mapping):  # TOML-style `[backends.<name>]` tables
        entries = [{"name": name, **(cfg or {})} for name, cfg in entries.items()]
    entries = entries or [{"name": "local", "type": "local"}]
    out: dict[str, Backend] = {}
    for i, cfg in enumerate(entries):
        if not isinstance(cfg, Mapping):
            raise ValueError(f"backends[{i}]: expected a mapping like {{name: local, type: local}}, got {cfg!r}")
        kind = cfg.get("type", cfg.get("kind", "local"))
        name = str(cfg.get("name") or kind)
        where = f"backends[{i}] ({name})"
        if name in out:
            raise ValueError(f"{where}: the name {name!r} is used twice")
        if kind == "local":
            inv = Inventory.from_config(cfg["inventory"]) if "inventory" in cfg else (inventory or Inventory())
            out[name] = LocalBackend(
                name, data_dir=data_dir, catalog=catalog or ImageCatalog(), inventory=inv, **_knobs(cfg, _LOCAL_KNOBS, where)
            )
        elif kind == "static":
            out[name] = StaticBackend(name, **_knobs(cfg, _STATIC_KNOBS, where))
        elif kind == "kubernetes":
            from .kubernetes.backend import KubernetesBackend

            out[name] = KubernetesBackend.from_config(name, cfg)
        else:
            raise ValueError(f"{where}: unknown type {kind!r} (local, static or kubernetes)")
    return out
