"""Request validation per spec 4.2 (functions) and 4.4 (deployments).

Each check raises BadRequest naming the field (`invalid(field, message)`); the
validated, normalised values are returned so handlers store exactly what passed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, overload

from .errors import BadRequest, invalid
from .llm_models import MISSING_LLM_MODELS, NOT_LLM_INVOCATION_CONFIG, validate_model_updates, validate_models
from .secret_rules import check_secret

NAME_RE = re.compile(r"^[a-z0-9A-Z][a-z0-9A-Z\-_]*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9\-_:=]+$")
RATE_RE = re.compile(r"^(?!.*-([SMHD]).*-\1)[1-9]\d*-[SMHD](,\s*[1-9]\d*-[SMHD])*$")
DURATION_RE = re.compile(r"^PT(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?$")

FUNCTION_TYPES = ("DEFAULT", "STREAMING", "LLM")
BODY_FORMATS = ("CUSTOM", "PREDICT_V2")
HEALTH_PROTOCOLS = ("HTTP", "gRPC")
DEFAULT_HEALTH_URI = "/v2/health/ready"
UPDATABLE = ("tags", "rateLimit", "llmInvocationConfig", "modelUpdates")
FUNCTION_UPDATE_REQUIRED = (
    "Invalid request: at least one of 'tags', 'rateLimit', 'modelUpdates', or 'llmInvocationConfig' must be specified"
)


def _name(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


@overload
def string_field(
    body: dict[str, Any], field: str, *, required: Literal[True], max_len: int | None = None, nonblank: bool = True, where: str = ""
) -> str: ...
@overload
def string_field(
    body: dict[str, Any], field: str, *, required: bool = False, max_len: int | None = None, nonblank: bool = True, where: str = ""
) -> str | None: ...
def string_field(
    body: dict[str, Any], field: str, *, required: bool = False, max_len: int | None = None, nonblank: bool = True, where: str = ""
) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise invalid(_name(where, field), "is required")
        return None
    if not isinstance(value, str):
        raise invalid(_name(where, field), "must be a string")
    if nonblank and not value.strip():
        raise invalid(_name(where, field), "must not be blank")
    if max_len is not None and len(value) > max_len:
        raise invalid(_name(where, field), f"must be at most {max_len} characters")
    return value


def int_field(
    body: dict[str, Any], field: str, *, required: bool = False, lo: int | None = None, hi: int | None = None, where: str = ""
) -> int | None:
    value = body.get(field)
    if value is None:
        if required:
            raise invalid(_name(where, field), "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(_name(where, field), "must be an integer")
    if lo is not None and value < lo:
        raise invalid(_name(where, field), f"must be at least {lo}")
    if hi is not None and value > hi:
        raise invalid(_name(where, field), f"must be at most {hi}")
    return value


def enum_field(body: dict[str, Any], field: str, allowed: Iterable[str], default: str | None = None, where: str = "") -> str | None:
    """Any case is accepted (NVCF's Jackson: ACCEPT_CASE_INSENSITIVE_ENUMS); the enum's own
    spelling is stored."""
    names = tuple(allowed)
    value = body.get(field, default)
    if value is None:
        return None
    canonical = {n.lower(): n for n in names}.get(value.lower()) if isinstance(value, str) else None
    if canonical is None:
        raise invalid(_name(where, field), f"must be one of {', '.join(names)}")
    return canonical


def list_field(body: dict[str, Any], field: str, where: str = "") -> list[Any] | None:
    value = body.get(field)
    if value is not None and not isinstance(value, list):
        raise invalid(_name(where, field), "must be an array")
    return value


def object_field(body: dict[str, Any], field: str, where: str = "") -> dict[str, Any] | None:
    value = body.get(field)
    if value is not None and not isinstance(value, dict):
        raise invalid(_name(where, field), "must be an object")
    return value


def strings_field(body: dict[str, Any], field: str, where: str = "") -> list[str] | None:
    items = list_field(body, field, where)
    if items is not None and not all(isinstance(s, str) for s in items):
        raise invalid(_name(where, field), "must be an array of strings")
    return items


def validate_tags(body: dict[str, Any]) -> list[str] | None:
    tags = strings_field(body, "tags")
    if tags is None:
        return None
    if len(tags) > 64:
        raise invalid("tags", "must hold at most 64 tags")
    for t in tags:
        if len(t) > 128 or not TAG_RE.match(t):
            raise invalid("tags", f"value '{t}' must match [a-zA-Z0-9-_:=]+ and be at most 128 characters")
    return list(dict.fromkeys(tags))  # a set, in the order given


RATE_LIMIT_RULE = (
    "Either global rateLimit, perNcaIdRate, or perUserRate must be non-null, per-ncaid rates ncaids cannot be in "
    "exemptedNcaIds, and exemptedNcaIds can only exist when global rateLimit is provided"
)


def _rate(value: Any, field: str) -> str:
    if not isinstance(value, str) or not RATE_RE.match(value):
        raise invalid(field, f"must match {RATE_RE.pattern}, e.g. '10-S,500-M' (count >= 1, units S/M/H/D, none twice)")
    return value


def validate_rate_limit(body: dict[str, Any]) -> dict[str, Any] | None:
    """RateLimitDto (spec part 2, 2.1), NVCF's rules and messages."""
    rl = object_field(body, "rateLimit")
    if rl is None:
        return None
    out: dict[str, Any] = {}
    for field in ("rateLimit", "perUserRate"):
        if rl.get(field) is not None:
            out[field] = _rate(rl[field], f"rateLimit.{field}")
    per_nca = rl.get("perNcaIdRate")
    if per_nca is not None:
        if not isinstance(per_nca, dict):
            raise invalid("rateLimit.perNcaIdRate", "must be an object of NCA id -> rate")
        if len(per_nca) > 32:
            raise invalid("rateLimit.perNcaIdRate", "Maximum number of per nca id config of 32 is exceeded")
        out["perNcaIdRate"] = {str(k): _rate(v, f"rateLimit.perNcaIdRate.{k}") for k, v in per_nca.items()}
    exempted = strings_field(rl, "exemptedNcaIds", "rateLimit")
    if exempted is not None:
        exempted = list(dict.fromkeys(exempted))  # a set, in the order given
        if len(exempted) > 32:
            raise invalid("rateLimit.exemptedNcaIds", "Maximum number of exempted nca id of 32 is exceeded")
        out["exemptedNcaIds"] = exempted
    if (
        not any(out.get(f) is not None for f in ("rateLimit", "perNcaIdRate", "perUserRate"))
        or (exempted and "rateLimit" not in out)
        or set(exempted or ()) & set(out.get("perNcaIdRate") or {})
    ):
        raise invalid("rateLimit", RATE_LIMIT_RULE)
    if rl.get("syncCheck") is not None:
        if not isinstance(rl["syncCheck"], bool):
            raise invalid("rateLimit.syncCheck", "must be a boolean")
        out["syncCheck"] = rl["syncCheck"]
    return out


def validate_llm_invocation_config(body: dict[str, Any]) -> dict[str, Any] | None:
    cfg = object_field(body, "llmInvocationConfig")
    if cfg is None:
        return None
    prio = cfg.get("priority")
    if prio is not None:
        if not isinstance(prio, dict):
            raise invalid("llmInvocationConfig.priority", "must be an object")
        int_field(prio, "defaultPriority", lo=0, hi=2**32 - 1)
        per = prio.get("perAccountPriority")
        if per is not None and (not isinstance(per, dict) or len(per) > 64):
            raise invalid("llmInvocationConfig.priority.perAccountPriority", "must be an object of at most 64 entries")
    return cfg


def _health(body: dict[str, Any], inference_url: str, inference_port: int) -> tuple[dict[str, Any], str]:
    health = object_field(body, "health")
    if health is None:
        uri = string_field(body, "healthUri") or DEFAULT_HEALTH_URI
        protocol = "gRPC" if inference_url == "/grpc" else "HTTP"
        return {"protocol": protocol, "uri": uri, "port": inference_port, "timeout": "PT10S", "expectedStatusCode": 200}, uri
    for field in ("protocol", "uri", "port", "timeout", "expectedStatusCode"):
        if health.get(field) is None:
            raise invalid(f"health.{field}", "is required when health is given")
    health_protocol = enum_field(health, "protocol", HEALTH_PROTOCOLS, where="health")
    if not isinstance(health["uri"], str) or not health["uri"].strip():
        raise invalid("health.uri", "must not be blank")
    int_field(health, "port", lo=1, hi=65535)
    if not isinstance(health["timeout"], str) or not DURATION_RE.match(health["timeout"]):
        raise invalid("health.timeout", "must be an ISO-8601 duration such as PT10S")
    int_field(health, "expectedStatusCode", lo=-(2**31), hi=2**31 - 1)  # any Java int: gRPC checks often expect 0
    clean = {k: health[k] for k in ("protocol", "uri", "port", "timeout", "expectedStatusCode")}
    clean["protocol"] = health_protocol
    return clean, health["uri"]


def _environment(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    env = list_field(body, "containerEnvironment")
    if env is None:
        return None
    for i, item in enumerate(env):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), str):
            raise invalid(f"containerEnvironment[{i}]", "must be {key: string, value: string}")
        if not item["key"]:
            raise invalid(f"containerEnvironment[{i}].key", "must not be blank")
        if item["key"].upper().startswith("NVCF_"):
            raise invalid(f"containerEnvironment[{i}].key", "uses the reserved prefix NVCF_")
    return [{"key": e["key"], "value": e["value"]} for e in env]


