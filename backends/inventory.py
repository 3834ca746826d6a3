"""The simulated GPU inventory of the local backend.

The machine "has" a number of GPUs of each model; an instance type (such as
`NCP.GPU.H100_1x`) takes `gpuCount` of them. An instance holds its GPUs from the
moment it is placed until it stops, so a deployment that asks for more than is
free is refused with a message that becomes the function's healthInfo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import BackendError


class PlacementError(BackendError):
    """No free capacity (or no such instance type) for an instance."""


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    gpu: str
    gpu_count: int = 1
    cpu_cores: int = 8
    system_memory: str = "64G"
    gpu_memory: str = "80G"


DEFAULT_GPUS = {"H100": 4, "A100": 4, "L40S": 8}
DEFAULT_TYPES = (
    InstanceType("NCP.GPU.H100_1x", "H100", 1, 16, "128G", "80G"),
    InstanceType("NCP.GPU.H100_2x", "H100", 2, 32, "256G", "160G"),
    InstanceType("NCP.GPU.A100_1x", "A100", 1, 12, "96G", "80G"),
    InstanceType("NCP.GPU.L40S_1x", "L40S", 1, 8, "64G", "48G"),
)


class Inventory:
    def __init__(self, gpus: Mapping[str, int] | None = None, types: list[InstanceType] | tuple[InstanceType, ...] = DEFAULT_TYPES) -> None:
        self._gpus = dict(DEFAULT_GPUS if gpus is None else gpus)
        self._types = {t.name: t for t in types}
        for t in self._types.values():
            if t.gpu not in self._gpus:
                raise ValueError(f"instance type {t.name} uses GPU {t.gpu}, which the inventory does not list")
            if t.gpu_count < 1:
                raise ValueError(f"instance type {t.name}: gpuCount must be at least 1")
        self._held: dict[str, tuple[str, int]] = {}  # holder id -> (gpu, count)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Inventory:
        """`{"gpus": {"H100": 2, ...}, "instanceTypes": [{"name", "gpu", "gpuCount", "cpuCores",
        "systemMemory", "gpuMemory"}, ...]}`; a missing part keeps the default."""
        cfg = cfg or {}
        types: tuple[InstanceType, ...] = DEFAULT_TYPES
        if "instanceTypes" in cfg:
            types = tuple(
                InstanceType(
                    name=str(t["name"]),
                    gpu=str(t["gpu"]),
                    gpu_count=int(t.get("gpuCount", 1)),
                    cpu_cores=int(t.get("cpuCores", 8)),
                    system_memory=str(t.get("systemMemory", "64G")),
                    gpu_memory=str(t.get("gpuMemory", "80G")),
                )
                for t in cfg["instanceTypes"]
            )
        gpus = {str(k): int(v) for k, v in cfg["gpus"].items()} if "gpus" in cfg else None
        return cls(gpus, types)

    def _used(self, gpu: str) -> int:
        return sum(n for g, n in self._held.values() if g == gpu)

    def free_gpus(self, gpu: str) -> int:
        return self._gpus.get(gpu, 0) - self._used(gpu)

    def mismatch(self, instance_type: str, gpu: str) -> str | None:
        """Why no instance of `instance_type` (with `gpu`) can ever be placed here, or None
        (lack of free capacity is not such a reason: it passes)."""
        t = self._types.get(instance_type)
        if t is None:
            return f"unknown instance type {instance_type!r}; this machine offers {', '.join(sorted(self._types))}"
        if gpu and gpu != t.gpu:
            return f"instance type {instance_type} has GPU {t.gpu}, not {gpu}"
        return None

    def reserve(self, holder: str, instance_type: str, gpu: str) -> InstanceType:
        """Hold the GPUs of one instance of `instance_type` for `holder` (idempotent per holder)."""
        reason = self.mismatch(instance_type, gpu)
        if reason is not None:
            raise PlacementError(reason)
        t = self._types[instance_type]
        if holder in self._held:
            return t
        free = self.free_gpus(t.gpu)
        if free < t.gpu_count:
            raise PlacementError(
                f"insufficient capacity: {instance_type} needs {t.gpu_count} {t.gpu} GPU(s), {free} of {self._gpus[t.gpu]} free"
            )
        self._held[holder] = (t.gpu, t.gpu_count)
        return t

    def release(self, holder: str) -> None:
        self._held.pop(holder, None)

    def capacity(self) -> list[dict[str, Any]]:
        out = []
        for t in self._types.values():
            out.append(
                {
                    "name": t.name,
                    "gpu": t.gpu,
                    "gpuCount": t.gpu_count,
                    "cpuCores": t.cpu_cores,
                    "systemMemory": t.system_memory,
                    "gpuMemory": t.gpu_memory,
                    "total": self._gpus[t.gpu] // t.gpu_count,
                    "free": self.free_gpus(t.gpu) // t.gpu_count,
                }
            )
        return out
