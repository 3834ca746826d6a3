"""Multi-turn stickiness (nvcf-api.md section 8): requests of one session go to the
same instance while it lives.

The session key is, for chat, `prompt_cache_key` (at most 256 bytes), else the
`x-multi-turn-session-id` header; for /v1/responses `prompt_cache_key`, then
`conversation.id`, then the header. Without one, the conversation's opening is the key:
a hash of the messages (or the responses `input` items) up to and including the first
user turn, the same on every later turn of that conversation. (NVCF hashes all the
messages, which changes with every turn.) The routing method decides when that applies
(`conversation_key`): `pulsar` (NVCF's cache-aware method) from the first turn, the
least-loaded methods from the second (a lone prompt still spreads: many clients send the
same one), round_robin and random never.

A pinned request that must queue waits for its own instance (the limiter's `pin`).

A session's instance is chosen by rendezvous hashing over the version's instances, so
every worker and replica picks the same one without sharing state, and remembered here
so that instances added later do not move it. Once it is gone or draining the session
moves to the next by the same hash."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import orjson

from fngate.proxy.routing.snapshot import Endpoint, VersionRoute

MAX_SESSIONS = 100_000
MAX_KEY = 256


def session_key(body: dict[str, object], header: bytes | None, responses: bool) -> str | None:
    key = body.get("prompt_cache_key")
    if isinstance(key, str) and key and len(key.encode()) <= MAX_KEY:
        return key
    if responses:
        conv = body.get("conversation")
        cid = conv.get("id") if isinstance(conv, dict) else conv
        if isinstance(cid, str) and cid:
            return cid
    if header:
        return header.decode("latin-1")[:MAX_KEY]
    return None


PREFIX_FIRST_TURN = frozenset({"pulsar"})
NO_PREFIX = frozenset({"round_robin", "random"})


def conversation_key(body: dict[str, object], responses: bool, method: str) -> str | None:
    """`mt:v1:prefix:<sha256>` of the conversation's opening, when `method` pins by it."""
    if method in NO_PREFIX:
        return None
    turns = body.get("input") if responses else body.get("messages")
    if not isinstance(turns, list) or not turns:
        return None
    opening: list[object] = []
    later = False
    for i, m in enumerate(turns):
        opening.append(m)
        if isinstance(m, dict) and m.get("role") == "user":
            later = i + 1 < len(turns)
            break
    else:
        return None
    if not later and method not in PREFIX_FIRST_TURN:
        return None
    return "mt:v1:prefix:" + hashlib.sha256(orjson.dumps(opening, option=orjson.OPT_SORT_KEYS)).hexdigest()


def weight(session: str, endpoint_id: str) -> bytes:
    return hashlib.blake2b(f"{session}\0{endpoint_id}".encode(), digest_size=8).digest()


class StickySessions:
    __slots__ = ("_pinned",)

    def __init__(self) -> None:
        self._pinned: dict[str, str] = {}  # session -> endpoint id

    def pick(self, route: VersionRoute, session: str) -> Endpoint | None:
        live = [e for e in route.endpoints if not e.draining]
        if not live:
            return None
        pinned = self._pinned.get(session)
        if pinned is not None:
            for e in live:
                if e.id == pinned:
                    return e
        chosen = max(live, key=lambda e: weight(session, e.id))
        if len(self._pinned) >= MAX_SESSIONS:
            self._pinned.clear()
        self._pinned[session] = chosen.id
        return chosen

    def narrow(self, route: VersionRoute, session: str) -> tuple[VersionRoute, str | None]:
        """`route` with only the session's instance, for the limiter to take a slot on, and
        that instance's id (the pin a queued request waits for), None when not narrowed."""
        ep = self.pick(route, session)
        if ep is None or len(route.endpoints) == 1:
            return route, None
        return replace(route, endpoints=(ep,)), ep.id
