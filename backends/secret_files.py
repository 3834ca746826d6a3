"""Where the local backend puts an instance's secrets: `<dir>/<instance-id>/secrets.json`,
and the account-level secrets of its telemetries: `<dir>/<instance-id>/accounts-secrets.json`.

NVCF renders a version's secrets into /var/secrets/secrets.json, a JSON object keyed by
secret name, and refreshes the file when the values change (spec part 2, 4.4); never
into environment variables. A local process cannot have /var/secrets, so its file is
named by FNGATE_SECRETS_FILE. The directory is private (0700, files 0600), lives outside
the data dir (RAM-backed /dev/shm when there is one, so values never reach a disk), and
each file is removed when its instance stops.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson

FILE_NAME = "secrets.json"
ENV_VAR = "FNGATE_SECRETS_FILE"
ACCOUNT_FILE_NAME = "accounts-secrets.json"  # the telemetries' account-level secrets (NVCF's ESS file)
ACCOUNT_ENV_VAR = "FNGATE_ACCOUNTS_SECRETS_FILE"


def _ram_dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


class SecretFiles:
    def __init__(self, base: str | Path | None = None) -> None:
        self._base = str(base) if base is not None else _ram_dir()
        self._root: Path | None = None

    def _dir(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="fngate-secrets-", dir=self._base))  # 0700
        return self._root

    def path(self, instance_id: str, name: str = FILE_NAME) -> Path:
        """Where the instance's file `name` is (or will be), in its private folder."""
        folder = self._dir() / instance_id
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / name

    def write(self, instance_id: str, secrets: dict[str, Any], name: str = FILE_NAME) -> Path:
        """Write (or replace, atomically) the instance's file `name` and return its path."""
        path = self.path(instance_id, name)
        folder = path.parent
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".secrets-")  # mkstemp: 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(orjson.dumps(secrets))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    def remove(self, instance_id: str, name: str | None = None) -> None:
        """Remove the instance's file `name`, or all of its files."""
        if self._root is None:
            return
        if name is None:
            shutil.rmtree(self._root / instance_id, ignore_errors=True)
        else:
            (self._root / instance_id / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
