"""Function instances as pods on a Kubernetes cluster (see backend.py)."""

from ._api import PERMISSIONS, KubeError
from .backend import KubernetesBackend

__all__ = ["PERMISSIONS", "KubeError", "KubernetesBackend"]
