"""LLM functions on the management API (issue 18): `functionType: "LLM"` and `models[].llmConfig`
accepted, checked with NVCF's messages, stored, returned, kept consistent across versions as
NVCF does, and published in the routing snapshot the LLM gateway reads."""

from __future__ import annotations

import orjson
import pytest

from fngate.control import records
from fngate.control.publisher import RoutingPublisher
from fngate.proxy.routing.snapshot import RoutingTable

from .conftest import ADMIN_KEY, EXAMPLE_FUNCTION

CHAT = "/v1/chat/completions"
LLM_FUNCTION = {
    "name": "llama",
    "inferenceUrl": "/",
    "containerImage": "nvcr.io/org/llm:1.0",
    "functionType": "LLM",
    "models": [
        {
            "name": "meta/llama-3",
            "llmConfig": {"uris": [CHAT, "/v1/responses"], "tokenRateLimit": "1000-S,50000-M", "routingMethod": "round-robin"},
        },
        {"name": "embed", "llmConfig": {"uris": ["/v1/embeddings"]}},
    ],
}


def path(fn: dict) -> str:
    return f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"


def llm(*models: dict, **extra) -> dict:
    return {**LLM_FUNCTION, "models": list(models), **extra}


def model(name: str = "m", **cfg) -> dict:
    return {"name": name, "llmConfig": {"uris": [CHAT], **cfg}}


