"""The `fngate` command line: `fngate serve` and the management commands.

Each command group lives in a module exposing `register(subparsers)`; the tuple
COMMAND_MODULES lists them, so a new group is one module plus one name here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import ConfigError, add_serve_arguments, from_args

COMMAND_MODULES = ("control.cli_functions", "control.cli_deployments", "control.cli_keys", "control.cli_loadtest", "control.cli_invoke")


def _serve(args: argparse.Namespace) -> int:
    from . import serve

    return serve.main(from_args(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fngate", description="Self-hosted, NVCF-compatible serverless invocation gateway")
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
