"""Fixtures for the gRPC tests: sample Echo instances as real processes on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.proxy.grpc.gateway import build_table
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[3]
_LISTENING = re.compile(rb"listening on [^:]+:(\d+)")


class EchoProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, impl: str) -> None:
        self.proc, self.port, self.impl = proc, port, impl

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_echo(impl: str, *extra: str) -> EchoProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fngate.backends.samples.grpc_echo",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--impl",
        impl,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    match = _LISTENING.search(line)
    if not match:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"grpc_echo did not start: {line!r}")
    return EchoProcess(proc, int(match.group(1)), impl)


@pytest.fixture(params=["grpcio", "grpclib"])
async def echo_instance(request):
    instance = await start_echo(request.param)
    yield instance
    await instance.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def instances():
    io, lib = await asyncio.gather(start_echo("grpcio"), start_echo("grpclib"))
    yield {"grpcio": io, "grpclib": lib}
    await asyncio.gather(io.stop(), lib.stop())


class GatewayUnderTest:
    """The in-process Gateway; `port` is its dedicated gRPC listener."""

    def __init__(self, gw: Gateway, holder: SnapshotHolder) -> None:
        self.gw, self.holder, self.handler, self.port = gw, holder, gw.grpc, gw.grpc_port


@contextlib.asynccontextmanager
async def running_gateway(instances, **config):
    """A Gateway on free ports with the test routing table, stopped on exit."""
    holder = SnapshotHolder()
    holder.publish(build_table(1, instances["grpcio"].port, instances["grpclib"].port, free_port()))
    gw = Gateway(GatewayConfig(**{"http_port": 0, "grpc_port": 0, "admin_port": 0, **config}), holder, "gw-grpc-test")
    await gw.start()
    try:
        yield GatewayUnderTest(gw, holder)
    finally:
        if gw.serving:  # unless the test stopped it itself
            await gw.stop(grace=1.0)


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(instances, request):
    """A gateway of the test's own (tests publish routes to it); the echo instances are
    shared by the module and only read (tests compare their stats before and after).
    Sessions on, as by default, unless the test is marked `grpc_per_call`."""
    per_call = request.node.get_closest_marker("grpc_per_call") is not None
    async with running_gateway(instances, **({"grpc_sessions": False} if per_call else {})) as gw:
        yield gw
