"""`fngate key create|list|get|update|revoke`: /v1/keys with NVCF's request shapes."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from ..authorizations import ACCOUNT_FUNCTIONS, AUTHORIZED_FUNCTIONS, FUNCTION, NVCF_SERVICE_ID, PRODUCT
from ..keys import SCOPES
from .client import add_client_arguments, call, emit, run, table

COLUMNS = [
    ("ID", "id"),
    ("DESCRIPTION", "description"),
    ("STATUS", "status"),
    ("VALUE", "value"),
    ("EXPIRES", "expires_at"),
]
DEFAULT_OWNER = "fngate-cli"
DEFAULT_TTL = 30 * 24 * 3600


def _headers(args: argparse.Namespace) -> dict[str, str]:
    return {"Key-Owner-Id": args.owner, "Key-Issuer-Id": NVCF_SERVICE_ID, "Key-Issuer-Service": "nvcf-api"}


def _authorizations(args: argparse.Namespace) -> dict[str, Any]:
    """One policy for NVCF: the scopes, and either every function of the account (and the
    ones shared with it) or the named functions (`FID`, or `FID/VID` for one version)."""
    if args.function_id:
        resources = [{"id": f if "/" in f else f + "/*", "type": FUNCTION} for f in args.function_id]
    else:
        resources = [{"id": "*", "type": ACCOUNT_FUNCTIONS}, {"id": "*", "type": AUTHORIZED_FUNCTIONS}]
    policy = {"aud": NVCF_SERVICE_ID, "auds": [NVCF_SERVICE_ID], "product": PRODUCT, "resources": resources, "scopes": args.scope}
    return {"policies": [policy]}


def _one(d: dict[str, Any]) -> str:
    policies = (d.get("authorizations") or {}).get("policies", [])
    scopes = sorted({s for p in policies for s in p.get("scopes", [])})
    resources = [f"{r.get('type')}:{r.get('id')}" for p in policies for r in p.get("resources", [])]
    return f"{table([d], COLUMNS)}\nscopes: {','.join(scopes) or '-'}\nresources: {','.join(resources) or '-'}"


def _create(args: argparse.Namespace) -> int:
    expires = datetime.now(UTC) + timedelta(seconds=args.expires_in)
    body = {
        "description": args.description,
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "authorizations": _authorizations(args),
    }
    data = call(args, "POST", "/v1/keys", body, headers=_headers(args))
    emit(args, data, lambda d: f"{_one(d)}\n\nkey (shown only now): {d['value']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    emit(args, call(args, "GET", "/v1/keys", headers=_headers(args)), lambda d: table(d["keys"], COLUMNS))
    return 0


def _get(args: argparse.Namespace) -> int:
    emit(args, call(args, "GET", f"/v1/keys/{args.key_id}", headers=_headers(args)), _one)
    return 0


def _update(args: argparse.Namespace) -> int:
    body = {"authorizations": _authorizations(args)}
    emit(args, call(args, "PUT", f"/v1/keys/{args.key_id}/authorizations", body, headers=_headers(args)), _one)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v1/keys/{args.key_id}", headers=_headers(args))
    emit(args, {"revoked": args.key_id}, lambda _d: f"revoked key {args.key_id}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument(
        "--owner",
        default=os.environ.get("FNGATE_KEY_OWNER", DEFAULT_OWNER),
        help="Key-Owner-Id: whose keys (env FNGATE_KEY_OWNER; default %(default)s)",
    )


def _grant_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scope", action="append", required=True, choices=SCOPES, help="scope (repeatable)")
    p.add_argument(
        "--function-id", action="append", metavar="FID[/VID]", help="limit the key to this function or version (repeatable; default: all)"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("key", help="create, list, get, update and revoke API keys").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = group.add_parser("create", help="create an API key (printed once)")
    _common(p)
    _grant_arguments(p)
    p.add_argument("--expires-in", type=int, default=DEFAULT_TTL, metavar="SECONDS", help="default 30 days; at most 365 days")
    p.add_argument("--description", default="fngate key", help="1-64 letters, digits, spaces, _ or -")
    p.set_defaults(func=run(_create))
    p = group.add_parser("list", help="list the owner's API keys (masked)")
    _common(p)
    p.set_defaults(func=run(_list))
    p = group.add_parser("get", help="show one API key (masked) with its authorizations")
    _common(p)
    p.add_argument("key_id")
    p.set_defaults(func=run(_get))
    p = group.add_parser("update", help="replace a key's scopes and functions")
    _common(p)
    p.add_argument("key_id")
    _grant_arguments(p)
    p.set_defaults(func=run(_update))
    p = group.add_parser("revoke", help="delete an API key")
    _common(p)
    p.add_argument("key_id")
    p.set_defaults(func=run(_revoke))
