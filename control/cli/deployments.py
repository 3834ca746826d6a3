"""`fngate deployment create|get|update|delete` and `fngate queue`."""

from __future__ import annotations

import argparse
from typing import Any

from .client import add_client_arguments, call, emit, run, table

SPEC_COLUMNS = [
    ("GPU SPEC ID", "gpuSpecificationId"),
    ("GPU", "gpu"),
    ("INSTANCE TYPE", "instanceType"),
    ("MIN", "minInstances"),
    ("MAX", "maxInstances"),
    ("CONCURRENCY", "maxRequestConcurrency"),
]


def _show(d: dict[str, Any]) -> str:
    dep = d["deployment"]
    head = (
        f"deployment {dep['deploymentId']}  function {dep['functionId']} version {dep['functionVersionId']}"
        f"  status {dep.get('functionStatus', '-')}"
    )
    lines = [head, table(dep["deploymentSpecifications"], SPEC_COLUMNS)]
    for info in dep.get("healthInfo") or ():
        lines.append(f"error: {info.get('error')}")
    return "\n".join(lines)


def _path(args: argparse.Namespace) -> str:
    return f"/v2/nvcf/deployments/functions/{args.function_id}/versions/{args.version_id}"


def _create(args: argparse.Namespace) -> int:
    spec = {
        "gpu": args.gpu,
        "instanceType": args.instance_type,
        "minInstances": args.min_instances,
        "maxInstances": args.max_instances,
        "maxRequestConcurrency": args.max_request_concurrency,
    }
    if args.backend:
        spec["backend"] = args.backend
    data = call(args, "POST", _path(args), {"deploymentSpecifications": [{k: v for k, v in spec.items() if v is not None}]})
    emit(args, data, _show)
    return 0


def _get(args: argparse.Namespace) -> int:
    emit(args, call(args, "GET", _path(args)), _show)
    return 0


def _update(args: argparse.Namespace) -> int:
    deployment = call(args, "GET", _path(args))["deployment"]
    gid = args.gpu_spec_id or deployment["deploymentSpecifications"][0]["gpuSpecificationId"]
    deployment_id = deployment["deploymentId"]
    body = {k: v for k, v in (("minInstances", args.min_instances), ("maxInstances", args.max_instances)) if v is not None}
    data = call(args, "PATCH", f"/v2/nvcf/deployments/{deployment_id}/gpu-specifications/{gid}", body)
    emit(args, data, lambda d: table([d["gpuSpecification"]], SPEC_COLUMNS))
    return 0


def _delete(args: argparse.Namespace) -> int:
    data = call(args, "DELETE", _path(args), query={"graceful": "true" if args.graceful else "false"})
    emit(
        args,
        data,
        lambda d: f"undeployed: function {d['function']['id']} version {d['function']['versionId']} is {d['function']['status']}",
    )
    return 0


def _queue(args: argparse.Namespace) -> int:
    if args.position:
        data = call(args, "GET", f"/v2/nvcf/queues/{args.position}/position")
        emit(args, data, lambda d: f"request {args.position}: position {d['positionInQueue']} in version {d['functionVersionId']}")
        return 0
    if args.function_id is None:
        raise SystemExit("fngate queue: give FUNCTION_ID [VERSION_ID] or --position REQUEST_ID")
    path = f"/v2/nvcf/queues/functions/{args.function_id}"
    if args.version_id:
        path += f"/versions/{args.version_id}"
    data = call(args, "GET", path)
    emit(
        args,
        data,
        lambda d: table(
            d["queues"],
            [("VERSION ID", "functionVersionId"), ("NAME", "functionName"), ("STATUS", "functionStatus"), ("QUEUE DEPTH", "queueDepth")],
        ),
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("deployment", help="deploy, inspect, scale and undeploy function versions").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )

    def with_ids(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help)
        add_client_arguments(p)
        p.add_argument("function_id")
        p.add_argument("version_id")
        return p

    p = with_ids("create", "deploy a function version on one GPU specification")
    p.add_argument("--gpu", required=True, help="e.g. H100")
    p.add_argument("--instance-type", required=True, help="e.g. NCP.GPU.H100_1x")
    p.add_argument("--min-instances", type=int, default=0)
    p.add_argument("--max-instances", type=int, default=1)
    p.add_argument("--max-request-concurrency", type=int)
    p.add_argument("--backend")
    p.set_defaults(func=run(_create))

    with_ids("get", "show a deployment").set_defaults(func=run(_get))

    p = with_ids("update", "change min/max instances of a GPU specification")
    p.add_argument("--gpu-spec-id", help="which GPU specification (default: the first)")
    p.add_argument("--min-instances", type=int)
    p.add_argument("--max-instances", type=int)
    p.set_defaults(func=run(_update))

    p = with_ids("delete", "undeploy (the function becomes INACTIVE)")
    p.add_argument("--graceful", action="store_true", help="let instances drain their queue first")
    p.set_defaults(func=run(_delete))

    p = sub.add_parser("queue", help="queue depth of a function's versions, or a request's position")
    add_client_arguments(p)
    p.add_argument("function_id", nargs="?")
    p.add_argument("version_id", nargs="?")
    p.add_argument("--position", metavar="REQUEST_ID", help="position of a queued request")
    p.set_defaults(func=run(_queue))
