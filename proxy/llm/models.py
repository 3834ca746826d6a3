"""`model` = `<routingKey>/<modelName>` (spec part 2, 8.2), and a function's model specs.

The key is everything before the first `/`, the rest (further slashes included) the
model name the instance sees. A key that is a UUID is lowercased; any other key is
refused later (NVCF's API requires a UUID: 400 `invalid request`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from fngate.proxy.llm.token_limits import parse_token_rates
from fngate.proxy.routing.rate_limits import Rate

MODEL_REQUIRED = "model is required"
PREFIX_REQUIRED = "model prefix is required"
KEY_REQUIRED = "routing key is required before model"
SUFFIX_REQUIRED = "model suffix is required after routing key"
OTHER_KEY = "model targets a different routing key"

_HEX = frozenset("0123456789abcdef")


def is_uuid(text: str) -> bool:
    return len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-" and _HEX.issuperset(text.replace("-", ""))


def routing_key(model: object) -> str | None:
    """The routing key of a `model` value, when it has one (auth runs only then, 8.3)."""
    if not isinstance(model, str):
        return None
    key, slash, _ = model.partition("/")
    if not slash or not key:
        return None
    low = key.lower()
    return low if is_uuid(low) else key


def split_model(model: object) -> tuple[str, str]:
    """(key, model name), or ValueError with NVCF's message."""
    if not isinstance(model, str) or not model:
        raise ValueError(MODEL_REQUIRED)
    key, slash, name = model.partition("/")
    if not slash:
        raise ValueError(PREFIX_REQUIRED)
    if not key:
        raise ValueError(KEY_REQUIRED)
    if not name:
        raise ValueError(SUFFIX_REQUIRED)
    low = key.lower()
    return (low if is_uuid(low) else key), name


def request_model(doc: dict[str, object]) -> object:
    """The `model` the request is served as: NVCF takes the routing key (and auths) on the
    body's exact `model` field, then decodes the body into a struct whose `model` field also
    takes `Model`, `MODEL`... (Go matches field names case-insensitively, the last one wins).
    This is that last value, and every case variant is dropped from `doc`, so the instance
    sees one `model`. `model` itself when it is the only one (the common case)."""
    model = doc.get("model")
    variants = [k for k in doc if k != "model" and k.lower() == "model"]
    if not variants:
        return model
    last = model
    for k in doc:
        if k.lower() == "model":
            last = doc[k]
    for k in variants:
        del doc[k]
    return last


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    uris: frozenset[str] = frozenset()  # empty: every endpoint
    token_rates: tuple[Rate, ...] = ()
    routing_method: str = ""

    def allows(self, path: str) -> bool:
        return not self.uris or path in self.uris


class ModelSpecs:
    """`VersionRoute.llm_models` texts -> {name: ModelSpec}, parsed once per distinct text."""

    __slots__ = ("_parsed",)

    def __init__(self) -> None:
        self._parsed: dict[str, Mapping[str, ModelSpec]] = {}

    def of(self, text: str) -> Mapping[str, ModelSpec]:
        if not text:
            return {}
        specs = self._parsed.get(text)
        if specs is None:
            if len(self._parsed) >= 4096:
                self._parsed.clear()
            specs = self._parsed[text] = _parse(text)
        return specs


def _parse(text: str) -> Mapping[str, ModelSpec]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    out = {}
    for m in doc if isinstance(doc, list) else ():
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            continue
        cfg = m.get("llmConfig")
        cfg = cfg if isinstance(cfg, dict) else {}
        uris = cfg.get("uris")
        uris = uris if isinstance(uris, list) else []
        try:
            rates = parse_token_rates(cfg["tokenRateLimit"]) if cfg.get("tokenRateLimit") else ()
        except ValueError:  # the management API refuses these; a bad one is not enforced
            rates = ()
        out[m["name"]] = ModelSpec(m["name"], frozenset(str(u) for u in uris), rates, str(cfg.get("routingMethod") or "").strip().lower())
    return out
