"""LocalBackend: function instances as child processes on loopback (the embedded default).

Each instance is one process started from the image catalog on its own free port,
holding its GPUs in the simulated inventory until it stops. A supervisor task per
instance starts it, waits for its health check (FAILED with the reason when it
exits or stays unhealthy past the startup timeout), watches it while it runs
(LOST when it exits or fails `unhealthy_after` probes in a row, e.g. hung) and
restarts it with exponential backoff. Output goes to
`<data-dir>/instances/<version-id>/<instance-id>.log`. Before its first instance starts,
it stops the processes a killed previous fngate serve left running (backends/leftovers.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fngate.proxy.config import LOOPBACK

from .base import BackendError, InstanceEvent, InstanceSpec, nvcf_environment
from .base import InstanceEventKind as K
from .catalog import ImageCatalog, UnknownImage
from .hub import EventHub
from .inventory import Inventory, PlacementError
from .leftovers import INSTANCE_ENV, Leftovers
from .probe import probe
from .secret_files import ACCOUNT_ENV_VAR as ACCOUNT_SECRETS_ENV
from .secret_files import ACCOUNT_FILE_NAME as ACCOUNT_SECRETS_FILE
from .secret_files import ENV_VAR as SECRETS_ENV
from .secret_files import FILE_NAME as SECRETS_FILE
from .secret_files import SecretFiles

log = logging.getLogger("fngate.backends.local")
_seq = itertools.count()


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies, so a killed `fngate serve`
    leaves no orphan instances behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        return ""
    body = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("--- fngate")]
    return " | ".join(body[-lines:])


@dataclass(eq=False)
class _Instance:
    id: str
    key: tuple[str, str]  # (version id, gpu spec id)
    spec: InstanceSpec
    log_path: Path
    seq: int = field(default_factory=lambda: next(_seq))
    process: asyncio.subprocess.Process | None = None
    exited: asyncio.Future | None = None  # one waiter per process, shared by every check
    port: int = 0
    ready: bool = False
    graceful: bool = True
    task: asyncio.Task | None = None


class LocalBackend:
    per_replica = True  # its instances die with this process: another replica cannot adopt them (control/handover.py)

    def __init__(
        self,
        name: str = "local",
        *,
        data_dir: str | Path = ".fngate",
        catalog: ImageCatalog | None = None,
        inventory: Inventory | None = None,
        host: str = LOOPBACK,
        probe_interval: float = 0.5,
        startup_timeout: float = 120.0,
        unhealthy_after: int = 3,
        restart_backoff: float = 0.5,
        restart_backoff_max: float = 15.0,
        stop_grace: float = 5.0,
        region: str = "local",
        env: str = "fngate",
    ) -> None:
        self.name = name
        self.catalog = catalog or ImageCatalog()
        self.inventory = inventory or Inventory()
        self.logs_dir = Path(data_dir) / "instances"
        self.host = host
        self.probe_interval = probe_interval
        self.startup_timeout = startup_timeout
        self.unhealthy_after = unhealthy_after
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.stop_grace = stop_grace
        self.region = region
        self.env = env
        self._groups: dict[tuple[str, str], dict[str, _Instance]] = {}
        self._hub = EventHub()
        self._secret_files = SecretFiles()  # outside data_dir, private, removed with each instance
        self._leftovers = Leftovers(self.logs_dir / "running")
        self._reaped: asyncio.Task[dict[int, str]] | None = None
        self._closed = False

    # -- Backend protocol ----------------------------------------------------------------
    def refusal(self, spec: InstanceSpec) -> str | None:
        """Why this backend can never run `spec` (asked at deploy time, so a deployment it
        cannot run is refused with the reason instead of sitting ACTIVE at zero), or None."""
        try:
            self.catalog.command(spec.container_image, self.host, 0)
            shlex.split(spec.container_args)
        except UnknownImage as exc:
            return str(exc)
        except ValueError as exc:
            return f"containerArgs cannot be parsed: {exc}"
        return self.inventory.mismatch(spec.instance_type, spec.gpu)

    async def apply(self, spec: InstanceSpec, replicas: int) -> None:
        if self._closed:
            raise RuntimeError("backend is closed")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.catalog.command(spec.container_image, self.host, 0)  # UnknownImage before anything starts
        try:
            shlex.split(spec.container_args)
        except ValueError as exc:
            raise BackendError(f"containerArgs cannot be parsed: {exc}") from None
        await self._reap_leftovers()
        key = (spec.version_id, spec.gpu_spec_id)
        group = self._groups.setdefault(key, {})
        for inst in group.values():
            changed = inst.spec.secrets != spec.secrets or inst.spec.account_secrets != spec.account_secrets
            if changed and inst.process is not None:
                self._refresh_secrets(inst, spec)
            inst.spec = spec  # later restarts use the newest spec
        extra = len(group) - replicas
        if extra > 0:
            # not-ready first, then the newest: the longest-serving instances stay
            victims = sorted(group.values(), key=lambda i: (i.ready, -i.seq))[:extra]
            await self._stop(victims, graceful=True)
            return
        for _ in range(-extra):
            inst_id = str(uuid.uuid4())
            try:
                self.inventory.reserve(inst_id, spec.instance_type, spec.gpu)
            except PlacementError as exc:
                raise PlacementError(f"{exc} (placed {len(group)} of {replicas} instances)") from None
            inst = _Instance(inst_id, key, spec, self.logs_dir / spec.version_id / f"{inst_id}.log")
            group[inst_id] = inst
            inst.task = asyncio.create_task(self._supervise(inst), name=f"instance-{inst_id}")

    async def _reap_leftovers(self) -> None:
        """Once, before the first instance starts: what a killed previous run left running."""
        if self._reaped is None:
            self._reaped = asyncio.ensure_future(self._leftovers.reap(self.stop_grace))
        try:
            await asyncio.shield(self._reaped)
        except Exception as exc:  # /proc unreadable, say: start anyway
            log.warning("could not look for instances a previous run left: %s", exc)

    def _refresh_secrets(self, inst: _Instance, spec: InstanceSpec) -> None:
        """New values reach a running instance in place, as NVCF's secrets sidecar
        refreshes /var/secrets/secrets.json (it reads the file again; no restart)."""
        for values, name in ((spec.secrets, SECRETS_FILE), (spec.account_secrets, ACCOUNT_SECRETS_FILE)):
            if values:
                self._secret_files.write(inst.id, values, name)
            else:
                self._secret_files.remove(inst.id, name)

    async def remove(self, version_id: str, *, graceful: bool = True) -> None:
        victims = [i for key, g in self._groups.items() if key[0] == version_id for i in g.values()]
        await self._stop(victims, graceful=graceful)
        for key in [k for k in self._groups if k[0] == version_id]:
            if not self._groups[key]:
                del self._groups[key]

    async def stop_instances(self, version_id: str, instance_ids: list[str], *, graceful: bool = True) -> None:
        wanted = set(instance_ids)
        victims = [i for key, g in self._groups.items() if key[0] == version_id for i in g.values() if i.id in wanted]
        await self._stop(victims, graceful=graceful)

    def events(self) -> AsyncIterator[InstanceEvent]:
        return self._hub.subscribe()

    def capacity(self) -> list[dict[str, Any]]:
        return self.inventory.capacity()

    async def aclose(self) -> None:
        self._closed = True
        await self._stop([i for g in self._groups.values() for i in g.values()], graceful=True)
        self._groups.clear()
        self._secret_files.close()
        self._hub.close()

    # -- introspection (CLI, tests) ----------------------------------------------------------
    def instances(self, version_id: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "instanceId": i.id,
                "versionId": i.key[0],
                "port": i.port,
                "ready": i.ready,
                "pid": i.process.pid if i.process else None,
                "log": str(i.log_path),
            }
            for key, g in self._groups.items()
            if version_id in (None, key[0])
            for i in g.values()
        ]

    # -- supervision ----------------------------------------------------------------------
    async def _stop(self, victims: list[_Instance], *, graceful: bool) -> None:
        tasks = []
        for inst in victims:
            inst.graceful = graceful
            if inst.task is not None and not inst.task.done():
                inst.task.cancel()
                tasks.append(inst.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _emit(self, kind: K, inst: _Instance, detail: str = "") -> None:
        self._hub.emit(InstanceEvent(kind, inst.key[0], inst.id, self.host if inst.port else "", inst.port, detail, inst.key[1]))

    def _backoff(self, restarts: int) -> float:
        return min(self.restart_backoff * (2 ** max(restarts - 1, 0)), self.restart_backoff_max)

    async def _supervise(self, inst: _Instance) -> None:
        restarts = port_races = 0
        ever_ready = False
        announced = False  # a STARTING/READY is outstanding and needs a LOST at the end
        try:
            while True:
                try:
                    await self._spawn(inst)
                except OSError as exc:  # no such program, not executable, ...
                    self._emit(
                        K.FAILED,
                        inst,
                        f"cannot start {inst.spec.container_image!r}: {exc.strerror or exc}"
                        + (f" ({exc.filename})" if exc.filename else ""),
                    )
                    return
                self._emit(K.STARTING, inst)
                announced = True
                problem = await self._await_ready(inst)
                if problem is not None:
                    await self._kill(inst, graceful=False)
                    if not ever_ready and "in use" in problem and port_races < 2:
                        port_races += 1  # the free port was taken before the process bound it: try another
                        continue
                    if not ever_ready:
                        self._emit(K.FAILED, inst, problem)
                        announced = False
                        return
                    restarts += 1
                    log.warning("instance %s restart %d failed: %s", inst.id, restarts, problem)
                    await asyncio.sleep(self._backoff(restarts))
                    continue
                ever_ready = True
                inst.ready = True
                ready_at = time.monotonic()
                self._emit(K.READY, inst)
                reason = await self._watch(inst)
                inst.ready = False
                self._emit(K.LOST, inst, reason)
                announced = False
                log.warning("instance %s of %s lost: %s", inst.id, inst.key[0], reason)
                await self._kill(inst, graceful=False)
                restarts = 1 if time.monotonic() - ready_at > 60 else restarts + 1
                await asyncio.sleep(self._backoff(restarts))
        finally:
            inst.ready = False
            await self._kill(inst, graceful=inst.graceful)
            if announced:
                self._emit(K.LOST, inst, "stopped")
            self.inventory.release(inst.id)
            self._secret_files.remove(inst.id)
            self._leftovers.forget(inst.id)
            self._groups.get(inst.key, {}).pop(inst.id, None)

    async def _spawn(self, inst: _Instance) -> None:
        spec = inst.spec
        inst.port = free_port(self.host)
        argv = self.catalog.command(spec.container_image, self.host, inst.port) + shlex.split(spec.container_args)
        inst.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **spec.environment,
            **self._nvcf_env(spec),
            INSTANCE_ENV: inst.id,
            "PORT": str(inst.port),
            "PYTHONUNBUFFERED": "1",
        }
        if spec.secrets:
            env[SECRETS_ENV] = str(self._secret_files.write(inst.id, spec.secrets))
        # always named: a telemetry secret set after the start appears there in place
        env[ACCOUNT_SECRETS_ENV] = str(self._secret_files.path(inst.id, ACCOUNT_SECRETS_FILE))
        if spec.account_secrets:
            self._secret_files.write(inst.id, spec.account_secrets, ACCOUNT_SECRETS_FILE)
        self._leftovers.note(inst.id)  # before it runs: a kill -9 of fngate serve may come at any time
        with open(inst.log_path, "ab") as out:  # noqa: ASYNC230 a local log, opened once per instance start
            out.write(f"--- fngate: starting instance {inst.id} on port {inst.port}: {shlex.join(argv)}\n".encode())
            out.flush()
            inst.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        inst.exited = asyncio.ensure_future(inst.process.wait())

    def _nvcf_env(self, spec: InstanceSpec) -> dict[str, str]:
        return nvcf_environment(spec, backend=self.name, env=self.env, region=self.region)

    async def _await_ready(self, inst: _Instance) -> str | None:
        """None once the health check passes; otherwise why it never did."""
        assert inst.process is not None and inst.exited is not None  # _start made both
        deadline = time.monotonic() + self.startup_timeout
        last = "no health check answered yet"
        interval = min(self.probe_interval, 0.2)
        while time.monotonic() < deadline:
            if inst.process.returncode is not None:
                tail = log_tail(inst.log_path)
                return f"process exited with code {inst.process.returncode} during startup" + (f": {tail}" if tail else "")
            problem = await probe(inst.spec.health, self.host, inst.port)
            if problem is None:
                return None
            last = problem
            await asyncio.wait({inst.exited}, timeout=interval)
        return f"instance did not become healthy within {self.startup_timeout:g}s (last: {last})"

    async def _watch(self, inst: _Instance) -> str:
        """Return why the instance stopped being usable: it exited, or it failed its
        health check `unhealthy_after` times in a row (a hung worker)."""
        assert inst.process is not None and inst.exited is not None  # _start made both
        failures = 0
        while True:
            done, _ = await asyncio.wait({inst.exited}, timeout=self.probe_interval)
            if done:
                return f"process exited with code {inst.process.returncode}"
            problem = await probe(inst.spec.health, self.host, inst.port)
            if problem is None:
                failures = 0
                continue
            failures += 1
            if failures >= self.unhealthy_after:
                return f"unhealthy ({problem}), {failures} checks in a row"

    async def _kill(self, inst: _Instance, *, graceful: bool) -> None:
        proc, exited = inst.process, inst.exited
        if proc is None or exited is None or exited.done():
            return
        for sig, wait in ((signal.SIGTERM, self.stop_grace), (signal.SIGKILL, 10.0)) if graceful else ((signal.SIGKILL, 10.0),):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            done, _ = await asyncio.wait({exited}, timeout=wait)
            if done:
                return
        log.error("instance %s (pid %d) did not exit after SIGKILL", inst.id, proc.pid)
