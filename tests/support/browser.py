"""A real headless Chromium driven by selenium, for the dashboard's tests.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/run``):
the driver and browser are named, so selenium never tries to download one;
a fresh profile per browser; background networking off so the only
requests are the page's own. Performance logging is on: ``requests(driver)``
lists every URL the page asked for. Screenshots go to ``artifacts_dir()``
(``$SLUICE_TEST_ARTIFACTS`` or ``build/test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time
from contextlib import contextmanager

from tests.support.tools import require

ROOT = pathlib.Path(__file__).resolve().parents[2]


def artifacts_dir() -> pathlib.Path:
    out = pathlib.Path(os.environ.get("SLUICE_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium; skipped (failed under CI) where it is not installed."""
    binary = require("chromium", "chromium")
    driver_path = require("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="sluice-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--disable-default-apps", "--disable-extensions", f"--user-data-dir={profile}",
                    f"--window-size={width},{height}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


def requests(driver) -> list[dict]:
    """Every request the browser sent since the last call: [{url, method}]."""
    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            req = msg["params"]["request"]
            out.append({"url": req["url"], "method": req["method"]})
    return out


def wait_for(pred, timeout: float = 10.0, every: float = 0.05):
    """``pred()``'s first truthy value within ``timeout`` seconds; AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:   # noqa: BLE001 - a page mid-swap raises stale-element errors; look again
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def screenshot(driver, name: str) -> pathlib.Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
