"""`fngate function create|list|get|update|delete`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .client import CliError, add_client_arguments, call, emit, run, table

COLUMNS = [
    ("FUNCTION ID", "id"),
    ("VERSION ID", "versionId"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("IMAGE", "containerImage"),
    ("TAGS", "tags"),
]


def _read_body(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read a JSON body from {path}: {exc}") from None
    if not isinstance(body, dict):
        raise CliError(f"{path} must hold a JSON object")
    return body


def _create(args: argparse.Namespace) -> int:
    body = _read_body(args.file) if args.file else {}
    for field, value in (
        ("name", args.name),
        ("containerImage", args.image),
        ("inferenceUrl", args.inference_url),
        ("inferencePort", args.inference_port),
        ("healthUri", args.health_uri),
        ("containerArgs", args.container_args),
        ("description", args.description),
        ("functionType", args.function_type),
    ):
        if value is not None:
            body[field] = value
    if args.env:
        body["containerEnvironment"] = [dict(zip(("key", "value"), e.split("=", 1), strict=False)) for e in args.env]
    if args.tag:
        body["tags"] = args.tag
    path = f"/v2/nvcf/functions/{args.function_id}/versions" if args.function_id else "/v2/nvcf/functions"
    data = call(args, "POST", path, body)
    emit(args, data, lambda d: table([d["function"]], COLUMNS))
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.function_id:
        data = call(args, "GET", f"/v2/nvcf/functions/{args.function_id}/versions")
    else:
        data = call(args, "GET", "/v2/nvcf/functions", query={"visibility": args.visibility})
    emit(args, data, lambda d: table(d["functions"], COLUMNS))
    return 0


def _get(args: argparse.Namespace) -> int:
    data = call(args, "GET", f"/v2/nvcf/functions/{args.function_id}/versions/{args.version_id}")

    def human(d: dict[str, Any]) -> str:
        fn = d["function"]
        lines = [f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in fn.items() if k != "activeInstances"]
        instances = fn.get("activeInstances") or []
        lines.append(f"activeInstances: {len(instances)}")
        if instances:
            lines.append(
                table(instances, [("INSTANCE", "instanceId"), ("STATUS", "instanceStatus"), ("TYPE", "instanceType"), ("GPU", "gpu")])
            )
        return "\n".join(lines)

    emit(args, data, human)
    return 0


def _update(args: argparse.Namespace) -> int:
    body = _read_body(args.file) if args.file else {}
    if args.tag is not None:
        body["tags"] = args.tag
    if args.rate_limit:
        body["rateLimit"] = {"rateLimit": args.rate_limit}
    data = call(args, "PUT", f"/v2/nvcf/functions/{args.function_id}/versions/{args.version_id}", body)
    emit(args, data, lambda d: table([d["function"]], COLUMNS))
    return 0


def _delete(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v2/nvcf/functions/{args.function_id}/versions/{args.version_id}")
    emit(
        args,
        {"deleted": {"functionId": args.function_id, "versionId": args.version_id}},
        lambda _d: f"deleted function {args.function_id} version {args.version_id}",
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("function", help="register, list, update and delete functions").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )

    p = group.add_parser("create", help="create a function, or a new version with --function-id")
    add_client_arguments(p)
    p.add_argument("--file", type=Path, help="a CreateFunctionRequest JSON file (flags override its fields)")
    p.add_argument("--function-id", help="create a new version of this function")
    p.add_argument("--name")
    p.add_argument("--image", help="containerImage")
    p.add_argument("--inference-url", help="inferenceUrl, e.g. /echo (or /grpc)")
    p.add_argument("--inference-port", type=int)
    p.add_argument("--health-uri")
    p.add_argument("--container-args")
    p.add_argument("--description")
    p.add_argument("--function-type", choices=("DEFAULT", "STREAMING", "LLM"))
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="containerEnvironment entry (repeatable)")
    p.add_argument("--tag", action="append", help="tag (repeatable)")
    p.set_defaults(func=run(_create))

    p = group.add_parser("list", help="list functions, or the versions of one")
    add_client_arguments(p)
    p.add_argument("function_id", nargs="?")
    p.add_argument("--visibility", help="comma-separated: authorized,private,public")
    p.set_defaults(func=run(_list))

    p = group.add_parser("get", help="show one function version")
    add_client_arguments(p)
    p.add_argument("function_id")
    p.add_argument("version_id")
    p.set_defaults(func=run(_get))

    p = group.add_parser("update", help="change tags / rate limit of a version")
    add_client_arguments(p)
    p.add_argument("function_id")
    p.add_argument("version_id")
    p.add_argument("--tag", action="append", help="the new tag set (repeatable)")
    p.add_argument("--rate-limit", help="e.g. 100-S")
    p.add_argument("--file", type=Path, help="an UpdateFunctionRequest JSON file")
    p.set_defaults(func=run(_update))

    p = group.add_parser("delete", help="delete a version (and its deployment)")
    add_client_arguments(p)
    p.add_argument("function_id")
    p.add_argument("version_id")
    p.set_defaults(func=run(_delete))