def _resources(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    resources = list_field(body, "resources")
    for i, r in enumerate(resources or ()):
        for field in ("name", "version", "uri"):
            if not isinstance(r, dict) or not isinstance(r.get(field), str) or not r[field]:
                raise invalid(f"resources[{i}].{field}", "is required")
    return resources


def _secrets(body: dict[str, Any]) -> dict[str, Any] | None:
    items = list_field(body, "secrets")
    if items is None:
        return None
    out: dict[str, Any] = {}
    for i, s in enumerate(items):
        name, value = check_secret(s, f"secrets[{i}]")
        if name in out:
            raise invalid(f"secrets[{i}].name", f"'{name}' is not unique: Duplicate secrets keys in the payload")
        out[name] = value
    return out


def _llm_only(config: dict[str, Any] | None, function_type: str | None) -> dict[str, Any] | None:
    if config is not None and function_type != "LLM":
        raise BadRequest(NOT_LLM_INVOCATION_CONFIG)  # NVCF's FunctionLlmService, after the request checks
    return config


def validate_function(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """CreateFunctionRequest -> (function fields to store, secret values or None)."""
    name = string_field(body, "name", required=True, max_len=128)
    if not NAME_RE.match(name):
        raise invalid("name", "must match ^[a-z0-9A-Z][a-z0-9A-Z-_]*$")
    inference_url = string_field(body, "inferenceUrl", required=True)
    inference_port = int_field(body, "inferencePort", lo=1, hi=65535) or 8000
    function_type = enum_field(body, "functionType", FUNCTION_TYPES, "DEFAULT")
    image = string_field(body, "containerImage")
    helm = string_field(body, "helmChart")
    helm_service = string_field(body, "helmChartServiceName")
    models = validate_models(body, function_type)
    if image is None and helm is None and not models:
        raise invalid("containerImage", "is required unless models or helmChart is given")
    if image is not None and helm is not None:
        raise invalid("helmChart", "cannot be combined with containerImage")
    if (helm is None) != (helm_service is None):
        raise invalid("helmChartServiceName", "must be given together with helmChart")
    if helm is not None:
        for field in ("containerArgs", "containerEnvironment"):
            if body.get(field) is not None:
                raise invalid(field, "is not allowed with helmChart")
    if function_type == "LLM" and not models:
        raise BadRequest(MISSING_LLM_MODELS)
    health, health_uri = _health(body, inference_url, inference_port)
    telemetries = object_field(body, "telemetries")
    if telemetries is not None and not any(telemetries.get(k) for k in ("logsTelemetryId", "metricsTelemetryId", "tracesTelemetryId")):
        raise invalid("telemetries", "must set at least one telemetry id")
    secrets = _secrets(body)
    fields = {
        "name": name,
        "inferenceUrl": inference_url,
        "inferencePort": inference_port,
        "containerImage": image,
        "containerArgs": string_field(body, "containerArgs", nonblank=False),
        "containerEnvironment": _environment(body),
        "apiBodyFormat": enum_field(body, "apiBodyFormat", BODY_FORMATS, "CUSTOM"),
        "healthUri": health_uri,
        "health": health,
        "functionType": function_type,
        "description": string_field(body, "description", max_len=256, nonblank=False),
        "tags": validate_tags(body),
        "secrets": None if secrets is None else list(secrets),
        "models": models,
        "resources": _resources(body),
        "rateLimit": validate_rate_limit(body),
        "llmInvocationConfig": _llm_only(validate_llm_invocation_config(body), function_type),
        "telemetries": telemetries,
        "helmChart": helm,
        "helmChartServiceName": helm_service,
    }
    return {k: v for k, v in fields.items() if v is not None}, secrets


def validate_function_update(body: dict[str, Any]) -> dict[str, Any]:
    """UpdateFunctionRequest: only tags, rateLimit, llmInvocationConfig, modelUpdates."""
    for field in body:
        if field not in UPDATABLE:
            raise invalid(field, "cannot be changed; create a new function version instead")
    if all(body.get(f) is None for f in ("tags", "rateLimit", "llmInvocationConfig")) and not body.get("modelUpdates"):
        raise BadRequest(FUNCTION_UPDATE_REQUIRED)
    updates: dict[str, Any] = {}
    if body.get("tags") is not None:
        updates["tags"] = validate_tags(body)
    if body.get("rateLimit") is not None:
        updates["rateLimit"] = validate_rate_limit(body)
    if body.get("llmInvocationConfig") is not None:
        updates["llmInvocationConfig"] = validate_llm_invocation_config(body)
    model_updates = validate_model_updates(body)
    if model_updates:
        updates["modelUpdates"] = model_updates
    return updates
