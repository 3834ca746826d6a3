"""The routing snapshot: everything the gateway needs to serve a request, immutable.

The control plane builds a RoutingTable (functions, versions, ready endpoints, API
key grants) and publishes it; each gateway process holds the newest one in a
SnapshotHolder and reads it with a plain attribute access. Nothing here does I/O.

The other direction, gateway -> control plane, is a LoadReport: per-version queue
depth, in-flight and busy slot-seconds, cold-start demand and queued request ids,
which the autoscaler and the queue endpoints read. It is sent out of band on a
timer, never from the request path.

Both travel as JSON (orjson) when gateway and control plane are separate processes.
A gateway that holds the table a new one was built after gets only the changes (a
delta: the functions and keys that differ), so a publish costs it the changed part,
not the whole table: decoding 100k functions takes the better part of a second of
its event loop, a one-function delta well under a millisecond (RoutingWire).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from operator import attrgetter, itemgetter
from typing import Any

import orjson

# Redis, when the store is Redis: the control plane SETs the newest table's JSON at
# ROUTING_KEY, with its version and delta beside it, and PUBLISHes the version on ROUTING_CHANNEL; each gateway SETs its
# LoadReport at LOAD_PREFIX + gateway id, with an expiry of LOAD_REPORT_TTL seconds.
ROUTING_KEY = "fngate:routing"
ROUTING_VERSION_KEY = "fngate:routing:version"  # the version of the table at ROUTING_KEY
ROUTING_DELTA_KEY = "fngate:routing:delta"  # the changes from the table before it (RoutingWire.delta)
ROUTING_CHANNEL = "fngate:routing:changed"
LOAD_PREFIX = "fngate:load:"
LOAD_REPORT_TTL = 10

INVOKABLE_STATES = frozenset({"ACTIVE", "DEGRADING"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready instance. `id` is stable for the instance's life and keys live counters."""

    id: str
    host: str
    port: int
    draining: bool = False  # graceful undeploy: finish in-flight work, take no new requests


