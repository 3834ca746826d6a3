"""Instance processes a previous `fngate serve` left running on this machine.

A local instance gets SIGKILL when its fngate serve dies (PR_SET_PDEATHSIG), but only the
process fngate started does: the children of a wrapper (`sh -c 'server; cleanup'`, a
launcher that forks its workers) live on after kill -9 of fngate serve, holding their ports
and GPUs, and nothing would ever stop them. So the local backend notes each instance in the
data directory while it runs (`instances/running/<instance id>`, holding the pid of the
fngate serve that runs it), every process of an instance inherits NVCF_INSTANCE_ID, and at
start the backend stops the processes of each noted instance whose fngate serve is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("fngate.backends.local")

INSTANCE_ENV = "NVCF_INSTANCE_ID"  # in every process of a local instance, as in a pod of the Kubernetes backend


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: only its parent's wait is missing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_of(instance_ids: set[str]) -> dict[int, str]:
    """pid -> instance id of every live process whose environment names one of the instances."""
    wanted = {f"{INSTANCE_ENV}={iid}".encode(): iid for iid in instance_ids}
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for var in environ.split(b"\0"):
            iid = wanted.get(var)
            if iid is not None:
                found[int(entry)] = iid
                break
    return found


class Leftovers:
    def __init__(self, directory: Path, owner: int | None = None) -> None:
        self.directory = directory
        self.owner = owner if owner is not None else os.getpid()

    def note(self, instance_id: str) -> None:
        """The instance runs, under this process."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / instance_id).write_text(str(self.owner))

    def forget(self, instance_id: str) -> None:
        """The instance stopped, every process of it."""
        (self.directory / instance_id).unlink(missing_ok=True)

    def orphaned(self) -> list[str]:
        """Noted instances whose fngate serve is gone."""
        try:
            notes = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        out = []
        for note in notes:
            try:
                owner = int(note.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner != self.owner and (owner <= 0 or not _alive(owner)):
                out.append(note.name)
        return out

    async def reap(self, grace: float) -> dict[int, str]:
        """Stop the processes of orphaned instances (SIGTERM, SIGKILL after `grace`) and
        forget them; returns what was found running, pid -> instance id."""
        orphans = set(self.orphaned())
        if not orphans:
            return {}
        found = await asyncio.to_thread(processes_of, orphans)
        for pid, iid in found.items():
            log.warning("stopping process %d of instance %s, left running by a previous fngate serve", pid, iid)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            left = [pid for pid in found if _alive(pid)]
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            ends = time.monotonic() + wait
            while left and time.monotonic() < ends:
                await asyncio.sleep(0.05)
                left = [pid for pid in left if _alive(pid)]
            if not left:
                break
        for iid in orphans:
            self.forget(iid)
        return found
