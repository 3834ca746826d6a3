"""A function's `models` and their `llmConfig` (spec 4.2, part 2 section 8), NVCF's rules and messages.

NVCF checks these in the create request's converter (CreateFunctionRequest), in its
LlmConfigValidator and, for versions and updates, in FunctionLlmService; the messages
below are theirs, word for word, so an NVCF client sees the same 400s. What is stored is
the normalised model: unknown fields dropped (NVCF's Jackson ignores them), `llmConfig`
kept only when it says something, values as given (routingMethod is matched in any case
and with `_` or `-`, as the router does, but stored as sent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import BadRequest, NotFound, invalid

LLM = "LLM"
# the request router's algorithms (NVCF's LlmConfigValidator: "keep in sync"); blank = router default
ROUTING_METHODS = (
    "power-of-two",
    "wait-and-widen",
    "round-robin",
    "random",
    "pulsar",
    "pulsar-wait-and-widen",
    "groq-multiregion",
    "pulsar-multiregion",
)
TOKEN_RATE_RE = re.compile(r"^(?!.*-([SMHDW]).*-\1)[1-9]\d*-[SMHDW](,\s*[1-9]\d*-[SMHDW])*$")
LLM_CONFIG_FIELDS = ("uris", "tokenRateLimit", "tokenizer", "routingMethod")

MISSING_LLM_MODELS = "Invalid request: 'models' must be specified when functionType is LLM"
MISSING_LLM_CONFIG = "Invalid request: LLM function models must specify 'llmConfig'"
MISSING_LLM_URIS = "Invalid request: LLM function models must specify non-empty 'llmConfig.uris'"
DUPLICATE_MODELS = "Invalid request: duplicate model names are not allowed in 'models'"
NON_LLM_VERSION_URI = "Invalid request: non-LLM function models must specify both 'version' and 'uri'"
NOT_LLM_INVOCATION_CONFIG = "Only LLM functions support llmInvocationConfig"
UPDATE_CONFIG_REQUIRED = "Invalid request: at least one of 'tokenRateLimit' or 'routingMethod' must be specified"
DUPLICATE_UPDATES = "Invalid request: duplicate model names are not allowed in 'modelUpdates'"


def bad_routing_method(model: str) -> BadRequest:
    return BadRequest(
        f"Invalid request: 'llmConfig.routingMethod' for model '{model}' is invalid; supported values are [{', '.join(ROUTING_METHODS)}]"
    )


def bad_token_rate_limit(model: str) -> BadRequest:
    return BadRequest(
        f"Invalid request: 'llmConfig.tokenRateLimit' for model '{model}' is invalid; expected comma-separated "
        "'<positiveInteger>-<unit>' entries with unit in [S, M, H, D, W] (for example '100000-S' or '10-M,5-S')"
    )


def check_routing_method(model: str, value: str | None) -> None:
    if value is None or not value.strip():
        return
    if value.strip().lower().replace("_", "-") not in ROUTING_METHODS:
        raise bad_routing_method(model)


def check_token_rate_limit(model: str, value: str | None) -> None:
    if value is None or not value.strip():
        return
    if not TOKEN_RATE_RE.match(value):
        raise bad_token_rate_limit(model)


def _optional_text(cfg: Mapping[str, Any], field: str, where: str) -> str | None:
    value = cfg.get(field)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{where}.{field}", "must be a string")
    return value


def _llm_config(raw: Any, where: str) -> dict[str, Any] | None:
    """The typed llmConfig object (fields NVCF knows, nulls left out); None when absent or empty."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid(where, "must be an object")
    cfg: dict[str, Any] = {}
    uris = raw.get("uris")
    if uris is not None:
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise invalid(f"{where}.uris", "must be an array of strings")
        cfg["uris"] = list(uris)
    for field in LLM_CONFIG_FIELDS[1:]:
        value = _optional_text(raw, field, where)
        if value is not None:
            cfg[field] = value
    # NVCF's hasContent(): an llmConfig with nothing in it is not kept
    return cfg if cfg.get("uris") or any(f in cfg for f in LLM_CONFIG_FIELDS[1:]) else None


def validate_models(body: Mapping[str, Any], function_type: str | None) -> list[dict[str, Any]] | None:
    """`models` of a CreateFunctionRequest, in NVCF's order: names unique, then each model's
    fields (llmConfig and its uris for LLM functions, version and uri otherwise)."""
    models = body.get("models")
    if models is None:
        return None
    if not isinstance(models, list):
        raise invalid("models", "must be an array")
    names: set[str] = set()
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise invalid(f"models[{i}].name", "must not be null")
        if m["name"] in names:
            raise BadRequest(DUPLICATE_MODELS)
        names.add(m["name"])
    out = []
    for i, m in enumerate(models):
        where = f"models[{i}]"
        for field in ("version", "uri"):
            if m.get(field) is not None and not isinstance(m[field], str):
                raise invalid(f"{where}.{field}", "must be a string")
        cfg = _llm_config(m.get("llmConfig"), f"{where}.llmConfig")
        if function_type == LLM:
            if m.get("llmConfig") is None:
                raise BadRequest(MISSING_LLM_CONFIG)
            if not (cfg or {}).get("uris"):
                raise BadRequest(MISSING_LLM_URIS)
            check_routing_method(m["name"], cfg.get("routingMethod") if cfg else None)
            check_token_rate_limit(m["name"], cfg.get("tokenRateLimit") if cfg else None)
        elif m.get("version") is None or m.get("uri") is None:
            raise BadRequest(NON_LLM_VERSION_URI)
        elif m.get("llmConfig") is not None and not (cfg or {}).get("uris"):
            raise invalid(f"{where}.llmConfig.uris", "must not be empty")  # the DTO's @NotEmpty
        model = {k: m[k] for k in ("name", "version", "uri") if m.get(k) is not None}
        if cfg is not None:
            model["llmConfig"] = cfg
        out.append(model)
    return out


