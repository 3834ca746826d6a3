"""The console's routes on the management API: static files, the metrics endpoint's auth
and filtering, the invocation relay's refusals (its streaming runs against a real gateway
in tests/e2e/test_console_serve.py and the browser test)."""

from __future__ import annotations

import re

from fngate.control.api.console import LINKS

from .conftest import EXAMPLE_FUNCTION


async def test_static_files_with_a_same_origin_policy(api) -> None:
    resp = await api.client.get("/console", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == "/console/"
    index = await api.client.get("/console/")
    assert index.status == 200 and index.content_type == "text/html"
    csp = index.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    html = await index.text()
    for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):  # everything the page loads is served here
        got = await api.client.get("/console/" + ref)
        assert got.status == 200, ref
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in html  # no inline script: the CSP would block it
    for name in ("../app.py", "%2e%2e/app.py", "nothing.js", "..%2Fapi%2Fapp.py"):
        assert (await api.client.get("/console/" + name)).status == 404, name


async def test_the_key_stays_out_of_urls_and_values_go_in_as_text(api) -> None:
    js = await (await api.client.get("/console/app.js")).text()
    assert "sessionStorage" in js and "localStorage" not in js
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink  # API values are set as text, never parsed as markup
    assert not re.search(r"[?&](key|token|apikey)=", js, re.IGNORECASE)


async def test_metrics_need_a_key_with_a_list_scope_and_show_only_its_functions(api) -> None:
    assert (await api.problem("GET", "/v1/console/metrics", key=None, status=401))["detail"] == "Missing Authorization header"
    invoke_only = await api.key("invoke_function")
    denied = await api.problem("GET", "/v1/console/metrics", key=invoke_only, status=403)
    assert "list_functions" in denied["detail"]
    mine = await api.create_function()
    other = await api.create_function(name="other")
    narrow = await api.key("list_functions", resources=[{"type": "function", "id": f"{mine['id']}/*"}])
    seen = await api.call("GET", "/v1/console/metrics", key=narrow)
    assert list(seen["functions"]) == [mine["id"]]
    assert seen["functions"][mine["id"]] == {"name": EXAMPLE_FUNCTION["name"], "versions": [mine["versionId"]], "points": []}
    assert seen["gateway"] == {"up": False, "error": "the gateway is not running yet", "points": []}
    everything = await api.call("GET", "/v1/console/metrics")
    assert set(everything["functions"]) == {mine["id"], other["id"]}


async def test_invoke_relay_refuses_before_reaching_a_gateway(api) -> None:
    fn = await api.create_function()
    url = f"/v1/console/invoke/{fn['id']}"
    assert (await api.problem("POST", url, key=None, status=401))["detail"] == "Missing Authorization header"
    assert (await api.problem("POST", url, key="nvapi-unknown", status=403))["detail"] == "Authorization failed"
    for path in ("//evil.example/x", "http://evil.example/", "/a b", "/x\r\nHost: y"):
        problem = await api.problem("POST", url, params={"path": path}, status=400)
        assert "origin-form path" in problem["detail"], path
    assert "UUID" in (await api.problem("POST", url, params={"version": "nope"}, status=400))["detail"]
    assert "Failed to convert" in (await api.problem("POST", "/v1/console/invoke/not-a-uuid", status=400))["detail"]
    gone = await api.problem("POST", url, params={"path": "/echo"}, status=502)
    assert gone["detail"] == "The invocation gateway is not running yet"
    api.client.app[LINKS].gateway_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    refused = await api.problem("POST", url, params={"path": "/echo"}, status=502)
    assert refused["detail"].startswith("Cannot reach the invocation gateway")