async def test_an_llm_function_is_stored_and_returned_with_its_models(api):
    body = llm(*LLM_FUNCTION["models"], functionType="llm")  # enums in any case, as NVCF's Jackson
    body["models"][1] = {**body["models"][1], "colour": "blue", "llmConfig": {**body["models"][1]["llmConfig"], "extra": 1}}
    fn = await api.create_function(body)
    assert fn["functionType"] == "LLM"
    expected = [LLM_FUNCTION["models"][0], {"name": "embed", "llmConfig": {"uris": ["/v1/embeddings"]}}]  # unknown fields dropped
    assert fn["models"] == expected
    got = (await api.call("GET", path(fn)))["function"]
    assert got["models"] == expected and got["functionType"] == "LLM"
    [listed] = (await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions"))["functions"]
    assert listed["models"] == expected
    stored = (await api.store.get(records.FUNCTIONS, records.version_key(fn["id"], fn["versionId"]))).value
    assert stored["models"] == expected


@pytest.mark.parametrize(
    "method",
    [
        "power-of-two",
        "wait-and-widen",
        "round-robin",
        "random",
        "pulsar",
        "pulsar-wait-and-widen",
        "groq-multiregion",
        "pulsar-multiregion",
    ],
)
async def test_every_router_algorithm_is_accepted_in_the_routers_spellings(api, method):
    for spelling in (method, method.upper().replace("-", "_")):
        fn = await api.create_function(llm(model(routingMethod=spelling)))
        assert fn["models"][0]["llmConfig"]["routingMethod"] == spelling  # stored as sent, as NVCF


ROUTING_MESSAGE = (
    "Invalid request: 'llmConfig.routingMethod' for model 'm' is invalid; supported values are [power-of-two, wait-and-widen, "
    "round-robin, random, pulsar, pulsar-wait-and-widen, groq-multiregion, pulsar-multiregion]"
)
RATE_MESSAGE = (
    "Invalid request: 'llmConfig.tokenRateLimit' for model 'm' is invalid; expected comma-separated '<positiveInteger>-<unit>' "
    "entries with unit in [S, M, H, D, W] (for example '100000-S' or '10-M,5-S')"
)
BAD_LLM_BODIES = [
    (llm(), "Invalid request: 'models' must be specified when functionType is LLM"),
    ({**LLM_FUNCTION, "models": None}, "Invalid request: 'models' must be specified when functionType is LLM"),
    (llm({"name": "m"}), "Invalid request: LLM function models must specify 'llmConfig'"),
    (llm({"name": "m", "version": "1", "uri": "s3://m"}), "Invalid request: LLM function models must specify 'llmConfig'"),
    (llm({"name": "m", "llmConfig": {}}), "Invalid request: LLM function models must specify non-empty 'llmConfig.uris'"),
    (llm({"name": "m", "llmConfig": {"uris": []}}), "Invalid request: LLM function models must specify non-empty 'llmConfig.uris'"),
    (llm(model(), model()), "Invalid request: duplicate model names are not allowed in 'models'"),
    (llm(model(routingMethod="round_robin_x")), ROUTING_MESSAGE),
    (llm(model(routingMethod="least-loaded")), ROUTING_MESSAGE),
    (llm(model(tokenRateLimit="100")), RATE_MESSAGE),
    (llm(model(tokenRateLimit="0-S")), RATE_MESSAGE),
    (llm(model(tokenRateLimit="10-S,5-S")), RATE_MESSAGE),  # no unit twice
    (llm(model(tokenRateLimit="10-Y")), RATE_MESSAGE),
    (llm(model(tokenRateLimit="010-M")), RATE_MESSAGE),
    (
        {**EXAMPLE_FUNCTION, "models": [{"name": "m", "llmConfig": {"uris": [CHAT]}}]},
        "Invalid request: non-LLM function models must specify both 'version' and 'uri'",
    ),
    ({**EXAMPLE_FUNCTION, "llmInvocationConfig": {"priority": {"defaultPriority": 1}}}, "Only LLM functions support llmInvocationConfig"),
    (
        llm({"name": "m", "llmConfig": {"uris": "/v1/chat/completions"}}),
        "Validation failed: field 'models[0].llmConfig.uris' must be an array of strings",
    ),
    (llm(model(tokenRateLimit=10)), "Validation failed: field 'models[0].llmConfig.tokenRateLimit' must be a string"),
]


@pytest.mark.parametrize("body,detail", BAD_LLM_BODIES, ids=[f"{i}" for i in range(len(BAD_LLM_BODIES))])
async def test_bad_llm_bodies_get_nvcfs_message_and_store_nothing(api, body, detail):
    p = await api.problem("POST", "/v2/nvcf/functions", body, status=400)
    assert p["detail"] == detail
    assert await api.store.list(records.FUNCTIONS) == []


async def test_token_rate_limits_take_every_unit_and_several_entries(api):
    for limit in ("100000-S", "10-M,5-S", "1-S, 2-M, 3-H, 4-D, 5-W", ""):
        fn = await api.create_function(llm(model(tokenRateLimit=limit)))
        assert fn["models"][0]["llmConfig"]["tokenRateLimit"] == limit


async def test_a_version_of_an_llm_function_must_stay_llm_and_keep_uris_and_tokenizer(api):
    fn = await api.create_function(llm(model(tokenizer="tok-a")))
    versions = f"/v2/nvcf/functions/{fn['id']}/versions"
    p = await api.problem("POST", versions, {**EXAMPLE_FUNCTION}, status=400)  # functionType defaults to DEFAULT
    assert p["detail"] == (
        f"Function id '{fn['id']}': all versions must share the same functionType; existing version '{fn['versionId']}' is 'LLM'"
    )
    p = await api.problem("POST", versions, llm({"name": "m", "llmConfig": {"uris": ["/v1/embeddings"], "tokenizer": "tok-a"}}), status=400)
    assert (
        p["detail"] == f"Function id '{fn['id']}', version '{fn['versionId']}': 'llmConfig.uris' for model 'm' must match existing versions"
    )
    p = await api.problem("POST", versions, llm(model(tokenizer="tok-b")), status=400)
    assert p["detail"] == (
        f"Function id '{fn['id']}', version '{fn['versionId']}': 'llmConfig.tokenizer' for model 'm' must match existing versions"
    )
    assert len(await api.store.list(records.FUNCTIONS)) == 1
    # and a DEFAULT function takes no LLM version
    plain = await api.create_function()
    p = await api.problem("POST", f"/v2/nvcf/functions/{plain['id']}/versions", llm(model()), status=400)
    assert p["detail"].endswith(f"existing version '{plain['versionId']}' is 'DEFAULT'")


async def test_a_new_version_shares_its_limits_and_inherits_the_invocation_config(api):
    priority = {"priority": {"defaultPriority": 5}}
    first = await api.create_function(
        llm(model(tokenRateLimit="1-M", routingMethod="random"), model("other"), llmInvocationConfig=priority)
    )
    second = await api.call(
        "POST", f"/v2/nvcf/functions/{first['id']}/versions", llm(model(tokenRateLimit="7-M", routingMethod="pulsar"), model("other"))
    )
    second = second["function"]
    assert second["llmInvocationConfig"] == priority  # omitted: inherited from the versions before
    for fn in (first, second):
        got = (await api.call("GET", path(fn)))["function"]
        assert got["models"][0]["llmConfig"] == {"uris": [CHAT], "tokenRateLimit": "7-M", "routingMethod": "pulsar"}
        assert got["models"][1]["llmConfig"] == {"uris": [CHAT]}
        assert got["llmInvocationConfig"] == priority


async def test_model_updates_change_every_version_with_nvcfs_rules(api):
    first = await api.create_function(llm(model(tokenRateLimit="1-M")))
    second = (await api.call("POST", f"/v2/nvcf/functions/{first['id']}/versions", llm(model(tokenRateLimit="1-M"))))["function"]
    got = await api.call(
        "PUT", path(first), {"modelUpdates": [{"modelName": "m", "llmConfig": {"tokenRateLimit": "9-M", "routingMethod": "pulsar"}}]}
    )
    assert got["function"]["models"][0]["llmConfig"] == {"uris": [CHAT], "tokenRateLimit": "9-M", "routingMethod": "pulsar"}
    for fn in (first, second):
        assert (await api.call("GET", path(fn)))["function"]["models"][0]["llmConfig"]["tokenRateLimit"] == "9-M"
    fid, vid = first["id"], first["versionId"]
    for body, status, detail in (
        (
            {"modelUpdates": [{"modelName": "m", "llmConfig": {}}]},
            400,
            "Invalid request: at least one of 'tokenRateLimit' or 'routingMethod' must be specified",
        ),
        (
            {"modelUpdates": [{"modelName": "m"}]},
            400,
            "Invalid request: at least one of 'tokenRateLimit' or 'routingMethod' must be specified",
        ),
        (
            {
                "modelUpdates": [
                    {"modelName": "m", "llmConfig": {"tokenRateLimit": "1-S"}},
                    {"modelName": "m", "llmConfig": {"tokenRateLimit": "2-S"}},
                ]
            },
            400,
            "Invalid request: duplicate model names are not allowed in 'modelUpdates'",
        ),
        (
            {"modelUpdates": [{"modelName": "x", "llmConfig": {"tokenRateLimit": "1-S"}}]},
            404,
            f"Function id '{fid}', version '{vid}': Model 'x' not found",
        ),
        ({"modelUpdates": [{"modelName": "m", "llmConfig": {"tokenRateLimit": "fast"}}]}, 400, RATE_MESSAGE),
        ({"modelUpdates": [{"modelName": "m", "llmConfig": {"routingMethod": "sticky"}}]}, 400, ROUTING_MESSAGE),
        ({}, 400, "Invalid request: at least one of 'tags', 'rateLimit', 'modelUpdates', or 'llmInvocationConfig' must be specified"),
        (
            {"modelUpdates": []},
            400,
            "Invalid request: at least one of 'tags', 'rateLimit', 'modelUpdates', or 'llmInvocationConfig' must be specified",
        ),
    ):
        p = await api.problem("PUT", path(first), body, status=status)
        assert p["detail"] == detail
    assert (await api.call("GET", path(second)))["function"]["models"][0]["llmConfig"]["tokenRateLimit"] == "9-M"  # nothing changed


async def test_llm_settings_on_a_default_function_are_refused(api):
    fn = await api.create_function()
    p = await api.problem("PUT", path(fn), {"modelUpdates": [{"modelName": "m", "llmConfig": {"routingMethod": "random"}}]}, status=400)
    assert p["detail"] == f"Function id '{fn['id']}', version '{fn['versionId']}': Only LLM functions support model config updates"
    p = await api.problem("PUT", path(fn), {"llmInvocationConfig": {"priority": {"defaultPriority": 1}}}, status=400)
    assert p["detail"] == "Only LLM functions support llmInvocationConfig"


async def test_llm_fields_reach_the_routing_snapshot_and_survive_the_wire(api):
    fn = await api.create_function(LLM_FUNCTION)
    plain = await api.create_function()
    publisher = RoutingPublisher(api.store, admin_key=ADMIN_KEY)
    table = await publisher.build()
    route = table.functions[fn["id"]][fn["versionId"]]
    assert route.function_type == "LLM"
    # NVCF's names, canonical JSON: what proxy/llm/ parses (name -> uris, tokenRateLimit, routingMethod)
    assert orjson.loads(route.llm_models) == [{"name": m["name"], "llmConfig": m["llmConfig"]} for m in LLM_FUNCTION["models"]]
    other = table.functions[plain["id"]][plain["versionId"]]
    assert (other.function_type, other.llm_models) == ("DEFAULT", "")
    by_fid = {r["function_id"]: r for r in orjson.loads(table.to_json())["routes"]}
    assert by_fid[fn["id"]]["llm_models"] == route.llm_models
    assert "llm_models" not in by_fid[plain["id"]] and "function_type" not in by_fid[plain["id"]]  # older gateways read it as before
    back = RoutingTable.from_json(table.to_json())
    assert back == table and back.functions[fn["id"]][fn["versionId"]].llm_models == route.llm_models
    # a model update is a delta for that function alone
    await api.call("PUT", path(fn), {"modelUpdates": [{"modelName": "embed", "llmConfig": {"tokenRateLimit": "5-S"}}]})
    newer = await publisher.build()
    delta = orjson.loads(table.delta_json(newer))
    assert [r["function_id"] for r in delta["routes"]] == [fn["id"]]
    applied = table.apply_json(table.delta_json(newer))
    assert applied is not None
    models = orjson.loads(applied.functions[fn["id"]][fn["versionId"]].llm_models)
    assert models[1] == {"name": "embed", "llmConfig": {"uris": ["/v1/embeddings"], "tokenRateLimit": "5-S"}}