def validate_model_updates(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """`modelUpdates` of an UpdateFunctionRequest: NVCF's request-level rules (names given and
    unique, each with tokenRateLimit or routingMethod); the values are checked per model when
    applied (apply_model_updates), as NVCF does."""
    updates = body.get("modelUpdates")
    if updates is None:
        return None
    if not isinstance(updates, list):
        raise invalid("modelUpdates", "must be an array")
    names: set[str] = set()
    out = []
    for i, mu in enumerate(updates):
        if not isinstance(mu, dict) or not isinstance(mu.get("modelName"), str) or not mu["modelName"].strip():
            raise invalid(f"modelUpdates[{i}].modelName", "must not be blank")
        if mu["modelName"] in names:
            raise BadRequest(DUPLICATE_UPDATES)
        names.add(mu["modelName"])
    for i, mu in enumerate(updates):
        raw = mu.get("llmConfig")
        if raw is not None and not isinstance(raw, dict):
            raise invalid(f"modelUpdates[{i}].llmConfig", "must be an object")
        cfg = {f: v for f in ("tokenRateLimit", "routingMethod") if (v := _optional_text(raw or {}, f, f"modelUpdates[{i}].llmConfig"))}
        if raw is None or not any(raw.get(f) is not None for f in ("tokenRateLimit", "routingMethod")):
            raise BadRequest(UPDATE_CONFIG_REQUIRED)
        out.append({"modelName": mu["modelName"], "llmConfig": cfg})
    return out


def apply_model_updates(doc: Mapping[str, Any], updates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The version's models with the updates merged into their llmConfig (NVCF's updateModels):
    only an LLM version takes them, each named model must exist and have an llmConfig."""
    fid, vid = doc["id"], doc["versionId"]
    if doc.get("functionType") != LLM:
        raise BadRequest(f"Function id '{fid}', version '{vid}': Only LLM functions support model config updates")
    models = [dict(m) for m in doc.get("models") or ()]
    by_name = {m["name"]: m for m in models}
    for mu in updates:
        name = mu["modelName"]
        model = by_name.get(name)
        if model is None:
            raise NotFound(f"Function id '{fid}', version '{vid}': Model '{name}' not found")
        if not model.get("llmConfig"):
            raise BadRequest(f"Function id '{fid}', version '{vid}': Model '{name}' does not have existing llmConfig")
        change = mu["llmConfig"]
        check_token_rate_limit(name, change.get("tokenRateLimit"))
        check_routing_method(name, change.get("routingMethod"))
        model["llmConfig"] = {**model["llmConfig"], **change}
    return models


def overrides_of(models: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Per model name, the tokenRateLimit/routingMethod it sets: what NVCF propagates to the
    function's other versions so that one function id has one source of truth."""
    out = {}
    for m in models:
        cfg = m.get("llmConfig") or {}
        change = {f: cfg[f] for f in ("tokenRateLimit", "routingMethod") if cfg.get(f) is not None}
        if change:
            out[m["name"]] = change
    return out


def with_overrides(models: Sequence[Mapping[str, Any]], overrides: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """`models` with the overrides applied to the llmConfig of the models they name (models
    without an llmConfig are left as they are)."""
    out = []
    for m in models:
        m = dict(m)
        change = overrides.get(m["name"])
        if change and m.get("llmConfig"):
            m["llmConfig"] = {**m["llmConfig"], **change}
        out.append(m)
    return out


def check_new_version(fid: str, new: Mapping[str, Any], siblings: Sequence[Mapping[str, Any]]) -> None:
    """A new version of an existing function (NVCF's registerFunction): when it or any existing
    version is LLM, all share one functionType; an LLM version's models keep the uris and
    tokenizer the existing versions have for the same model name."""
    new_type = new.get("functionType") or "DEFAULT"
    if new_type == LLM or any(s.get("functionType") == LLM for s in siblings):
        for s in siblings:
            sibling_type = s.get("functionType") or "DEFAULT"
            if sibling_type != new_type:
                raise BadRequest(
                    f"Function id '{fid}': all versions must share the same functionType; existing version '{s['versionId']}' is '{sibling_type}'"
                )
    if new_type != LLM:
        return
    requested = {m["name"]: m.get("llmConfig") for m in new.get("models") or ()}
    for s in siblings:
        for m in s.get("models") or ():
            mine, theirs = requested.get(m["name"]), m.get("llmConfig")
            if mine is None or theirs is None:
                continue
            for field in ("uris", "tokenizer"):
                if mine.get(field) != theirs.get(field):
                    raise BadRequest(
                        f"Function id '{fid}', version '{s['versionId']}': 'llmConfig.{field}' for model '{m['name']}' must match existing versions"
                    )
