"""The dashboard's overview of N releases loaded in headless Chromium
(navigation timing: request start to the end of the load event, the page's
script and stylesheet included), beside the floor of the browser loading
the very same bytes (page, script, stylesheet) from a trivial loopback
server that answers each from memory in one write. Also
the server-side cost of the first render after a new commit (cold: every
changed file parsed again, history of last changes walked).

    python bench/bench_ui.py [N ...]      (default 100 1000)

Needs ``chromium`` and ``chromium-driver`` (Debian); without them it says so
and prints no figure.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import emit, figure  # noqa: E402
from bench.genrepo import write  # noqa: E402
from reconciler.ui.server import start_dashboard  # noqa: E402

RUNS = 11
LOAD_MS = ("var t = performance.getEntriesByType('navigation')[0];"
           "return t.loadEventEnd > 0 ? t.loadEventEnd - t.requestStart : null;")


def git(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["git", "-c", "user.name=Bench", "-c", "user.email=bench@x", *args], cwd=cwd, check=True,
                   capture_output=True)


def checkout(root: pathlib.Path, n: int) -> pathlib.Path:
    work = root / f"repo-{n}"
    work.mkdir()
    write(work, n)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"{n} releases", cwd=work)
    return work


def static_server(url: str) -> ThreadingHTTPServer:
    """A trivial server of the overview's bytes and its two static files, fetched once from the
    dashboard and answered from memory in one write each, with the same content types."""
    files = {}
    for name in ("", "static/app.js", "static/app.css"):
        with urllib.request.urlopen(url + name, timeout=30) as resp:
            files["/ui/" + name] = (resp.read(), resp.headers["Content-Type"])

    class Static(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body, ctype = files.get(self.path, (b"not found", "text/plain"))
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Static)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def load_time(driver, url: str) -> float:
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ms = driver.execute_script(LOAD_MS)
        if ms is not None:
            return ms / 1000
    raise RuntimeError(f"{url} did not finish loading in 30 s")


def load_times(driver, url: str, floor_url: str) -> tuple[list[float], list[float]]:
    """Interleaved (page, floor) loads, so drift on a shared machine hits both alike; the
    first pair only warms the browser."""
    pages, floors = [], []
    for _ in range(RUNS + 1):
        floors.append(load_time(driver, floor_url))
        pages.append(load_time(driver, url))
    return pages[1:], floors[1:]


def cold_render(work: pathlib.Path, url: str, dash) -> list[float]:
    """A new commit changes one release; the next page request rebuilds from git and renders."""
    out = []
    target = next((work / "releases").glob("*/*.yaml"))
    for i in range(5):
        with target.open("a") as f:
            f.write(f"# bench edit {i}\n")
        git("commit", "-q", "-am", f"edit {i}", cwd=work)
        deadline = time.monotonic() + 10
        gen = dash.generation
        while dash.generation == gen and time.monotonic() < deadline:
            time.sleep(0.01)      # the checkout follower notices within 0.5 s; only the request is timed
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
        out.append(time.perf_counter() - t0)
    return out


def main(sizes: list[int]) -> int:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("bench_ui: chromium and chromium-driver are not installed (apt-get install -y chromium "
              "chromium-driver); no figure", file=sys.stderr)
        return 0
    from tests.support.browser import chromium
    with tempfile.TemporaryDirectory(prefix="sluice-bench-ui-") as tmp, chromium() as driver:
        root = pathlib.Path(tmp)
        for n in sizes:
            work = checkout(root, n)
            server = start_dashboard(str(work))
            try:
                urllib.request.urlopen(server.url, timeout=60).read()     # builds the cached view once
                httpd = static_server(server.url)
                try:
                    samples, floor = load_times(driver, server.url, f"http://127.0.0.1:{httpd.server_address[1]}/ui/")
                finally:
                    httpd.shutdown()
                    httpd.server_close()
                size = len(urllib.request.urlopen(server.url, timeout=30).read())
                emit(figure("dashboard page load (browser)", n, samples, floor=floor,
                            floor_name="the same bytes from a trivial server", page_bytes=size,
                            target=1.0 if n == 1000 else None))
                emit(figure("dashboard first render after a commit", n, cold_render(work, server.url, server.dashboard)))
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [100, 1000]))
