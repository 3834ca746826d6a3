"""What the management commands share: the API client, key discovery and output."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fngate.proxy.config import LOOPBACK

from ..keys import ADMIN_KEY_FILE

DEFAULT_API_URL = f"http://{LOOPBACK}:8080"


class CliError(Exception):
    """Printed as `fngate: <message>`; the command exits 1."""


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-url",
        default=os.environ.get("FNGATE_API_URL", DEFAULT_API_URL),
        help="management API URL (env FNGATE_API_URL; default %(default)s)",
    )
    p.add_argument("--key", default=os.environ.get("FNGATE_KEY"), help="API key (env FNGATE_KEY; else <data-dir>/admin.key)")
    p.add_argument("--data-dir", type=Path, default=Path(".fngate"), help="where to find admin.key (default ./.fngate)")
    p.add_argument("--json", action="store_true", help="print the raw JSON response")


def resolve_key(args: argparse.Namespace) -> str | None:
    if args.key:
        key: str = args.key
        return key
    try:
        return (args.data_dir / ADMIN_KEY_FILE).read_text().strip() or None
    except OSError:
        return None


def call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    url = args.api_url.rstrip("/") + path
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    key = resolve_key(args)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise CliError(_problem_text(exc)) from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach the API at {args.api_url}: {exc.reason}") from None
    return json.loads(raw) if raw else None


def _problem_text(exc: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(exc.read())
        return f"{problem.get('status', exc.code)} {problem.get('title', exc.reason)}: {problem.get('detail', '')}".rstrip(": ")
    except (ValueError, AttributeError):
        return f"{exc.code} {exc.reason}"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain aligned table; columns are (header, field) pairs."""
    cells = [[h for h, _ in columns]] + [[_cell(r.get(f)) for _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    """--json: the response as is; otherwise `human(data)` (a string)."""
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(human(data))


def run(func: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so CliError prints the message and exits 1."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args) or 0
        except CliError as exc:
            print(f"fngate: {exc}", file=sys.stderr)
            return 1

    return wrapper
