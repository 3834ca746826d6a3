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

routes = web.RouteTableDef()


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str] | None = None, **props: Any) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _arr(items: dict) -> dict:
    return {"type": "array", "items": items}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
ANY_OBJ = {"type": "object"}
STRS = _arr(STR)
STATUS = {"type": "string", "enum": [s.value for s in State]}

GPU_SPEC_PROPS = dict(
    gpuSpecificationId=STR,
    gpu=STR,
    instanceType=STR,
    minInstances=INT,
    maxInstances=INT,
    maxRequestConcurrency=INT,
    backend=STR,
    clusters=STRS,
    regions=STRS,
    attributes=STRS,
    availabilityZones=STRS,
    configuration=ANY_OBJ,
    preferredOrder=INT,
    storage=STR,
    systemMemory=STR,
    gpuMemory=STR,
    cpuArch=STR,
    os=STR,
    driverVersion=STR,
    helmValidationPolicy=ANY_OBJ,
    autoscalingConfiguration=ANY_OBJ,
)

SCHEMAS: dict[str, dict] = {
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
        models=_arr(ANY_OBJ),
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
    "UpdateFunctionRequest": _obj(tags=STRS, rateLimit=ANY_OBJ, llmInvocationConfig=ANY_OBJ, modelUpdates=_arr(ANY_OBJ)),
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
        models=_arr(ANY_OBJ),
        resources=_arr(ANY_OBJ),
        rateLimit=ANY_OBJ,
        createdAt=STR,
        activeInstances=_arr(_ref("Instance")),
        helmChart=STR,
        helmChartServiceName=STR,
        llmInvocationConfig=ANY_OBJ,
        telemetries=ANY_OBJ,
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
    "CreateKeyRequest": _obj(
        ["scopes"],
        scopes=_arr({"type": "string", "enum": list(SCOPES)}),
        description=STR,
        functionIds=STRS,
        expiresAt={"type": "string", "format": "date-time"},
        ttlSeconds=INT,
    ),
    "Key": _obj(
        ["keyId", "scopes", "createdAt"], keyId=STR, description=STR, scopes=STRS, functionIds=STRS, expiresAt=STR, createdAt=STR, ncaId=STR
    ),
    "CreatedKey": _obj(
        ["key", "value"], key=_ref("Key"), value={"type": "string", "description": "the API key; shown only in this response"}
    ),
    "KeyResponse": _obj(["key"], key=_ref("Key")),
    "KeysResponse": _obj(["keys"], keys=_arr(_ref("Key"))),
}

PARAMS = {
    name: {"name": name, "in": "path", "required": True, "schema": STR}
    for name in ("functionId", "functionVersionId", "deploymentId", "gpuSpecificationId", "requestId", "keyId")
}
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
}


def _op(
    summary: str,
    scope: str | None,
    ok: str | None,
    *,
    body: str | None = None,
    status: int = 200,
    query: tuple[str, ...] = (),
    errors: tuple[int, ...] = (400, 401, 403, 404),
) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if scope:
        op["security"] = [{"bearer": []}]
        op["x-required-scope"] = scope
    if query:
        op["parameters"] = [QUERY[q] for q in query]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        errors = tuple(sorted({*errors, 413}))
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

PATHS: dict[str, dict[str, dict]] = {
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
            "Create an API key (its value is returned only here)",
            "manage_keys",
            "CreatedKey",
            body="CreateKeyRequest",
            errors=(400, 401, 403),
        ),
        "get": _op("List API keys (never their values)", "manage_keys", "KeysResponse", errors=(401, 403)),
    },
    "/v1/keys/{keyId}": {
        "get": _op("Get an API key's metadata", "manage_keys", "KeyResponse", errors=(401, 403, 404)),
        "delete": _op("Revoke an API key", "manage_keys", None, status=204, errors=(400, 401, 403, 404)),
    },
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document"}}}},
}

for _path, _ops in PATHS.items():  # path parameters, from the template itself
    _names = [seg[1:-1] for seg in _path.split("/") if seg.startswith("{")]
    for _op_doc in _ops.values():
        if _names:
            _op_doc["parameters"] = [PARAMS[n] for n in _names] + _op_doc.get("parameters", [])

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
