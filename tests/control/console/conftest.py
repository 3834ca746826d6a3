"""A real `fngate serve` with the samples, and Debian's Chromium driven by Selenium
through chromium-driver (`make test` installs both with apt when missing, as root).

    console_serve   module-wide ServeProcess with the three samples ACTIVE
    browser         a headless Chromium (one per test), with helpers to wait and take
                    screenshots into the test's tmp dir (and into $FNGATE_SCREENSHOTS
                    when set, which is how docs/console.png is made)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServeProcess, start_serve

CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    found = shutil.which(name)
    return found or next((p for p in paths if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def console_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    sp = start_serve(tmp_path_factory.mktemp("console") / "fngate", samples=True)
    deadline = time.monotonic() + 90
    while "fngate: sample functions:" not in sp.output():
        assert sp.proc.poll() is None and time.monotonic() < deadline, sp.output()
        time.sleep(0.2)
    yield sp
    sp.stop()


class Browser:
    def __init__(self, driver: Any, shots: Path, base: str) -> None:
        self.driver = driver
        self.shots = shots
        self.base = base
        self.taken: list[Path] = []

    def open(self, path: str = "/console/") -> None:
        self.driver.get(self.base + path)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except Exception:  # the element is being re-rendered (stale) or not there yet
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                self.shot("timeout")
                banner = self.driver.execute_script("return document.getElementById('error').textContent")
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; error banner: {banner!r}")
            time.sleep(interval)

    def login(self, key: str) -> None:
        self.open()
        self.wait(lambda: self.css("#login-key").is_displayed(), "the login form")
        self.css("#login-key").send_keys(key)
        self.css("#login-submit").click()

    def error(self) -> str:
        box = self.css("#error")
        return box.text if box.is_displayed() else ""

    def shot(self, name: str) -> Path:
        path = self.shots / f"{len(self.taken):02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.taken.append(path)
        target = os.environ.get("FNGATE_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / f"{name}.png")
        return path


@pytest.fixture
def browser(tmp_path: Path, console_serve: ServeProcess) -> Iterator[Browser]:
    driver_path, chromium = _first(CHROMEDRIVER, "chromedriver"), _first(CHROMIUM, "chromium")
    if driver_path is None or chromium is None:
        pytest.skip(
            "chromium and chromium-driver are not installed (Debian: apt-get install chromium chromium-driver; `make test` does this as root)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path, log_output=str(tmp_path / "chromedriver.log")), options=options)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, shots, console_serve.api_url)
    finally:
        driver.quit()
