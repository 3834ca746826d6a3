"""Instructions per request of the gateway process, counted by callgrind.

Wall-clock figures need an idle machine; an instruction count does not: the same requests
through the same build execute (within a fraction of a percent) the same instructions
however loaded the cores are. So this is the measure to compare one change of the
per-request path with the next on a shared machine (`make bench-instr`):

- a trivial HTTP/1.1 instance (in this module, its own process, not counted) answering
  every request with a fixed 100-byte JSON body;
- the gateway (`python -m fngate.bench.fngate`, every per-request feature on: key check,
  routing, limits, metrics, request ids, NVCF headers) under `valgrind --tool=callgrind`;
- per protocol: a warm-up, then callgrind's counters zeroed (`callgrind_control -z`), a
  fixed number of requests, a dump (`callgrind_control -d`); the dump holds the window
  alone, so startup and warm-up never count. HTTP/1.1: one keep-alive connection, one
  request at a time (a small blocking client here); h2c: `h2load -n N -c1 -m1`.

Reported: instructions (Ir) per request, and the functions with the highest inclusive
cost (callgrind_annotate), which is where the next step should look. Timer callbacks that
fire during the window count too; they are a small, wall-clock dependent share.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fngate.bench.fngate import Upstream, build_table, invoke_headers
from fngate.bench.procs import PYTHON, free_port, wait_port
from fngate.proxy.config import LOOPBACK

BODY = b'{"ok":true,"pad":"' + b"x" * 82 + b'"}'  # 100 bytes, as the bench's small responses
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
PROTOCOLS = ("h1", "h2")
FUNCTION = "instr"


# -- the instance: fixed answers, bodiless requests only ------------------------------------
def serve_instance(port: int) -> None:
    import asyncio

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data
            n = buf.count(b"\r\n\r\n")
            if n:
                self.transport.write(RESPONSE * n)  # type: ignore[attr-defined]
                buf = buf[buf.rindex(b"\r\n\r\n") + 4 :]
            self.buf = buf

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Answer, LOOPBACK, port)
        await server.serve_forever()

    asyncio.run(main())


# -- the clients ------------------------------------------------------------------------------
def h1_requests(port: int, n: int, headers: dict[str, str]) -> int:
    """`n` GETs on one keep-alive connection, one at a time; returns how many got a 200."""
    req = (f"GET / HTTP/1.1\r\nhost: {LOOPBACK}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    ok = 0
    with socket.create_connection((LOOPBACK, port), timeout=120) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(n):
            s.sendall(req)
            while b"\r\n\r\n" not in buf:
                buf += _recv(s)
            head, buf = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            while len(buf) < length:
                buf += _recv(s)
            buf = buf[length:]
            ok += head.startswith(b"HTTP/1.1 200")
    return ok


def _recv(s: socket.socket) -> bytes:
    data = s.recv(65536)
    if not data:
        raise RuntimeError("the gateway closed the connection")
    return data


def h2_requests(port: int, n: int, headers: dict[str, str]) -> int:
    binary = shutil.which("h2load")
    if binary is None:
        raise RuntimeError("h2load is not installed: apt-get install nghttp2-client")
    cmd = [binary, "-n", str(n), "-c1", "-m1", "-t1"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [f"http://{LOOPBACK}:{port}/"], capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"status codes: (\d+) 2xx", out)
    return int(m.group(1)) if m else 0


CLIENTS = {"h1": h1_requests, "h2": h2_requests}


# -- callgrind --------------------------------------------------------------------------------
@dataclass
class Result:
    protocol: str
    requests: int
    ok: int
    instructions: int
    per_request: float
    top: list[tuple[str, int]] = field(default_factory=list)  # (function, inclusive Ir per request)
    top_self: list[tuple[str, int]] = field(default_factory=list)  # (function, its own Ir per request)
    dump: str = ""


def total_instructions(dump: Path) -> int:
    """The Ir total of a callgrind dump ('summary:' or 'totals:' line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no totals line")


_ANNOTATE_ROW = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:\*\s+)?(.+?)\s*$")


def short_name(entry: str) -> str:
    """'/path/to/file.c:func [/path/lib.so]' -> 'func [lib.so]'."""
    lib = re.search(r"\[([^\]]+)\]\s*$", entry)
    name = entry[: lib.start()].strip() if lib else entry
    name = name.rsplit(":", 1)[-1] if ":" in name else name
    return f"{name} [{Path(lib.group(1)).name}]" if lib else name


