"""``sluice demo`` as a newcomer runs it: notifications arrive at the demo's own
loopback receiver and are printed as they come (nothing goes to the internet),
it ends by printing the dashboard's URL, and in a terminal it keeps serving the
dashboard until Ctrl-C."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_demo_shows_notifications_and_serves_its_dashboard_until_ctrl_c(tmp_path):
    env = {**os.environ, "SLUICE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "demo", "--serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not any("serving the dashboard until Ctrl-C" in line for line in out):
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, "".join(out)
            try:
                out.append(lines.get(timeout=min(left, 5)))
            except queue.Empty:
                pass
        text = "".join(out)
        urls = re.findall(r"dashboard: (http://127\.0\.0\.1:\d+/ui/)", text)
        assert len(urls) == 2 and urls[0] == urls[1], text   # printed at the start (live) and at the end
        # notifications of each folder's receivers, as they arrive, in each destination's format
        assert re.search(r"-> slack/bookinfo: bookinfo/reviews: promoted", text), text
        assert re.search(r"-> sluice: rolledBack bookinfo/productpage", text) or "prometheus is not installed" in text
        assert "-> teams/shop: shop/payments: rollout started" in text, text
        assert "hooks.example.com" not in text and "failed (attempt" not in text, text
        with urllib.request.urlopen(urls[0], timeout=10) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and "bookinfo" in page and "reviews" in page
        proc.send_signal(signal.SIGINT)   # Ctrl-C
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):      # it cleaned up: nothing serves any more
            urllib.request.urlopen(urls[0], timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
