"""The `fngate` command line: `fngate serve` and the management commands.

Each command group lives in a module exposing `register(subparsers)`; the tuple
COMMAND_MODULES lists them, so a new group is one module plus one name here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fngate import __version__

from ..config import ConfigError, add_serve_arguments, from_args

COMMAND_MODULES = (
    "fngate.control.cli.functions",
    "fngate.control.cli.deployments",
    "fngate.control.cli.keys",
    "fngate.control.cli.loadtest",
    "fngate.control.cli.invoke",
)


def _serve(args: argparse.Namespace) -> int:
    from .. import serve

    return serve.main(from_args(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fngate", description="Self-hosted, NVCF-compatible serverless invocation gateway")
    parser.add_argument("--version", action="version", version=f"fngate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = sub.add_parser("serve", help="run the control plane (management API) and the gateway")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"fngate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
