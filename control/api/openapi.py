"""The OpenAPI 3 document of the management API, served at /openapi.json.

tests/control/api/test_openapi.py keeps it true: every route is documented with its methods,
every documented path exists, and real responses match the documented schemas.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..keys import SCOPES
from ..states import State
from .context import json_response
from .params import UUID_PARAMS

routes = web.RouteTableDef()


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
ANY_OBJ = {"type": "object"}
STRS = _arr(STR)
STATUS = {"type": "string", "enum": [s.value for s in State]}

GPU_SPEC_PROPS = {
    "gpuSpecificationId": STR,
    "gpu": STR,
    "instanceType": STR,
    "minInstances": INT,
    "maxInstances": INT,
    "maxRequestConcurrency": INT,
    "backend": STR,
    "clusters": STRS,
    "regions": STRS,
    "attributes": STRS,
    "availabilityZones": STRS,
    "configuration": ANY_OBJ,
    "preferredOrder": INT,
    "storage": STR,
    "systemMemory": STR,
    "gpuMemory": STR,
    "cpuArch": STR,
    "os": STR,
    "driverVersion": STR,
    "helmValidationPolicy": ANY_OBJ,
    "autoscalingConfiguration": ANY_OBJ,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": _obj(["type", "title", "status"], type=STR, title=STR, status=INT, detail=STR, instance=STR),
    "Health": _obj(
        ["protocol", "uri", "port", "timeout", "expectedStatusCode"],
        protocol={"type": "string", "enum": ["HTTP", "gRPC"]},
        uri=STR,
        port=INT,
        timeout=STR,
        expectedStatusCode=INT,
    ),
    "KeyValue": _obj(["key", "value"], key=STR, value=STR),
    "Instance": _obj(
        ["instanceId"],
        instanceId=STR,
        functionId=STR,
        functionVersionId=STR,
        instanceType=STR,
        instanceStatus=STR,
        ncaId=STR,
        gpu=STR,
        backend=STR,
        location=STR,
        instanceCreatedAt=STR,
        instanceUpdatedAt=STR,
    ),
    "LlmConfig": _obj(
        ["uris"],
        uris={**STRS, "description": "OpenAI-compatible endpoints the model serves, e.g. /v1/chat/completions"},
        tokenRateLimit={"type": "string", "description": "<n>-<S|M|H|D|W> entries joined by commas, e.g. 100000-S or 10-M,5-S"},
        tokenizer=STR,
        routingMethod={"type": "string", "description": "the request router's algorithm, e.g. round-robin, power-of-two"},
    ),
    "FunctionModel": _obj(["name"], name=STR, version=STR, uri=STR, llmConfig=_ref("LlmConfig")),
    "ModelUpdate": _obj(["modelName"], modelName=STR, llmConfig=_obj(tokenRateLimit=STR, routingMethod=STR)),
    "CreateFunctionRequest": _obj(
        ["name", "inferenceUrl"],
        name=STR,
        inferenceUrl=STR,
        inferencePort=INT,
        health=_ref("Health"),
        healthUri=STR,
        containerImage=STR,
        containerArgs=STR,
        containerEnvironment=_arr(_ref("KeyValue")),
        helmChart=STR,
        helmChartServiceName=STR,
        models=_arr(_ref("FunctionModel")),
        resources=_arr(ANY_OBJ),
        apiBodyFormat={"type": "string", "enum": ["CUSTOM", "PREDICT_V2"]},
        functionType={"type": "string", "enum": ["DEFAULT", "STREAMING", "LLM"]},
        description=STR,
        tags=STRS,
        secrets=_arr(_obj(["name", "value"], name=STR, value={})),
        rateLimit=ANY_OBJ,
        llmInvocationConfig=ANY_OBJ,
        telemetries=ANY_OBJ,
    ),
    "UpdateFunctionRequest": _obj(tags=STRS, rateLimit=ANY_OBJ, llmInvocationConfig=ANY_OBJ, modelUpdates=_arr(_ref("ModelUpdate"))),
    "Function": _obj(
        ["id", "ncaId", "versionId", "name", "status", "healthUri", "createdAt", "functionType"],
        id=STR,
        versionId=STR,
        ncaId=STR,
        name=STR,
        status=STATUS,
        inferenceUrl=STR,
        inferencePort=INT,
        containerImage=STR,
        containerArgs=STR,
        containerEnvironment=_arr(_ref("KeyValue")),
        apiBodyFormat=STR,
        healthUri=STR,
        health=_ref("Health"),
        functionType=STR,
        description=STR,
        tags=STRS,
        secrets=STRS,
        models=_arr(_ref("FunctionModel")),
        resources=_arr(ANY_OBJ),
        rateLimit=ANY_OBJ,
        createdAt=STR,
        activeInstances=_arr(_ref("Instance")),
        helmChart=STR,
        helmChartServiceName=STR,
        llmInvocationConfig=ANY_OBJ,
        telemetries=ANY_OBJ,
        ownedByDifferentAccount={"type": "boolean", "description": "the function belongs to another account that shares it"},
    ),
    "FunctionResponse": _obj(["function"], function=_ref("Function")),
    "FunctionsResponse": _obj(["functions"], functions=_arr(_ref("Function"))),
    "FunctionIdsResponse": _obj(["functionIds"], functionIds=STRS),
    "GpuSpecification": _obj(["gpu", "instanceType", "minInstances", "maxInstances"], **GPU_SPEC_PROPS),
    "DeploymentRequest": _obj(["deploymentSpecifications"], deploymentSpecifications=_arr(_ref("GpuSpecification"))),
    "UpdateGpuSpecificationRequest": _obj(
        minInstances=INT,
        maxInstances=INT,
        autoscalingConfiguration=ANY_OBJ,
        autoscalingConfigurationPolicy={"type": "string", "enum": ["CUSTOM_CONFIGURATION", "PLATFORM_CONFIGURATION"]},
    ),
    "Deployment": _obj(
        ["functionId", "functionVersionId", "deploymentId", "functionName", "ncaId", "functionStatus", "deploymentSpecifications"],
        functionId=STR,
        functionVersionId=STR,
        deploymentId=STR,
        functionName=STR,
        ncaId=STR,
        functionStatus=STATUS,
        healthInfo=_arr(_obj(None, icmsRequestId=STR, gpu=STR, backend=STR, instanceType=STR, error=STR)),
        deploymentSpecifications=_arr(_ref("GpuSpecification")),
        createdAt=STR,
        lastUpdatedAt=STR,
    ),
    "DeploymentResponse": _obj(["deployment"], deployment=_ref("Deployment")),
    "GpuSpecificationResponse": _obj(["gpuSpecification"], gpuSpecification=_ref("GpuSpecification")),
    "QueuesResponse": _obj(
        ["functionId", "queues"],
        functionId=STR,
        queues=_arr(
            _obj(
                ["functionVersionId", "functionName", "functionStatus", "queueDepth"],
                functionVersionId=STR,
                functionName=STR,
                functionStatus=STATUS,
                queueDepth=INT,
            )
        ),
    ),
    "QueuePosition": _obj(
        ["functionId", "functionVersionId", "positionInQueue"], functionId=STR, functionVersionId=STR, positionInQueue=INT
    ),
    "SupportedGpus": _arr(_obj(["gpu"], gpu=STR, backend=STR)),
    "ClusterGroupsResponse": _obj(
        ["clusterGroups"],
        clusterGroups=_arr(
            _obj(
                ["id", "name", "ncaId", "gpus"],
                id=STR,
                name=STR,
                ncaId=STR,
                authorizedNcaIds=STRS,
                gpus=_arr(
                    _obj(
                        ["name", "instanceTypes"],
                        name=STR,
                        instanceTypes=_arr(_obj(["name"], name=STR, description=STR, default=BOOL, gpuCount=INT, total=INT, free=INT)),
                    )
                ),
                clusters=_arr(_obj(["id", "name"], id=STR, name=STR)),
            )
        ),
    ),
    "KeyAuthorizations": _obj(
        ["policies"],
        policies=_arr(
            _obj(
                None,
                aud=STR,
                auds=STRS,
                product=STR,
                scopes=_arr({"type": "string", "description": "NVCF scopes: " + ", ".join(SCOPES)}),
                resources=_arr(_obj(["type", "id"], type=STR, id=STR)),
            )
        ),
    ),
    "CreateKeyRequest": _obj(
        ["description", "expires_at", "authorizations"],
        description={"type": "string", "pattern": "^[a-zA-Z0-9\\s_-]{1,64}$"},
        expires_at={"type": "string", "format": "date-time", "description": "at most 365 days ahead"},
        audience_service_ids=STRS,
        authorizations=_ref("KeyAuthorizations"),
    ),
    "UpdateKeyAuthorizationsRequest": _obj(["authorizations"], authorizations=_ref("KeyAuthorizations")),
    "KeyStatusRequest": _obj(["status"], status={"type": "string", "enum": ["ACTIVE", "SUSPENDED"]}),
    "KeyLookupRequest": _obj(["key"], key=STR),
    "Key": _obj(
        ["id", "value", "status", "owner_type", "owner_id", "issuer_service_id", "audience_service_ids", "created_at"],
        id=STR,
        value={"type": "string", "description": "the full key in the create response only, else masked"},
        status={"type": "string", "enum": ["ACTIVE", "EXPIRED", "SUSPENDED"]},
        owner_type={"type": "string", "enum": ["USER", "SYSTEM"]},
        owner_id=STR,
        issuer_service_id=STR,
        audience_service_ids=STRS,
        description=STR,
        created_at=STR,
        expires_at=STR,
        nca_id={"type": "string", "description": "fngate: the account the key acts for"},
        authorizations=_ref("KeyAuthorizations"),
    ),
    "KeysResponse": _obj(["keys"], keys=_arr(_ref("Key"))),
    "IntrospectionRequest": _obj(["key"], key=STR, audience_service_id=STR),
    "Introspection": _obj(
        ["owner_type", "owner_id", "key_id", "issuer_service_id", "authorizations"],
        owner_type={"type": "string", "enum": ["USER", "SYSTEM"]},
        owner_id=STR,
        key_id=STR,
        issuer_service_id=STR,
        authorizations=ANY_OBJ,
    ),
    "EvaluationRequest": _obj(["input"], input=_obj(["apiKey"], apiKey=STR)),
    "Evaluation": _obj(
        ["namespace", "rule_name", "result"],
        namespace=STR,
        rule_name=STR,
        result=_obj(["allowed"], allowed=BOOL, ncaId=STR, ownerId=STR, policy=ANY_OBJ),
    ),
    "KeyOwner": _obj(
        ["owner_type", "owner_id", "status", "status_updated_at"],
        owner_type={"type": "string", "enum": ["USER"]},
        owner_id=STR,
        status={"type": "string", "enum": ["ACTIVE", "SUSPENDED"]},
        status_updated_at=STR,
    ),
    "Service": _obj(
        ["service_id", "service_name", "audience_service_ids"],
        service_id=STR,
        service_name=STR,
        audience_service_ids=STRS,
        max_api_keys_per_user=INT,
        max_api_key_ttl_days=INT,
        max_authz_size_chars=INT,
        min_authz_update_interval_seconds=INT,
    ),
    "ServicesResponse": _obj(["services"], services=_arr(_ref("Service"))),
    "AuthorizedParty": _obj(
        ["ncaId"], ncaId={"type": "string", "description": "an account, or * (public; super admin only)"}, clientId=STR
    ),
    "AuthorizedPartiesRequest": _obj(["authorizedParties"], authorizedParties=_arr(_ref("AuthorizedParty"))),
    "PatchAuthorizedPartyRequest": _obj(["authorizedParty"], authorizedParty=_ref("AuthorizedParty")),
    "AuthorizedParties": _obj(["id", "ncaId"], id=STR, ncaId=STR, versionId=STR, authorizedParties=_arr(_obj(["ncaId"], ncaId=STR))),
    "AuthorizedPartiesResponse": _obj(["function"], function=_ref("AuthorizedParties")),
    "ListAuthorizedPartiesResponse": _obj(["functions"], functions=_arr(_ref("AuthorizedParties"))),
    "Account": _obj(
        ["ncaId", "name"],
        ncaId=STR,
        name=STR,
        adminClientIds=STRS,
        maxFunctionsAllowed=INT,
        maxTasksAllowed=INT,
        maxTelemetriesAllowed=INT,
        maxRegistryCredentialsAllowed=INT,
        lastUpdatedAt=STR,
    ),
    "AccountDetails": _obj(
        ["ncaId", "name"],
        ncaId=STR,
        name=STR,
        adminClientIds=STRS,
        clientIds=STRS,
        telemetries=_arr(ANY_OBJ),
        registryCredentials=_arr(ANY_OBJ),
        currentNumberFunctions=INT,
        maxFunctionsAllowed=INT,
        maxTasksAllowed=INT,
        maxTelemetriesAllowed=INT,
        maxRegistryCredentialsAllowed=INT,
        lastUpdatedAt=STR,
    ),
    "CreateAccountRequest": _obj(
        ["name"],
        name={"type": "string", "pattern": "^[a-z0-9A-Z][a-z0-9A-Z\\-_]*$"},
        adminClientId=STR,
        registryCredentials=_arr(ANY_OBJ),
        maxFunctionsAllowed=INT,
        maxTasksAllowed=INT,
        maxTelemetriesAllowed=INT,
        maxRegistryCredentialsAllowed=INT,
    ),
    "AccountUpdateRequest": _obj(
        None, name=STR, maxFunctionsAllowed=INT, maxTasksAllowed=INT, maxTelemetriesAllowed=INT, maxRegistryCredentialsAllowed=INT
    ),
    "ClientRequest": _obj(["adminClientId"], adminClientId=STR),
    "ClientDetailsResponse": _obj(["client"], client=_obj(["ncaId", "name"], clientId=STR, ncaId=STR, name=STR)),
    "AccountResponse": _obj(["account"], account=_ref("Account")),
    "AccountDetailsResponse": _obj(["account"], account=_ref("AccountDetails")),
    "AccountsResponse": _obj(["cloudAccounts"], cloudAccounts=_arr(_ref("Account"))),
    "DeploymentsResponse": _obj(["deployments"], deployments=_arr(_ref("Deployment"))),
    "Secret": _obj(
        ["name", "value"],
        name={"type": "string", "pattern": "^[a-z0-9A-Z][a-z0-9A-Z_.\\-]*$", "minLength": 1, "maxLength": 48},
        value={"description": "a string or a JSON object, 1-32768 characters", "oneOf": [STR, ANY_OBJ]},
    ),
    "UpdateSecretsRequest": _obj(["secrets"], secrets=_arr(_ref("Secret"))),
    "UpdateTelemetrySecretRequest": _obj(["secret"], secret=_ref("Secret")),
    "HealthStatus": _obj(["status"], status={"type": "string", "enum": ["UP", "DOWN"]}),
    "RateLimit": _obj(
        None,
        rateLimit={"type": "string", "example": "10-S,500-M"},
        exemptedNcaIds=STRS,
        perNcaIdRate={"type": "object", "additionalProperties": STR},
        perUserRate=STR,
        syncCheck=BOOL,
    ),
    "UpdateRateLimitRequest": _obj(["rateLimit"], rateLimit=_ref("RateLimit")),
    "CreateAssetRequest": _obj(["contentType", "description"], contentType={"type": "string", "example": "image/png"}, description=STR),
    "CreateAssetResponse": _obj(
        ["assetId", "uploadUrl", "contentType", "description"], assetId=STR, uploadUrl=STR, contentType=STR, description=STR
    ),
    "AssetsResponse": _obj(["assets"], assets=_arr(_obj(["assetId"], assetId=STR))),
    "AssetResponse": _obj(["asset"], asset=_obj(["assetId", "contentType"], assetId=STR, description=STR, contentType=STR, createdAt=STR)),
    "PresignedUrl": _obj(["presignedUrl"], presignedUrl=STR),
}

UUID = {"type": "string", "format": "uuid"}
PARAMS = {
    name: {"name": name, "in": "path", "required": True, "schema": UUID if name in UUID_PARAMS else STR}
    for name in (
        "functionId",
        "functionVersionId",
        "deploymentId",
        "gpuSpecificationId",
        "requestId",
        "keyId",
        "ncaId",
        "userId",
        "clientId",
        "telemetryId",
        "assetId",
        "objectId",
        "namespace",
        "policyName",
        "serviceId",
        "name",
    )
}
PRESIGNED = [{"name": n, "in": "query", "required": True, "schema": STR} for n in ("expires", "signature")]
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
QUERY = {
    "visibility": {
        "name": "visibility",
        "in": "query",
        "schema": STR,
        "description": "comma-separated subset of authorized,private,public (default: all)",
    },
    "graceful": {"name": "graceful", "in": "query", "schema": BOOL, "description": "drain the queue before removing instances"},
    "includeSecrets": {"name": "includeSecrets", "in": "query", "schema": BOOL},
}
ERRORS = {
    400: "invalid request",
    401: "missing, unknown or expired key",
    403: "missing scope or function not covered by the key",
    404: "not found",
    409: "changed concurrently",
    413: "request body too large",
    502: "the invocation gateway cannot be reached",
    415: "the body is not JSON (Content-Type)",
    429: "too many requests",
}


def _error(code: int) -> dict[str, Any]:
    return {"description": ERRORS[code], "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _op(
    summary: str,
    scope: str | None,
    ok: str | None,
    *,
    body: str | None = None,
    status: int = 200,
    query: tuple[str, ...] = (),
    errors: tuple[int, ...] = (400, 401, 403, 404),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if scope:
        op["security"] = [{"bearer": []}]
        op["x-required-scope"] = scope
    if query:
        op["parameters"] = [QUERY[q] for q in query]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        errors = tuple(sorted({*errors, 413, 415}))
    op["responses"][str(status)] = (
        {"description": summary} if ok is None else {"description": summary, "content": {"application/json": {"schema": _ref(ok)}}}
    )
    for code in errors if scope else ():
        op["responses"][str(code)] = {"description": ERRORS[code], "content": {"application/problem+json": {"schema": _ref("Problem")}}}
    return op


F = "/v2/nvcf/functions"
FV = F + "/{functionId}/versions/{functionVersionId}"
D = "/v2/nvcf/deployments"
DFV = D + "/functions/{functionId}/versions/{functionVersionId}"
LIST = "list_functions or list_functions_details"

PATHS: dict[str, dict[str, dict[str, Any]]] = {
    F: {
        "post": _op("Create a function", "register_function", "FunctionResponse", body="CreateFunctionRequest", errors=(400, 401, 403)),
        "get": _op("List functions", LIST, "FunctionsResponse", query=("visibility",), errors=(400, 401, 403)),
    },
    F + "/ids": {"get": _op("List function ids", LIST, "FunctionIdsResponse", query=("visibility",), errors=(400, 401, 403))},
    F + "/{functionId}/versions": {
        "post": _op("Create a version of a function", "register_function", "FunctionResponse", body="CreateFunctionRequest"),
        "get": _op("List the versions of a function", LIST, "FunctionsResponse"),
    },
    FV: {
        "get": _op("Get a function version", LIST, "FunctionResponse", query=("includeSecrets",)),
        "put": _op(
            "Update tags, rate limit, LLM settings of a version",
            "update_function",
            "FunctionResponse",
            body="UpdateFunctionRequest",
            errors=(400, 401, 403, 404, 409),
        ),
        "delete": _op(
            "Delete a version with its deployment, secrets and instances", "delete_function", None, status=204, errors=(401, 403, 404, 409)
        ),
    },
    "/v2/nvcf/metadata/functions/{functionId}/versions/{functionVersionId}": {
        "put": _op(
            "Deprecated alias of PUT " + FV,
            "update_function",
            "FunctionResponse",
            body="UpdateFunctionRequest",
            errors=(400, 401, 403, 404, 409),
        )
    },
    DFV: {
        "post": _op(
            "Deploy a function version", "deploy_function", "DeploymentResponse", body="DeploymentRequest", errors=(400, 401, 403, 404, 409)
        ),
        "get": _op("Get the deployment of a version", "deploy_function", "DeploymentResponse"),
        "put": _op(
            "Deprecated: update the GPU specifications",
            "deploy_function",
            "DeploymentResponse",
            body="DeploymentRequest",
            errors=(400, 401, 403, 404, 409),
        ),
        "delete": _op(
            "Undeploy: the function becomes INACTIVE",
            "deploy_function",
            "FunctionResponse",
            query=("graceful",),
            errors=(400, 401, 403, 404, 409),
        ),
    },
    D + "/{deploymentId}": {"get": _op("Get a deployment by id", "deploy_function", "DeploymentResponse")},
    D + "/{deploymentId}/gpu-specifications/{gpuSpecificationId}": {
        "patch": _op(
            "Change min/max instances or autoscaling of a GPU specification",
            "deploy_function",
            "GpuSpecificationResponse",
            body="UpdateGpuSpecificationRequest",
            errors=(400, 401, 403, 404, 409),
        )
    },
    "/v2/nvcf/queues/functions/{functionId}": {"get": _op("Queue depth of every deployed version", "queue_details", "QueuesResponse")},
    "/v2/nvcf/queues/functions/{functionId}/versions/{functionVersionId}": {
        "get": _op("Queue depth of one version", "queue_details", "QueuesResponse")
    },
    "/v2/nvcf/queues/{requestId}/position": {
        "get": _op("Position of a queued request (an estimate, at most 1000)", "queue_details", "QueuePosition")
    },
    "/v2/nvcf/supportedGpus": {
        "get": _op("GPUs and backends deployments may name (deprecated)", "register_function", "SupportedGpus", errors=(401, 403))
    },
    "/v2/nvcf/clusterGroups": {
        "get": _op("Cluster groups with their GPUs and instance types", "list_cluster_groups", "ClusterGroupsResponse", errors=(401, 403))
    },
    "/v1/keys": {
        "post": _op(
            "Create an API key (its value is returned only here)", "manage_keys", "Key", body="CreateKeyRequest", errors=(400, 401, 403)
        ),
        "get": _op("List the owner's API keys (masked, without authorizations)", "manage_keys", "KeysResponse", errors=(400, 401, 403)),
    },
    "/v1/keys/{keyId}": {
        "get": _op("Get an API key (masked)", "manage_keys", "Key", errors=(400, 401, 403, 404)),
        "delete": _op("Delete (revoke) an API key", "manage_keys", None, status=204, errors=(400, 401, 403, 404)),
    },
    "/v1/keys/{keyId}/authorizations": {
        "put": _op(
            "Replace an ACTIVE key's authorizations",
            "manage_keys",
            "Key",
            body="UpdateKeyAuthorizationsRequest",
            errors=(400, 401, 403, 404, 429),
        )
    },
    "/v2/nvcf/secrets/functions/{functionId}/versions/{functionVersionId}": {
        "put": _op(
            "Add or change secrets of a version (merged; the first ones only while INACTIVE)",
            "update_secrets",
            None,
            body="UpdateSecretsRequest",
            status=204,
            errors=(400, 401, 403, 404, 409),
        )
    },
    "/v2/nvcf/secrets/telemetries/{telemetryId}": {
        "put": _op("Set the secret of a telemetry endpoint", "update_secrets", None, body="UpdateTelemetrySecretRequest", status=204)
    },
    "/v2/nvcf/ratelimit/functions/{functionId}/versions/{functionVersionId}": {
        "put": _op(
            "Deprecated: replace the rate-limit settings of a version",
            "update_function",
            None,
            body="UpdateRateLimitRequest",
            status=204,
            errors=(400, 401, 403, 404, 409),
        ),
        "delete": _op("Clear the rate-limit settings of a version", "update_function", None, status=204, errors=(400, 401, 403, 404, 409)),
    },
    "/v2/nvcf/assets": {
        "post": _op(
            "Create an asset: upload its bytes to the returned uploadUrl within 35 minutes",
            "invoke_function",
            "CreateAssetResponse",
            body="CreateAssetRequest",
            errors=(400, 401, 403, 404),
        ),
        "get": _op(
            "List the account's uploaded assets (ids only, at most 1000)", "invoke_function", "AssetsResponse", errors=(401, 403, 404)
        ),
    },
    "/v2/nvcf/assets/{assetId}": {
        "get": _op("Get an uploaded asset's metadata", "invoke_function", "AssetResponse"),
        "delete": _op("Delete an asset", "invoke_function", None, status=204),
    },
    "/v2/nvcf/assets/{assetId}/content-redirect": {
        "get": _op("A presigned download URL (JSON, no existence check)", "invoke_function", "PresignedUrl")
    },
    "/fngate/internal/assets/{ncaId}/{assetId}": {
        "get": {
            "summary": "For gateways: an account's asset for NVCF-INPUT-ASSET-REFERENCES (admin key only)",
            "responses": {
                "200": {"description": "{contentType, url}: a presigned download valid 34 min"},
                **{str(c): {"description": d, "content": PROBLEM} for c, d in ((401, "not the admin key"), (404, "no such asset"))},
            },
        }
    },
    "/fngate/asset-objects/{objectId}": {
        "put": {
            "summary": "Presigned upload (the uploadUrl): same Content-Type as created, no bearer key",
            "parameters": list(PRESIGNED),
            "requestBody": {"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": {"description": "stored"},
                **{
                    str(c): {"description": d, "content": PROBLEM}
                    for c, d in ((403, "bad or expired signature"), (404, "no such asset"), (413, "too large"))
                },
            },
        },
        "get": {
            "summary": "Presigned download (the presignedUrl)",
            "parameters": list(PRESIGNED),
            "responses": {
                "200": {"description": "the asset's bytes", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                **{str(c): {"description": d, "content": PROBLEM} for c, d in ((403, "bad or expired signature"), (404, "no such asset"))},
            },
        },
    },
    "/health": {
        "get": {
            "summary": "Health of the API and its store (no auth)",
            "responses": {
                "200": {"description": "up", "content": {"application/json": {"schema": _ref("HealthStatus")}}},
                "503": {"description": "the store does not answer", "content": {"application/json": {"schema": _ref("HealthStatus")}}},
            },
        }
    },
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document"}}}},
    # fngate's web console and its helpers (control/api/console.py), and the control plane's metrics
    "/console": {"get": {"summary": "The web console (redirects to /console/)", "responses": {"308": {"description": "to /console/"}}}},
    "/console/": {
        "get": {
            "summary": "The web console's page",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": STR}}}},
        }
    },
    "/console/{name}": {
        "get": {
            "summary": "A file of the web console (app.js, style.css)",
            "responses": {
                "200": {"description": "the file", "content": {t: {"schema": STR} for t in ("text/html", "text/javascript", "text/css")}},
                "404": {"description": "no such file", "content": PROBLEM},
            },
        }
    },
    "/v1/console/metrics": {
        "get": {
            **_op("The console's live series, from the gateway's /metrics", LIST, None, errors=(401, 403)),
            "responses": {
                "200": {
                    "description": "per-function and gateway-wide series",
                    "content": {
                        "application/json": {
                            "schema": _obj(["gateway", "functions"], gateway=ANY_OBJ, functions=ANY_OBJ, historySeconds=NUM)
                        }
                    },
                },
                **{str(c): _error(c) for c in (401, 403)},
            },
        }
    },
    "/v1/console/invoke/{functionId}": {
        "post": {
            "summary": "Invoke a function once through the gateway with the caller's key (the console's same-origin relay)",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "path", "in": "query", "schema": STR, "description": "origin-form path at the gateway (default /)"},
                {"name": "version", "in": "query", "schema": UUID, "description": "pin a function version"},
            ],
            "requestBody": {"content": {"*/*": {"schema": STR}}},
            "responses": {
                "default": {
                    "description": "the gateway's answer, passed through (status, nvcf-reqid, nvcf-status, body)",
                    "content": {"*/*": {}},
                },
                **{str(c): _error(c) for c in (400, 401, 403, 502)},
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Control-plane metrics (Prometheus text): NVCF's state metrics and fngate's",
            "security": [{"bearer": []}],
            "x-required-scope": LIST,
            "responses": {
                "200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {"schema": STR}}},
                **{str(c): _error(c) for c in (401, 403)},
            },
        }
    },
}

SA = "/v1/service-admin/users/{userId}"
PATHS[SA + "/keys"] = {"get": _op("A user's keys in the issuing service (admin key)", "admin key", "KeysResponse", errors=(400, 401, 403))}
PATHS[SA + "/keys/{keyId}"] = {
    "get": _op("A user's key (admin key)", "admin key", "Key"),
    "delete": _op("Delete a user's key (admin key)", "admin key", None, status=204),
}
PATHS[SA + "/keys/{keyId}/status"] = {
    "put": _op("Suspend or reactivate a key (admin key)", "admin key", "Key", body="KeyStatusRequest"),
}
PATHS[SA + "/suspend"] = {
    "put": _op("Suspend all of a user's keys in the service (admin key)", "admin key", "KeysResponse", errors=(400, 401, 403))
}
PATHS["/v1/admin/lookup"] = {"post": _op("The key with this value (admin key)", "admin key", "Key", body="KeyLookupRequest")}
PATHS["/v1/admin/users/{userId}/keys"] = {
    "get": _op("A user's keys in every service (admin key)", "admin key", "KeysResponse", errors=(401, 403)),
    "delete": _op("Delete all of a user's keys (admin key)", "admin key", None, status=204, errors=(401, 403)),
}
PATHS["/v1/admin/users/{userId}"] = {"get": _op("A key owner and its status (admin key)", "admin key", "KeyOwner", errors=(401, 403, 404))}
PATHS["/v1/admin/users/{userId}/status"] = {
    "put": _op(
        "Suspend or reactivate a key owner: every key it owns (admin key)",
        "admin key",
        "KeyOwner",
        body="KeyStatusRequest",
        errors=(400, 401, 403, 404),
    )
}
PATHS["/v1/introspect"] = {
    "post": _op(
        "What a key value is: owner, id, authorizations (Cache-Control: max-age=360)",
        "manage_keys",
        "Introspection",
        body="IntrospectionRequest",
    )
}
PATHS["/v1/namespaces/{namespace}/evaluations/{policyName}"] = {
    "post": _op(
        "Evaluate a key against a namespace's policy (apikey.allow); failures are allowed:false (Cache-Control: max-age=60)",
        "manage_keys",
        "Evaluation",
        body="EvaluationRequest",
        errors=(400, 401, 403),
    )
}
PATHS["/v1/services"] = {
    "get": _op("The services registered with the API-keys service", "manage_keys", "ServicesResponse", errors=(401, 403))
}
PATHS["/v1/services/{serviceId}"] = {"get": _op("One service registration", "manage_keys", "Service", errors=(401, 403, 404))}
for _path in (SA + "/keys", SA + "/keys/{keyId}", SA + "/keys/{keyId}/status", SA + "/suspend"):
    for _op_doc in PATHS[_path].values():
        _op_doc["parameters"] = [{"name": "Key-Issuer-Id", "in": "header", "required": True, "schema": STR}]

AZ = "/v2/nvcf/authorizations/functions/{functionId}"
AZV = AZ + "/versions/{functionVersionId}"
AZ_ERRORS = (400, 401, 403, 404)
for _base, _what in ((AZ, "every version of the function"), (AZV, "the version")):
    PATHS[_base] = {
        "post": _op(
            f"Replace the authorized parties of {_what}", "authorize_clients", "AuthorizedPartiesResponse", body="AuthorizedPartiesRequest"
        ),
        "delete": _op(f"Delete the authorized-party list of {_what}", "authorize_clients", "AuthorizedPartiesResponse"),
    }
    PATHS[_base + "/add"] = {
        "patch": _op(
            f"Add one account to {_what}'s list",
            "authorize_clients",
            "AuthorizedPartiesResponse",
            body="PatchAuthorizedPartyRequest",
            errors=(400, 401, 403, 404, 409),
        )
    }
    PATHS[_base + "/remove"] = {
        "patch": _op(
            f"Remove one account from {_what}'s list", "authorize_clients", "AuthorizedPartiesResponse", body="PatchAuthorizedPartyRequest"
        )
    }
PATHS[AZ]["get"] = _op(
    "The authorized parties of every version (function and version lists merged)", "authorize_clients", "ListAuthorizedPartiesResponse"
)
PATHS[AZV]["get"] = _op("The authorized parties of the version", "authorize_clients", "AuthorizedPartiesResponse")

A = "/v2/nvcf/accounts"
PATHS[A] = {"get": _op("List accounts", "account_setup", "AccountsResponse", errors=(401, 403))}
PATHS[A + "/{ncaId}"] = {
    "post": _op(
        "Create an account (admin key only)", "account_setup", "AccountResponse", body="CreateAccountRequest", errors=(400, 401, 403, 409)
    ),
    "get": _op("Get an account with its details", "account_setup", "AccountDetailsResponse"),
    "patch": _op("Update an account's name or limits", "account_setup", "AccountResponse", body="AccountUpdateRequest"),
    "delete": _op("Delete an account without functions (admin key only)", "account_setup", None, status=204),
}
PATHS[A + "/{ncaId}/clients/associate"] = {
    "patch": _op("Associate an admin client id", "account_setup", "AccountResponse", body="ClientRequest", errors=(400, 401, 403, 404, 409))
}
PATHS[A + "/{ncaId}/clients/disassociate"] = {
    "patch": _op("Disassociate an admin client id", "account_setup", "AccountResponse", body="ClientRequest")
}
PATHS["/v2/nvcf/clients/{clientId}"] = {"get": _op("The account of an admin client id", "account_setup", "ClientDetailsResponse")}
PATHS[A + "/{ncaId}/deployments"] = {"get": _op("The account's deployments (super admin)", "admin:deploy_function", "DeploymentsResponse")}

TWINNED = (
    "/v2/nvcf/functions",
    "/v2/nvcf/metadata/",
    "/v2/nvcf/deployments",
    "/v2/nvcf/queues/",
    "/v2/nvcf/authorizations/",
    "/v2/nvcf/secrets/",
    "/v2/nvcf/ratelimit/",
    "/v2/nvcf/assets",
)
for _path, _ops in list(PATHS.items()):  # the super-admin twins (spec 11.2): admin:<scope>, the key's own account
    if _path.startswith(TWINNED):
        PATHS[A + "/{ncaId}" + _path[len("/v2/nvcf") :]] = {
            m: {
                **op,
                "summary": op["summary"] + " (in account ncaId; admin:<scope>)",
                "x-required-scope": "admin:" + str(op.get("x-required-scope")),
                # a twin also answers 404 for an unknown account, 403 for a key of another one
                "responses": {**op["responses"], **{str(c): _error(c) for c in (403, 404) if str(c) not in op["responses"]}},
            }
            for m, op in _ops.items()
        }

KEY_HEADERS = [
    {"name": "Key-Owner-Id", "in": "header", "required": True, "schema": STR, "description": "the owner of the keys"},
    {
        "name": "Key-Issuer-Id",
        "in": "header",
        "required": True,
        "schema": STR,
        "description": "nvidia-cloud-functions-ncp-service-id-aketm",
    },
    {"name": "Key-Issuer-Service", "in": "header", "schema": STR, "description": "sent by NVCF's docs and CLI; not read"},
]

for _path, _ops in PATHS.items():  # path parameters, from the template itself
    _names = [seg[1:-1] for seg in _path.split("/") if seg.startswith("{")]
    for _op_doc in _ops.values():
        if _names:
            _op_doc["parameters"] = [PARAMS[n] for n in _names] + _op_doc.get("parameters", [])
        if _path.startswith("/v1/keys"):
            _op_doc["parameters"] = _op_doc.get("parameters", []) + KEY_HEADERS

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "fngate management API",
        "version": "0.1.0",
        "description": "NVCF-compatible management API. Errors are application/problem+json; null fields are left out.",
    },
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
}


@routes.get("/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)
