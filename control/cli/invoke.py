"""`fngate invoke` (call a function through the gateway over HTTP, SSE or gRPC) and
`fngate instance logs` (the output of local instances)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from fngate.proxy.config import LOOPBACK

from .client import CliError, add_client_arguments, resolve_key, run

DEFAULT_GATEWAY = f"http://{LOOPBACK}:8000"
DEFAULT_GRPC = f"{LOOPBACK}:10081"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("invoke", help="invoke a function through the gateway (HTTP, SSE or gRPC)")
    add_client_arguments(p)
    p.add_argument("function_id")
    p.add_argument("--version", help="pin a function version id")
    p.add_argument(
        "--gateway",
        default=os.environ.get("FNGATE_GATEWAY_URL", DEFAULT_GATEWAY),
        help="gateway URL (env FNGATE_GATEWAY_URL; default %(default)s)",
    )
    p.add_argument("-d", "--data", help="request body; @FILE reads a file, @- stdin")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("-X", "--request", help="HTTP method (default POST with --data, else GET)")
    p.add_argument("--path", default="/", help="request path (default /)")
    p.add_argument("--sse", action="store_true", help="ask for text/event-stream and print events as they arrive")
    p.add_argument("--grpc", action="store_true", help="call the sample gRPC Echo service through the gRPC port")
    p.add_argument(
        "--grpc-target",
        default=os.environ.get("FNGATE_GRPC_TARGET", DEFAULT_GRPC),
        help="gateway gRPC host:port (env FNGATE_GRPC_TARGET; default %(default)s)",
    )
    p.add_argument("--method", default="Echo", choices=("Echo", "EchoStream"), help="gRPC method (default Echo)")
    p.add_argument("--message", default="hello", help="gRPC request message")
    p.add_argument("--repeat", type=int, default=3, help="EchoStream: number of replies")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=run(_invoke))

    group = sub.add_parser("instance", help="function instances").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = group.add_parser("logs", help="print the log of an instance, or of every instance of a version")
    p.add_argument("target", metavar="VERSION_OR_INSTANCE_ID")
    p.add_argument("--data-dir", type=Path, default=Path(".fngate"), help="fngate's data dir (default ./.fngate)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.set_defaults(func=run(_logs))


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {data[1:]}: {exc.strerror}") from None
    return data.encode()


def _invoke(args: argparse.Namespace) -> int:
    if args.grpc:
        return _invoke_grpc(args)
    body = _body(args.data)
    url = args.gateway.rstrip("/") + ("/" + args.path.lstrip("/"))
    req = urllib.request.Request(url, data=body, method=args.request or ("POST" if body is not None else "GET"))
    req.add_header("function-id", args.function_id)
    if args.version:
        req.add_header("function-version-id", args.version)
    key = resolve_key(args)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if args.sse:
        req.add_header("Accept", "text/event-stream")
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            raise CliError(f"--header {h!r}: expected 'Name: value'")
        req.add_header(name.strip(), value.strip())
    try:
        resp = urllib.request.urlopen(req, timeout=args.timeout)
    except urllib.error.HTTPError as exc:
        sys.stdout.buffer.write(exc.read())
        sys.stdout.flush()
        raise CliError(f"HTTP {exc.code} {exc.reason} (nvcf-reqid {exc.headers.get('nvcf-reqid', '-')})") from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach the gateway at {args.gateway}: {exc.reason}") from None
    with resp:
        if args.sse or resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            for line in resp:  # one line at a time, as the function sends them
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        else:
            while chunk := resp.read(65536):
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    return 0


def _invoke_grpc(args: argparse.Namespace) -> int:
    import grpc

    from fngate.backends.samples import grpc_echo_pb2, grpc_echo_pb2_grpc

    metadata = [("function-id", args.function_id)]
    if args.version:
        metadata.append(("function-version-id", args.version))
    key = resolve_key(args)
    if key:
        metadata.append(("authorization", f"Bearer {key}"))
    with grpc.insecure_channel(args.grpc_target) as channel:
        stub = grpc_echo_pb2_grpc.EchoStub(channel)
        try:
            if args.method == "Echo":
                replies = [stub.Echo(grpc_echo_pb2.EchoRequest(message=args.message), metadata=metadata, timeout=args.timeout)]
            else:
                replies = stub.EchoStream(
                    grpc_echo_pb2.EchoRequest(message=args.message, repeat=args.repeat), metadata=metadata, timeout=args.timeout
                )
            for reply in replies:
                print(f"{reply.index}: {reply.message}", flush=True)
        except grpc.RpcError as exc:
            raise CliError(f"gRPC {exc.code().name}: {exc.details()}") from None
    return 0


def _log_files(data_dir: Path, target: str) -> list[Path]:
    root = data_dir / "instances"
    if (root / target).is_dir():
        return sorted((root / target).glob("*.log"))
    return sorted(root.glob(f"*/{target}.log"))


def _logs(args: argparse.Namespace) -> int:
    files = _log_files(args.data_dir, args.target)
    if not files:
        raise CliError(f"no instance logs for {args.target!r} under {args.data_dir / 'instances'}")
    offsets: dict[Path, int] = {}
    while True:
        for path in files:
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                chunk = f.read()
                offsets[path] = f.tell()
            if chunk:
                if len(files) > 1:
                    prefix = f"[{path.stem[:8]}] ".encode()
                    chunk = b"".join(prefix + line for line in chunk.splitlines(keepends=True))
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        if not args.follow:
            return 0
        time.sleep(0.5)
        files = sorted(set(files) | set(_log_files(args.data_dir, args.target)))
