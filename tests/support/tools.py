"""Real binaries the integration tests start. Missing locally: the test is
skipped and says what to install. Missing under CI (``CI=true``): the test
fails, so a green CI run never means "not tested"."""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str, package: str) -> str:
    """The path of ``binary``; skip (fail under CI) when it is not installed."""
    path = shutil.which(binary)
    if path:
        return path
    why = f"{binary} is not installed (apt-get install -y {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}: CI must run this test")
    pytest.skip(why)