@dataclass(frozen=True, slots=True)
class VersionRoute:
    function_id: str
    version_id: str
    name: str
    status: str  # lifecycle state (control.states.State value)
    nca_id: str = "fngate"
    inference_url: str = "/"
    inference_port: int = 8000
    grpc: bool = False  # the function is a gRPC function (inferenceUrl "/grpc")
    max_concurrency: int = 1  # per instance (maxRequestConcurrency)
    queue_limit: int = 100_000  # bounded per-version FIFO
    instance_type: str = ""
    gpu: str = ""
    backend: str = ""
    region: str = "local"
    env: str = "fngate"
    endpoints: tuple[Endpoint, ...] = ()
    # NCA ids this version is shared with (function- and version-level lists; "*": public)
    authorized: frozenset[str] = frozenset()
    # the version's `rateLimit` object as JSON text ("" when none), read by proxy/routing/rate_limits.py
    rate_limit: str = ""
    # NVCF's `functionType` ("DEFAULT", "STREAMING", "LLM"), and for LLM functions the
    # `models` list ([{name, llmConfig}]) as JSON text ("" when none), read by proxy/llm/.
    # Last, and left out of the wire form while they hold their defaults: a table without
    # them (an older publisher's) decodes to the defaults, and a gateway that does not know
    # them still reads every route of a function that is not an LLM.
    function_type: str = "DEFAULT"
    llm_models: str = ""

    @property
    def invokable(self) -> bool:
        return self.status in INVOKABLE_STATES


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What one API key may do. Looked up by the sha256 hex digest of the key.

    Function access follows the key's NVCF resources (control.authorizations):
    `function_ids` None is `account-functions:*` (every function of the key's account),
    else the `<fid>/*` entries; `version_ids` the `<fid>/<vid>` entries; `shared` is
    `authorized-functions:*`. `any_account`: the admin key."""

    key_id: str
    scopes: frozenset[str]
    function_ids: frozenset[str] | None = None
    expires_at: float | None = None  # unix seconds
    nca_id: str = "fngate"
    subject: str = ""
    version_ids: frozenset[str] = frozenset()
    shared: bool = True
    any_account: bool = False

    def allows(self, scope: str, function_id: str | None, now: float) -> bool:
        """Scope, expiry and the key's own-account function entries (no sharing)."""
        if self.expires_at is not None and now >= self.expires_at:
            return False
        if scope not in self.scopes:
            return False
        return function_id is None or self.function_ids is None or function_id in self.function_ids

    def names(self, function_id: str, version_id: str | None) -> bool:
        """A `function` resource entry covers this function (or this pinned version)."""
        if self.function_ids is not None and function_id in self.function_ids:
            return True
        return version_id is not None and bool(self.version_ids) and f"{function_id}/{version_id}" in self.version_ids


def key_digest(key: str | bytes) -> str:
    """The form in which keys are stored and published: never the key itself."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


@dataclass(frozen=True, slots=True)
class RoutingTable:
    version: int
    # function id -> version id -> route, for every known version in any state
    functions: Mapping[str, Mapping[str, VersionRoute]] = field(default_factory=dict)
    keys: Mapping[str, KeyGrant] = field(default_factory=dict)  # key digest -> grant
    # function id -> the invokable versions (ACTIVE/DEGRADING); derived in build()
    invokable: Mapping[str, tuple[VersionRoute, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, version: int, routes: list[VersionRoute], keys: list[tuple[str, KeyGrant]]) -> RoutingTable:
        functions: dict[str, dict[str, VersionRoute]] = {}
        invokable: dict[str, tuple[VersionRoute, ...]] = {}
        replaced = []  # functions where a later route replaced an earlier one of the same version
        for r in routes:  # one pass: both indexes at once (a snapshot may hold 100k routes)
            fid = r.function_id
            versions = functions.get(fid)
            if versions is None:
                functions[fid] = {r.version_id: r}
                invokable[fid] = (r,) if r.status in INVOKABLE_STATES else ()
                continue
            if r.version_id in versions:
                replaced.append(fid)
            versions[r.version_id] = r
            if r.status in INVOKABLE_STATES:
                invokable[fid] += (r,)
        for fid in replaced:
            invokable[fid] = tuple(r for r in functions[fid].values() if r.invokable)
        return cls(version, functions, dict(keys), invokable)

    # -- wire form ---------------------------------------------------------------------
    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": self.version,
                "routes": [_route_to_dict(r) for versions in self.functions.values() for r in versions.values()],
                "keys": [[digest, _grant_to_dict(g)] for digest, g in self.keys.items()],
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> RoutingTable:
        with _no_gc_pauses():
            doc = orjson.loads(data)
            routes = [_route_from_dict(d) for d in doc["routes"]]
            keys = [(digest, _grant_from_dict(g)) for digest, g in doc["keys"]]
            return cls.build(int(doc["version"]), routes, keys)

    # -- deltas ------------------------------------------------------------------------
    def delta_json(self, new: RoutingTable) -> bytes:
        """The changes from this table to `new`, in wire form (`apply_json` reads it): every
        version of each function that differs, the functions and keys that went away."""
        old_functions, old_keys = self.functions, self.keys
        routes = [
            _route_to_dict(r) for fid, versions in new.functions.items() if old_functions.get(fid) != versions for r in versions.values()
        ]
        return orjson.dumps(
            {
                "base": self.version,
                "version": new.version,
                "routes": routes,
                "gone": [fid for fid in old_functions if fid not in new.functions],
                "keys": [[digest, _grant_to_dict(g)] for digest, g in new.keys.items() if old_keys.get(digest) != g],
                "gone_keys": [digest for digest in old_keys if digest not in new.keys],
            }
        )

    def apply_json(self, data: bytes | str) -> RoutingTable | None:
        """The table a published message describes: a whole table, or a delta from this
        one (this table itself when the delta is not newer than it). None for a delta
        from another table: the caller reads the whole table instead."""
        with _no_gc_pauses():
            doc = orjson.loads(data)
            if "base" not in doc:
                routes = [_route_from_dict(d) for d in doc["routes"]]
                return RoutingTable.build(int(doc["version"]), routes, [(digest, _grant_from_dict(g)) for digest, g in doc["keys"]])
            if int(doc["version"]) <= self.version:
                return self  # nothing newer than what this table is
            if doc["base"] != self.version:
                return None
            changed = RoutingTable.build(int(doc["version"]), [_route_from_dict(d) for d in doc["routes"]], [])
            functions, invokable, keys = dict(self.functions), dict(self.invokable), dict(self.keys)
            for fid in doc["gone"]:
                functions.pop(fid, None)
                invokable.pop(fid, None)
            functions.update(changed.functions)
            invokable.update(changed.invokable)
            for digest in doc["gone_keys"]:
                keys.pop(digest, None)
            keys.update((digest, _grant_from_dict(g)) for digest, g in doc["keys"])
            return RoutingTable(changed.version, functions, keys, invokable)


EMPTY_TABLE = RoutingTable(0)


# -- wire codec ------------------------------------------------------------------------------
# A gateway decodes every published snapshot on its event loop, so this is written for
# speed: values are read and written with C getters, and objects are built through
# `_fill_twin` rather than the frozen dataclasses' __init__.


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Decoding allocates an object or more per route and creates no reference cycles;
    left on, the cyclic collector would run many passes over the growing (and the live)
    table meanwhile, which doubles the time for large tables."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _fill_twin(cls: type) -> type:
    """A mutable dataclass with the fields, defaults and slot layout of frozen dataclass `cls`.

    The decoder builds one of these (plain slot stores) and relabels it as `cls` by
    assigning `__class__`, which CPython allows between classes of the same layout. A
    frozen __init__ stores each field through object.__setattr__ and costs about five
    times as much; the result is the same object either way."""
    spec = [(f.name, f.type, field(default=f.default)) if f.default is not MISSING else (f.name, f.type) for f in fields(cls)]
    return make_dataclass(f"_{cls.__name__}Fill", spec, slots=True, eq=False, repr=False, match_args=False)


_OPTIONAL_ROUTE_FIELDS = ("function_type", "llm_models")  # on the wire only when not the default
_ROUTE_FIELDS = tuple(f.name for f in fields(VersionRoute) if f.name not in _OPTIONAL_ROUTE_FIELDS)
_ENDPOINT_FIELDS = tuple(f.name for f in fields(Endpoint))
_endpoint_values = attrgetter(*_ENDPOINT_FIELDS)
_route_items = itemgetter(*_ROUTE_FIELDS)  # raises KeyError when a field is left out
_RouteFill = _fill_twin(VersionRoute)
_EndpointFill = _fill_twin(Endpoint)
_GrantFill = _fill_twin(KeyGrant)


def _route_to_dict(r: VersionRoute) -> dict[str, Any]:
    # spelled out: a dict display is twice as fast as building it from the field names
    return {
        "function_id": r.function_id,
        "version_id": r.version_id,
        "name": r.name,
        "status": r.status,
        "nca_id": r.nca_id,
        "inference_url": r.inference_url,
        "inference_port": r.inference_port,
        "grpc": r.grpc,
        "max_concurrency": r.max_concurrency,
        "queue_limit": r.queue_limit,
        "instance_type": r.instance_type,
        "gpu": r.gpu,
        "backend": r.backend,
        "region": r.region,
        "env": r.env,
        "endpoints": [_endpoint_values(e) for e in r.endpoints],
        "authorized": sorted(r.authorized),
        "rate_limit": r.rate_limit,
        **_optional_route_fields(r),
    }


def _optional_route_fields(r: VersionRoute) -> dict[str, Any]:
    if r.function_type == "DEFAULT" and not r.llm_models:
        return {}
    return {"function_type": r.function_type, "llm_models": r.llm_models}


def _endpoint_from_list(values: list[Any]) -> Endpoint:
    e: Endpoint = _EndpointFill(*values)
    e.__class__ = Endpoint
    return e


def _route_from_dict(d: dict[str, Any]) -> VersionRoute:
    try:
        values = _route_items(d)
    except KeyError:  # fields left out take their defaults; keyword construction sorts that out
        return _route_from_partial_dict(d)
    optional = len(d) - len(values)
    if optional and not (optional == len(_OPTIONAL_ROUTE_FIELDS) and all(k in d for k in _OPTIONAL_ROUTE_FIELDS)):
        return _route_from_partial_dict(d)  # a field this version does not know: let __init__ reject it
    r = _RouteFill(*values)  # the optional fields, last, take their defaults
    r.endpoints = tuple([_endpoint_from_list(e) for e in r.endpoints])
    r.authorized = frozenset(r.authorized)
    if optional:
        r.function_type = d["function_type"]
        r.llm_models = d["llm_models"]
    r.__class__ = VersionRoute
    route: VersionRoute = r
    return route


def _route_from_partial_dict(d: dict[str, Any]) -> VersionRoute:
    d = dict(d)
    d["endpoints"] = tuple(Endpoint(*e) for e in d.get("endpoints", ()))
    d["authorized"] = frozenset(d.get("authorized", ()))
    return VersionRoute(**d)


def _grant_to_dict(g: KeyGrant) -> dict[str, Any]:
    return {
        "key_id": g.key_id,
        "scopes": sorted(g.scopes),
        "function_ids": None if g.function_ids is None else sorted(g.function_ids),
        "expires_at": g.expires_at,
        "nca_id": g.nca_id,
        "subject": g.subject,
        "version_ids": sorted(g.version_ids),
        "shared": g.shared,
        "any_account": g.any_account,
    }


def _grant_from_dict(d: dict[str, Any]) -> KeyGrant:
    fids = d.get("function_ids")
    g = _GrantFill(
        d["key_id"],
        frozenset(d["scopes"]),
        None if fids is None else frozenset(fids),
        d.get("expires_at"),
        d.get("nca_id", "fngate"),
        d.get("subject", ""),
        frozenset(d.get("version_ids", ())),
        d.get("shared", True),
        d.get("any_account", False),
    )
    g.__class__ = KeyGrant
    grant: KeyGrant = g
    return grant


class SnapshotHolder:
    """Holds the newest RoutingTable. One writer (the source task), many readers.

    Readers use `holder.table` directly: replacing a reference is atomic on one event
    loop, so there is no lock. `publish` ignores anything not newer than what it has.
    """

    __slots__ = ("_newer", "refresh", "table")

    def __init__(self, table: RoutingTable = EMPTY_TABLE) -> None:
        self.table = table
        self._newer: asyncio.Event | None = None
        # set by a source in another process than the publisher: fetch the newest table
        # now, on a miss (proxy/routing/refresh.py); None when publishes arrive in-process
        self.refresh: Callable[[], Awaitable[None]] | None = None

    def publish(self, table: RoutingTable) -> bool:
        if table.version <= self.table.version:
            return False
        self.table = table
        if self._newer is not None:
            self._newer.set()
            self._newer = None
        return True

    async def wait_newer_than(self, version: int, timeout: float | None) -> RoutingTable:
        """Wait until a table newer than `version` is published (or the timeout passes);
        returns the current table either way."""
        if self.table.version > version:
            return self.table
        if self._newer is None:
            self._newer = asyncio.Event()
        try:
            await asyncio.wait_for(self._newer.wait(), timeout)
        except TimeoutError:
            pass
        return self.table


class RoutingWire:
    """The wire forms of the newest published table, each encoded at most once per
    publish however many gateways ask: the whole table, and the delta from the table
    published before it (what a gateway that holds that one needs)."""

    __slots__ = ("_delta", "_full", "_previous", "table")

    def __init__(self) -> None:
        self.table = EMPTY_TABLE
        self._previous: RoutingTable | None = None
        self._full: bytes | None = None
        self._delta: bytes | None = None

    def publish(self, table: RoutingTable) -> bool:
        if table.version <= self.table.version:
            return False
        self._previous, self.table = self.table, table
        self._full = self._delta = None
        return True

    def full(self) -> bytes:
        if self._full is None:
            self._full = self.table.to_json()
        return self._full

    def delta(self) -> bytes | None:
        """The changes from the table published before, None when there was none."""
        previous = self._previous
        if previous is None or not previous.version:
            return None
        if self._delta is None:
            self._delta = previous.delta_json(self.table)
        return self._delta

    def since(self, version: int) -> bytes:
        """What a gateway holding table `version` needs: the delta when it holds the
        previous table, else the whole table."""
        previous = self._previous
        if previous is not None and previous.version == version:
            delta = self.delta()
            if delta is not None:
                return delta
        return self.full()


# -- gateway -> control plane -------------------------------------------------------------


@dataclass(slots=True)
class VersionLoad:
    queue_depth: int = 0  # requests waiting for a slot right now
    in_flight: int = 0  # requests holding an instance slot right now
    busy_seconds: float = 0.0  # cumulative slot-seconds held (a counter)
    requests: int = 0  # cumulative requests that reached an instance (a counter)
    cold_waiting: int = 0  # requests waiting because no instance is ready
    last_request_at: float = 0.0  # unix seconds of the newest invocation
    queued_ids: list[str] = field(default_factory=list)  # oldest first, at most 1000
    # optional: endpoint id -> requests holding a slot on it, so a draining instance is
    # stopped only once it is idle (absent: the control plane falls back to in_flight)
    endpoint_in_flight: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class LoadReport:
    gateway_id: str  # one per gateway process
    at: float  # unix seconds when taken
    versions: dict[str, VersionLoad] = field(default_factory=dict)  # version id -> load

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "gateway_id": self.gateway_id,
                "at": self.at,
                "versions": {vid: {n: getattr(v, n) for n in VersionLoad.__slots__} for vid, v in self.versions.items()},
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> LoadReport:
        doc = orjson.loads(data)
        return cls(doc["gateway_id"], doc["at"], {vid: VersionLoad(**v) for vid, v in doc["versions"].items()})
