"""The web console in Debian's Chromium against a real `fngate serve` with the samples.

Short (make test): log in, the three samples are ACTIVE, one SSE invocation whose tokens
arrive one by one with nvcf-reqid/nvcf-status shown. Full (slow): deploy, scale and undeploy
a function from the page and watch its instances change; live charts; keys; a key
without a scope sees the API's 403 message.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.serve_api import ServeApi

from .conftest import Browser

SAMPLES = ("echo", "grpc-echo", "llm", "sse")


def _statuses(browser: Browser) -> dict[str, str]:
    rows = browser.all("#function-table tr[data-function]")
    return {r.get_attribute("data-function"): r.find_element("css selector", "[data-status]").get_attribute("data-status") for r in rows}


def _open_function(browser: Browser, name: str) -> None:
    browser.open("/console/#/functions")
    browser.wait(lambda: _statuses(browser).get(name), f"{name} in the list")
    browser.css(f'tr[data-function="{name}"] a.fn-link').click()
    browser.wait(lambda: browser.all("#invoke-submit"), f"the page of {name}")


def _invoke_sse(browser: Browser) -> None:
    body = browser.css("#invoke-body")
    body.clear()
    body.send_keys('{"messages": [{"role": "user", "content": "hi"}], "stream": true, "tokens": 6, "interval": 0.25}')
    browser.css("#invoke-submit").click()
    seen: list[str] = []

    def finished() -> bool:
        text = browser.css("#invoke-tokens").text if browser.all("#invoke-tokens") else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        return browser.css("#invoke-out").get_attribute("data-done") == "1"

    browser.wait(finished, "the stream to end", timeout=30, interval=0.05)
    assert browser.css("#invoke-status").text == "200"
    assert browser.css("#invoke-h-nvcf-status").text == "fulfilled"
    assert len(browser.css("#invoke-h-nvcf-reqid").text) == 36
    assert browser.css("#invoke-tokens").text == "tok0tok1tok2tok3tok4tok5"
    assert len(browser.all("#invoke-events li.sse-event")) == 7  # six tokens and [DONE]
    assert len(seen) >= 3, f"tokens should show up as they arrive, not at once: {seen}"


def test_login_list_and_one_sse_invocation(browser: Browser, console_serve) -> None:
    browser.login("nvapi-not-a-key")  # refused at the door, with the API's own words
    browser.wait(lambda: "403 Forbidden: Authorization failed" in browser.error(), "the refusal")
    assert browser.css("#login").is_displayed() and browser.driver.execute_script("return sessionStorage.length") == 0
    browser.login(console_serve.admin_key)
    browser.wait(lambda: _statuses(browser) == dict.fromkeys(SAMPLES, "ACTIVE"), "the four samples ACTIVE", timeout=60)
    assert "nvapi" not in browser.driver.current_url and console_serve.admin_key not in browser.driver.current_url
    stored = browser.driver.execute_script("return [sessionStorage.getItem('fngate.console.key'), localStorage.length, document.cookie]")
    assert stored == [console_serve.admin_key, 0, ""]
    browser.shot("functions")
    _open_function(browser, "sse")
    _invoke_sse(browser)
    browser.driver.execute_script("document.getElementById('fn-invoke').scrollIntoView()")
    browser.shot("sse-invoke")


@pytest.mark.slow
def test_deploy_scale_undeploy_charts_and_keys(browser: Browser, console_serve) -> None:
    api = ServeApi(console_serve)
    fid, _ = api.create("console-flow")
    browser.login(console_serve.admin_key)
    browser.wait(lambda: _statuses(browser).get("console-flow") == "INACTIVE", "the new function, INACTIVE")
    _open_function(browser, "console-flow")

    # deploy from the page: min 1, max 2
    browser.wait(lambda: browser.all("#deploy-form"), "the deploy form")
    for field, value in (("#deploy-min", "1"), ("#deploy-max", "2")):
        browser.css(field).clear()
        browser.css(field).send_keys(value)
    browser.css("#deploy-submit").click()
    browser.wait(lambda: len(browser.all('#instance-table tr[data-instance-status="ACTIVE"]')) == 1, "one ready instance", timeout=60)
    assert browser.css("#fn-head [data-status]").get_attribute("data-status") == "ACTIVE"
    browser.shot("deployed")

    # scale: minInstances 2 -> a second instance appears
    spec_min = browser.css("input[data-scale-min]")
    spec_min.clear()
    spec_min.send_keys("2")
    browser.css(".scale-submit").click()
    browser.wait(lambda: len(browser.all('#instance-table tr[data-instance-status="ACTIVE"]')) == 2, "two ready instances", timeout=60)
    assert browser.wait(lambda: "2 .. 2" in browser.css("#deployment-table").text, "the new min/max")

    # live charts fill from traffic through the gateway
    for _ in range(20):
        assert api.invoke(fid).status_code == 200
    api.invoke(fid, "/echo?status=503")
    browser.wait(lambda: int(browser.css('[data-legend="rps"]').get_attribute("data-points") or 0) >= 2, "request-rate points", timeout=30)
    browser.wait(lambda: "503" in browser.css('[data-legend="errors"]').text, "the 503 in errors by status", timeout=30)
    browser.wait(lambda: "ready instances: 2" in browser.css('[data-legend="ready"]').text, "two ready instances charted")
    browser.driver.execute_script("window.scrollTo(0, 0)")
    browser.shot("console")

    # graceful undeploy
    browser.css("#undeploy").click()
    browser.wait(lambda: browser.css("#fn-head [data-status]").get_attribute("data-status") == "INACTIVE", "INACTIVE", timeout=60)
    browser.wait(lambda: browser.all("#instances-none"), "no instances left", timeout=60)

    # GPU inventory, deployments and queues views render from the API
    browser.open("/console/#/gpus")
    browser.wait(lambda: "NCP.GPU.L40S_1x" in browser.css("#gpu-table").text, "the GPU inventory")
    browser.open("/console/#/queues")
    browser.wait(lambda: {"echo", "sse"} <= {r.get_attribute("data-queue") for r in browser.all("#queue-table tr[data-queue]")}, "queues")

    # keys: create one with a single scope, its value shown once and masked in the list
    browser.open("/console/#/keys")
    browser.wait(lambda: browser.all("#key-form"), "the key form")
    for box in browser.all("input[data-scope]"):
        if box.is_selected() != (box.get_attribute("data-scope") == "invoke_function"):
            box.click()
    browser.css("#key-submit").click()
    value = browser.wait(lambda: browser.css("#new-key-value").text, "the new key's value")
    assert value.startswith("nvapi-") and len(value) > 60
    masked = browser.wait(lambda: [m.text for m in browser.all("#key-table code.masked")], "the key list")
    assert value not in masked and any(m.endswith(value[-3:]) and "*" in m for m in masked)
    browser.shot("keys")

    # a key without list_functions logs in and sees the API's 403 detail, not a broken page
    browser.css("#logout").click()
    browser.login(value)
    browser.wait(lambda: "403" in browser.error(), "the 403 banner")
    assert "API key lacks the required scope: list_functions or list_functions_details" in browser.error()
    browser.shot("forbidden")

    # revoke it again from the admin session
    browser.css("#logout").click()
    browser.login(console_serve.admin_key)
    browser.open("/console/#/keys")
    browser.wait(lambda: browser.all("#key-table button.revoke"), "the revoke button")
    browser.css("#key-table button.revoke").click()
    browser.wait(lambda: not browser.all("#key-table"), "the key gone")
    gone = httpx.get(f"{console_serve.api_url}/v2/nvcf/functions", headers={"Authorization": f"Bearer {value}"})
    assert gone.status_code == 403 and gone.json()["detail"] == "Authorization failed"
