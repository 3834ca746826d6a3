"""`fngate key create|list|revoke`."""

from __future__ import annotations

import argparse

from ..keys import SCOPES
from .client import add_client_arguments, call, emit, run, table

COLUMNS = [
    ("KEY ID", "keyId"),
    ("DESCRIPTION", "description"),
    ("SCOPES", "scopes"),
    ("FUNCTIONS", "functionIds"),
    ("EXPIRES", "expiresAt"),
]


def _create(args: argparse.Namespace) -> int:
    body = {"scopes": args.scope, "description": args.description or ""}
    if args.function_id:
        body["functionIds"] = args.function_id
    if args.expires_in:
        body["ttlSeconds"] = args.expires_in
    data = call(args, "POST", "/v1/keys", body)
    emit(args, data, lambda d: f"{table([d['key']], COLUMNS)}\n\nkey (shown only now): {d['value']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    emit(args, call(args, "GET", "/v1/keys"), lambda d: table(d["keys"], COLUMNS))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v1/keys/{args.key_id}")
    emit(args, {"revoked": args.key_id}, lambda _d: f"revoked key {args.key_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("key", help="create, list and revoke API keys").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = group.add_parser("create", help="create an API key (printed once)")
    add_client_arguments(p)
    p.add_argument("--scope", action="append", required=True, choices=SCOPES, help="scope (repeatable)")
    p.add_argument("--function-id", action="append", help="limit the key to this function (repeatable)")
    p.add_argument("--expires-in", type=int, metavar="SECONDS")
    p.add_argument("--description")
    p.set_defaults(func=run(_create))
    p = group.add_parser("list", help="list API keys (never their values)")
    add_client_arguments(p)
    p.set_defaults(func=run(_list))
    p = group.add_parser("revoke", help="revoke an API key")
    add_client_arguments(p)
    p.add_argument("key_id")
    p.set_defaults(func=run(_revoke))
