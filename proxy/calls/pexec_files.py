"""The files of a compat-mode (pexec/exec) request, as NVCF's worker keeps them (spec part 2,
1.6, 1.7): the per-request output directory the instance writes `progress` and artifacts
into (`NVCF-LARGE-OUTPUT-DIR`), and the zipped large results served back by a Location.

Only pexec and exec use this module, never a host-routed call: these are the only places
in the data plane that touch the filesystem, and only for path-routed requests.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import orjson

MAX_DIRECT_BYTES = 5 * 1024 * 1024  # NVCF's MaxDirectResponseSizeBytes: a larger body goes large
LOCATION_TTL = 35 * 60  # NVCF's presigned GET (S3PreSignedUrlGenerator SIGNATURE_DURATION)
PROGRESS_FILE = "progress"
RESULTS_PATH = b"/v2/nvcf/pexec/results/"
_RESULT_NAME = re.compile(r"[0-9a-f-]{36}(?:\.[0-9]+)?-[0-9a-f]{32}\.zip").fullmatch


class ZipShare(Protocol):
    """Where a large result's zip is put for other gateway replicas to serve
    (proxy/calls/pexec_results.SharedResults, with Redis)."""

    async def store_zip(self, name: str, path: str) -> None: ...


def result_name_ok(name: str) -> bool:
    """A name LargeResults.build could have made (anything else is never looked up)."""
    return _RESULT_NAME(name) is not None


@dataclass(frozen=True, slots=True)
class Progress:
    """One accepted progress update: NVCF answers it as a 202."""

    percent: int
    body: bytes  # `partialResponse` re-serialized (`null` when absent)


class OutputDir:
    """`{base}/{requestId}`: made (mode 0777) before the instance gets the request,
    removed after it. `progress()` returns an update newer than the last one delivered,
    as NVCF's monitor does: a file whose mtime moved on and whose `id` is this request's."""

    __slots__ = ("_seen", "path", "request_id")

    def __init__(self, base: str, request_id: str) -> None:
        self.request_id = request_id
        self.path = os.path.join(base, request_id)
        self._seen = 0  # mtime (ns) of the last delivered update

    def create(self) -> None:
        os.makedirs(self.path, mode=0o777, exist_ok=True)
        os.chmod(self.path, 0o777)  # (makedirs' mode is masked by the umask; NVCF's is 0777)

    def progress(self) -> Progress | None:
        found = self.peek(self._seen)
        if found is None:
            return None
        self._seen, update = found
        return update

    def peek(self, after: int) -> tuple[int, Progress] | None:
        """(mtime ns, update) of a progress file newer than `after`, leaving what progress()
        delivers alone (the Redis share publishes it for polls on other replicas)."""
        path = os.path.join(self.path, PROGRESS_FILE)
        try:
            mtime = os.stat(path).st_mtime_ns
            if mtime <= after:
                return None
            with open(path, "rb") as f:
                doc = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):  # absent, or caught mid-write: the next look sees it
            return None
        if not isinstance(doc, dict) or doc.get("id") != self.request_id:
            return None  # NVCF logs and ignores an update for another request
        pct = doc.get("progress")
        percent = pct if isinstance(pct, int) and not isinstance(pct, bool) else 0
        return mtime, Progress(percent, orjson.dumps(doc.get("partialResponse")))

    def artifacts(self) -> list[str]:
        """Files other than `progress` under the directory (relative paths)."""
        found = []
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                if name != PROGRESS_FILE:
                    found.append(os.path.relpath(os.path.join(root, name), self.path))
        return sorted(found)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class LargeResults:
    """Zipped large results in `directory`, each under an unguessable name that its
    Location carries: `{requestId}-{token}.zip`. The Location is the capability, as a
    presigned URL is, valid LOCATION_TTL seconds from the upload; every process on the
    machine (the --workers siblings) serves the same directory."""

    __slots__ = ("directory", "shared")

    def __init__(self, directory: str, shared: ZipShare | None = None) -> None:
        self.directory = directory
        self.shared = shared  # with Redis: each zip is stored there too, for any replica to serve

    def path_of(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def build(self, request_id: str, body_file: str, outputs: OutputDir) -> str:
        """Zip the body (entry `{requestId}.response`) and the artifacts (their paths under
        the output dir), as NVCF's worker; returns the file name. Blocking: run in a thread."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.sweep()
        name = f"{request_id}-{secrets.token_hex(16)}.zip"
        tmp = os.path.join(self.directory, name + ".part")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.write(body_file, f"{request_id}.response")
            for rel in outputs.artifacts():
                zf.write(os.path.join(outputs.path, rel), rel)
        os.replace(tmp, os.path.join(self.directory, name))  # served only once complete
        return name

    def open(self, name: str) -> tuple[int, BinaryIO] | None:
        """(size, open binary file) of a result still valid, else None."""
        if _RESULT_NAME(name) is None:
            return None
        path = os.path.join(self.directory, name)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_mtime + LOCATION_TTL < time.time():
            return None
        try:
            return st.st_size, open(path, "rb")  # the caller streams and closes it
        except OSError:
            return None

    def sweep(self) -> None:
        """Remove results past their expiry (and parts a crash left behind)."""
        cutoff = time.time() - LOCATION_TTL
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass


def spool_path(directory: str, request_id: str) -> str:
    """Where a body over MAX_DIRECT_BYTES is written while it arrives."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return str(Path(directory) / f".{request_id}.body")