def top_functions(dump: Path, n: int) -> list[tuple[str, int]]:
    """The `n` functions of highest inclusive cost, as callgrind_annotate ranks them,
    without the event loop's frames that hold the whole window and without recursion
    levels (marked 'N)."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)], capture_output=True, text=True, timeout=300
    ).stdout
    total = total_instructions(dump)
    rows: list[tuple[str, int]] = []
    seen: set[str] = set()
    started = False
    for line in out.splitlines():
        if "file:function" in line:
            started = True
            continue
        m = _ANNOTATE_ROW.match(line) if started else None
        if m is None:
            continue
        ir, name = int(m.group(1).replace(",", "")), short_name(m.group(2))
        if ir >= 0.9 * total or re.search(r"'\d+\b", name) or name in seen:
            continue
        seen.add(name)
        rows.append((name, ir))
        if len(rows) >= n:
            break
    return rows


def self_costs(dump: Path, n: int) -> list[tuple[str, int]]:
    """The `n` functions of highest self (exclusive) cost, read from the dump itself
    (callgrind_annotate 3.19 ranks a dump taken mid-run by inclusive cost either way):
    a cost line counts for its function unless it follows `calls=` (a call's inclusive
    cost). Names are compressed as `(id) name` the first time, `(id)` after."""
    names: dict[str, str] = {}
    objs: dict[str, str] = {}
    own: dict[str, int] = {}
    fn = ""
    obj = ""
    after_call = False
    for line in dump.read_text(errors="replace").splitlines():
        if not line:
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            if after_call:
                after_call = False
            else:
                own[fn] = own.get(fn, 0) + int(line.split()[-1])
            continue
        key, _, value = line.partition("=")
        if key == "calls":
            after_call = True
        elif key == "ob":
            obj = _compressed(objs, value)
        elif key == "fn":
            fn = _compressed(names, value) + (f" [{Path(obj).name}]" if obj else "")
        elif key in ("cob", "cfn", "cfi", "cfl"):
            if key == "cob":
                _compressed(objs, value)
            elif key == "cfn":
                _compressed(names, value)
    return sorted(own.items(), key=lambda kv: -kv[1])[:n]


def _compressed(table: dict[str, str], value: str) -> str:
    value = value.strip()
    if value.startswith("("):
        ident, _, name = value.partition(")")
        name = name.strip()
        if name:
            table[ident] = name
        return table.get(ident, value)
    return value


class Callgrind:
    """The gateway under callgrind, zeroed and dumped around each measured window."""

    def __init__(self, work: Path, instance_port: int) -> None:
        self.work = work
        table = work / "table.json"
        table.write_bytes(build_table([Upstream(FUNCTION, LOOPBACK, instance_port)]).to_json())
        ready = work / "ready.json"
        ready.unlink(missing_ok=True)
        self.out = work / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", "--dump-instr=no", PYTHON,
               "-m", "fngate.bench.fngate", "--table", str(table), "--ready-file", str(ready)]  # fmt: skip
        self.log = (work / "gateway.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start under callgrind:\n{(work / 'gateway.log').read_text()[-3000:]}")
            time.sleep(0.2)
        ports = json.loads(ready.read_text())
        self.port: int = ports["http_port"]
        self.build: str = ports["build"]
        wait_port(self.port, timeout=120)
        self._dumps = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True, timeout=120)

    def zero(self) -> None:
        self._control("-z")

    def dump(self) -> Path:
        before = set(self.work.glob("callgrind.out*"))
        self._control("-d")
        self._dumps += 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = [p for p in set(self.work.glob("callgrind.out*")) - before if p.stat().st_size > 0]
            if new:
                time.sleep(0.5)  # written by now; let it finish
                return new[0]
            time.sleep(0.1)
        raise RuntimeError("callgrind wrote no dump")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def measure(protocols: list[str], requests: int, warmup: int, top: int, work: Path) -> tuple[str, list[Result]]:
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: apt-get install valgrind")
    work.mkdir(parents=True, exist_ok=True)
    instance_port = free_port()
    instance = subprocess.Popen([PYTHON, "-m", "fngate.bench.instructions", "--instance", str(instance_port)], start_new_session=True)
    gateway = None
    try:
        wait_port(instance_port)
        gateway = Callgrind(work, instance_port)
        headers = invoke_headers(FUNCTION)
        results = []
        for proto in protocols:
            client = CLIENTS[proto]
            if client(gateway.port, warmup, headers) != warmup:
                raise RuntimeError(f"{proto}: the warm-up requests did not all succeed")
            gateway.zero()
            ok = client(gateway.port, requests, headers)
            dump = gateway.dump()
            total = total_instructions(dump)
            rows = [(fn, ir // requests) for fn, ir in top_functions(dump, top)] if top else []
            own = [(fn, ir // requests) for fn, ir in self_costs(dump, top)] if top else []
            results.append(Result(proto, requests, ok, total, total / requests, rows, own, str(dump)))
        return gateway.build, results
    finally:
        if gateway is not None:
            gateway.stop()
        os.killpg(instance.pid, signal.SIGTERM)
        instance.wait(30)


def report(build: str, results: list[Result]) -> str:
    lines = [f"data plane: {build}", "", "| protocol | requests | 200s | Ir per request |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.protocol} | {r.requests} | {r.ok} | {r.per_request:,.0f} |" for r in results]
    for r in results:
        if r.top:
            lines += ["", f"{r.protocol}: top functions by inclusive Ir per request", ""]
            lines += [f"{ir:>12,}  {fn}" for fn, ir in r.top]
        if r.top_self:
            lines += ["", f"{r.protocol}: top functions by self Ir per request", ""]
            lines += [f"{ir:>12,}  {fn}" for fn, ir in r.top_self]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fngate.bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per protocol")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the counters are zeroed")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: h1, h2")
    parser.add_argument("--top", type=int, default=40, help="functions to list by inclusive cost (0: none)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/instructions"), help="dumps and the JSON result")
    parser.add_argument("--instance", type=int, metavar="PORT", help=argparse.SUPPRESS)  # run as the trivial instance
    args = parser.parse_args(argv)
    if args.instance:
        serve_instance(args.instance)
        return 0
    protocols = [p for p in args.protocols.split(",") if p]
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        parser.error(f"unknown protocol(s): {', '.join(sorted(unknown))}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = args.out / stamp
    build, results = measure(protocols, args.requests, args.warmup, args.top, work)
    text = report(build, results)
    (work / "result.json").write_text(json.dumps({"build": build, "results": [asdict(r) for r in results]}, indent=1))
    (work / "result.md").write_text(text + "\n")
    print(text)
    failed = [r.protocol for r in results if r.ok != r.requests]
    if failed:
        print(f"not every request succeeded: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
