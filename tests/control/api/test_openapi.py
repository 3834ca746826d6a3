"""/openapi.json is true: it documents exactly the app's routes, and real responses fit its schemas."""

from __future__ import annotations

from fngate.control.api import make_app
from fngate.control.keys import new_key
from fngate.control.store.memory import MemoryStore
from tests.support.keys import NVCF_SERVICE_ID, OWNER, key_body, key_headers

from .conftest import SPEC


def app_routes() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for route in make_app(MemoryStore(), admin_key="k").router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        out.setdefault(route.resource.canonical, set()).add(route.method.lower())
    return out


def validate(value, schema: dict, doc: dict, where: str = "$") -> None:
    """The subset of JSON Schema the document uses: $ref, type, enum, required, properties, items."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind is not None:
        assert isinstance(value, checks[kind]) and not (kind in ("integer", "number") and isinstance(value, bool)), (
            f"{where}: {value!r} is not {kind}"
        )
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if kind == "object":
        for name in schema.get("required", ()):
            assert name in value, f"{where}: missing required {name}"
        props = schema.get("properties", {})
        if props:
            extra = set(value) - set(props)
            assert not extra, f"{where}: undocumented field(s) {extra}"
        for name, sub in props.items():
            if name in value:
                validate(value[name], sub, doc, f"{where}.{name}")
    if kind == "array":
        for i, item in enumerate(value):
            validate(item, schema["items"], doc, f"{where}[{i}]")


async def test_every_route_is_documented_and_every_documented_path_exists(api):
    doc = await api.call("GET", "/openapi.json", key=None)
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    assert documented == app_routes()


async def test_real_responses_match_the_documented_schemas(api):
    doc = await api.call("GET", "/openapi.json", key=None)

    def check(path: str, method: str, status: int, body) -> None:
        op = doc["paths"][path][method]
        content = op["responses"][str(status)]["content"]
        schema = (content.get("application/json") or content["application/problem+json"])["schema"]
        validate(body, schema, doc)

    llm = {"name": "llm", "inferenceUrl": "/", "containerImage": "i", "functionType": "LLM",
           "models": [{"name": "m", "llmConfig": {"uris": ["/v1/chat/completions"], "tokenRateLimit": "1-S"}}]}  # fmt: skip
    check("/v2/nvcf/functions", "post", 200, {"function": await api.create_function(llm)})
    fn = await api.create_function()
    check("/v2/nvcf/functions", "post", 200, {"function": fn})
    fv = "/v2/nvcf/functions/{functionId}/versions/{functionVersionId}"
    check(fv, "get", 200, await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"))
    check("/v2/nvcf/functions", "get", 200, await api.call("GET", "/v2/nvcf/functions"))
    dep = await api.deploy(fn, SPEC)
    check("/v2/nvcf/deployments/functions/{functionId}/versions/{functionVersionId}", "post", 200, {"deployment": dep})
    check("/v2/nvcf/queues/functions/{functionId}", "get", 200, await api.call("GET", f"/v2/nvcf/queues/functions/{fn['id']}"))
    check("/v2/nvcf/supportedGpus", "get", 200, await api.call("GET", "/v2/nvcf/supportedGpus"))
    check("/v2/nvcf/clusterGroups", "get", 200, await api.call("GET", "/v2/nvcf/clusterGroups"))
    created = await api.call("POST", "/v1/keys", key_body(), headers=key_headers())
    check("/v1/keys", "post", 200, created)
    check("/v1/keys", "get", 200, await api.call("GET", "/v1/keys", headers=key_headers()))
    check("/v1/keys/{keyId}", "get", 200, await api.call("GET", f"/v1/keys/{created['id']}", headers=key_headers()))
    updated = await api.call(
        "PUT", f"/v1/keys/{created['id']}/authorizations", {"authorizations": key_body()["authorizations"]}, headers=key_headers()
    )
    check("/v1/keys/{keyId}/authorizations", "put", 200, updated)
    check("/v1/keys", "post", 400, await api.problem("POST", "/v1/keys", {}, status=400, headers=key_headers()))
    check("/v2/nvcf/accounts/{ncaId}", "post", 200, await api.call("POST", "/v2/nvcf/accounts/team-b", {"name": "team-b"}))
    check("/v2/nvcf/accounts/{ncaId}", "get", 200, await api.call("GET", "/v2/nvcf/accounts/team-b"))
    check("/v2/nvcf/accounts", "get", 200, await api.call("GET", "/v2/nvcf/accounts"))
    az = "/v2/nvcf/authorizations/functions/{functionId}"
    shared = await api.call("POST", f"/v2/nvcf/authorizations/functions/{fn['id']}", {"authorizedParties": [{"ncaId": "team-b"}]})
    check(az, "post", 200, shared)
    check(az, "get", 200, await api.call("GET", f"/v2/nvcf/authorizations/functions/{fn['id']}"))
    other = await api.call("POST", "/v1/keys", {**key_body(), "nca_id": "team-b"}, headers=key_headers())
    check(fv, "get", 200, await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", key=other["value"]))
    check("/v2/nvcf/accounts/{ncaId}/deployments", "get", 200, await api.call("GET", "/v2/nvcf/accounts/fngate/deployments"))
    check(fv, "get", 404, await api.problem("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['id']}", status=404))
    check(fv, "get", 400, await api.problem("GET", f"/v2/nvcf/functions/{fn['id']}/versions/nope", status=400))
    check("/health", "get", 200, await api.call("GET", "/health", key=None))
    check("/v2/nvcf/functions", "post", 400, await api.problem("POST", "/v2/nvcf/functions", {}, status=400))
    introspected = await api.call("POST", "/v1/introspect", {"audience_service_id": NVCF_SERVICE_ID, "key": created["value"]})
    check("/v1/introspect", "post", 200, introspected)
    check("/v1/introspect", "post", 404, await api.problem("POST", "/v1/introspect", {"key": new_key()}, status=404))
    evaluation = "/v1/namespaces/{namespace}/evaluations/{policyName}"
    allowed = await api.call("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": created["value"]}})
    check(evaluation, "post", 200, allowed)
    check(evaluation, "post", 200, await api.call("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": "x"}}))
    check("/v1/services", "get", 200, await api.call("GET", "/v1/services"))
    check("/v1/services/{serviceId}", "get", 200, await api.call("GET", f"/v1/services/{NVCF_SERVICE_ID}"))
    check("/v1/admin/users/{userId}", "get", 200, await api.call("GET", f"/v1/admin/users/{OWNER}"))
    status = await api.call("PUT", f"/v1/admin/users/{OWNER}/status", {"status": "SUSPENDED"})
    check("/v1/admin/users/{userId}/status", "put", 200, status)


def test_validator_rejects_what_the_schema_does_not_allow():
    doc = {"components": {"schemas": {"S": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}}}}
    for bad in ({}, {"a": "1"}, {"a": True}, {"a": 1, "b": 2}):
        try:
            validate(bad, {"$ref": "#/components/schemas/S"}, doc)
        except AssertionError:
            continue
        raise AssertionError(f"{bad} passed")
    validate({"a": 1}, {"$ref": "#/components/schemas/S"}, doc)
