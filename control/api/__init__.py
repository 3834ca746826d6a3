"""The management API (aiohttp.web): NVCF's /v2/nvcf routes plus /v1/keys."""

from .app import make_app

__all__ = ["make_app"]
