"""The read-only dashboard in a real headless Chromium (selenium), over a real
git repo made from sample-repo/ on which the controller has run real
rollouts (steps judged by a real web metric provider on loopback, a
promotion, a rollback on failed checks).

The overview lists every sample release with the phase and weight git holds;
a release page's chart has one point per weight-setting record of ``sluice
history -o json``; a new commit shows without a reload; filters work; the
page asks nothing of any non-loopback origin and never writes; untrusted
strings are shown, never run; it works behind a path-prefix proxy; ``sluice
run --listen`` serves it. Screenshots go to the artifact folder."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import yaml

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.cli.source import open_source
from reconciler.controller import Controller
from reconciler.ui import pages
from reconciler.ui.server import Dashboard, DashboardServer, start_dashboard
from tests.support import webserver
from tests.support.browser import chromium, requests, screenshot, wait_for
from tests.support.drive import T0
from tests.support.gitserver import HttpGit, clone_work, free_port, human_edit, make_bare, run

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample-repo"
pytestmark = pytest.mark.timeout(240)
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


class World:
    """A bare remote seeded from sample-repo, a person's clone, a controller on a simulated clock."""

    def __init__(self, tmp: pathlib.Path, score_url: str):
        self.score_url = score_url
        files = {p.relative_to(SAMPLE).as_posix(): p.read_text() for p in SAMPLE.rglob("*") if p.is_file()}
        settings = files["sluice.yaml"]
        # every provider on loopback: the built-in metrics' Prometheus is a closed port (checks hold),
        # the reviews canary is judged by a web provider; no notification leaves the machine
        settings = settings.replace("http://prometheus.istio-system:9090", "http://127.0.0.1:1")
        settings = settings.replace("providers:\n", f"providers:\n  synth: {{type: web, url: '{score_url}', "
                                                    f"jsonPath: $.value}}\n", 1)
        start = settings.index("notifications:")
        settings = settings[:start] + settings[settings.index("\n\n", start) + 2:]
        files["sluice.yaml"] = settings
        reviews = files["releases/bookinfo/reviews.yaml"]
        a, b = reviews.index("  analysis:\n"), reviews.index("status:\n")
        files["releases/bookinfo/reviews.yaml"] = (reviews[:a] + "  analysis:\n    metrics:\n"
                                                   "      - {name: score, provider: synth, min: 90}\n" + reviews[b:])
        self.bare = make_bare(tmp, seed=files)
        self.url = f"file://{self.bare}"
        self.human = clone_work(str(self.bare), tmp / "human")
        self.now = T0
        self.ctl = Controller(GitRepo(str(self.bare), tmp / "clone"), GitTarget(), clock=lambda: self.now)

    def tick(self):
        self.now += timedelta(seconds=61)
        report = self.ctl.run_pass()
        assert report.error is None, report.error
        return report

    def until(self, key, phase, passes=30):
        for _ in range(passes):
            if self.tick().outcomes[key].phase == phase:
                return
        raise AssertionError(f"{key} never reached {phase}")

    def status(self) -> dict[str, tuple]:
        return status_at(self.bare)


def status_at(bare, ref="main") -> dict[str, tuple]:
    """(phase, weight) of each release, straight from its file at ``ref`` of the remote."""
    out = {}
    for path in run("ls-tree", "-r", "--name-only", ref, "releases/", cwd=bare).split():
        if path.count("/") == 2 and path.endswith(".yaml"):
            doc = yaml.safe_load(run("show", f"{ref}:{path}", cwd=bare))
            st = doc.get("status") or {}
            out[f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"] = (
                st.get("phase") or "Pending", st.get("weight", 0))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    scores = webserver.Server()
    scores.routes["/score"] = (200, b'{"value": 99.5}', {})
    try:
        w = World(tmp, scores.url + "/score")
        w.until("bookinfo/reviews", "Promoted")
        w.tick()
        # a new target judged bad: failed checks, then the controller rolls it back
        human_edit(w.human, lambda d: (d / "releases/bookinfo/reviews.yaml").write_text(
            (d / "releases/bookinfo/reviews.yaml").read_text().replace("version: v2\n    image: docker.io/istio/"
                                                                        "examples-bookinfo-reviews-v2",
                                                                        "version: v3\n    image: docker.io/istio/"
                                                                        "examples-bookinfo-reviews-v3")),
                   "reviews v3 <b>bold</b> & more")
        w.tick()
        w.tick()
        scores.routes["/score"] = (200, b'{"value": 12}', {})
        w.until("bookinfo/reviews", "RolledBack")
        # untrusted text in a release: a status message a page must show, never run
        human_edit(w.human, lambda d: (d / "releases/batch/xss.yaml").write_text(
            (SAMPLE / "releases/batch/migrator.yaml").read_text().replace("migrator", "xss")
            + f"status:\n  phase: Promoted\n  weight: 100\n  message: '{XSS}'\n"), "add batch/xss")
        yield w
    finally:
        scores.close()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "cache"))   # URL clones never land in ~/.cache


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


@pytest.fixture
def dash(world):
    server = start_dashboard(world.url, every=0.3)
    try:
        yield server
    finally:
        server.stop()


def rows_in(driver) -> dict[str, tuple[str, int | None]]:
    out = {}
    for tr in driver.find_elements("css selector", "table.releases tbody tr"):
        w = tr.get_attribute("data-weight")
        out[tr.get_attribute("data-release")] = (tr.get_attribute("data-phase"), int(w) if w else None)
    return out


def history_json(world, key) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "history", key, "--repo", world.url, "-o",
                           "json"], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "SLUICE_CACHE_DIR": str(world.bare.parent / "cache")})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["records"]


# --- the browser ----------------------------------------------------------------

def test_overview_lists_every_release_with_phase_and_weight(world, dash, browser):
    browser.get(dash.url)
    shown = wait_for(lambda: rows_in(browser))
    truth = world.status()
    sample = {f"{p.parent.name}/{p.stem}" for p in (SAMPLE / "releases").glob("*/*.yaml")}
    assert sample <= set(shown) and len(sample) >= 8
    assert shown == truth
    assert shown["bookinfo/reviews"] == ("RolledBack", 0) and truth["bookinfo/details"][0] == "Progressing"
    reviews = browser.find_element("css selector", 'tr[data-release="bookinfo/reviews"]').text
    assert "RolledBack" in reviews and "v2" in reviews
    screenshot(browser, "ui-overview")


def test_release_page_chart_has_one_point_per_weight_record(world, dash, browser):
    browser.get(dash.url)
    browser.find_element("link text", "reviews").click()
    wait_for(lambda: browser.find_elements("css selector", "#chart circle.point"))
    records = history_json(world, "bookinfo/reviews")
    weighted = [r for r in records if r["weight"] is not None]
    points = browser.find_elements("css selector", "#chart circle.point")
    assert [(p.get_attribute("data-commit"), p.get_attribute("data-action"), int(p.get_attribute("data-weight")))
            for p in points] == [(r["commit"], r["action"], r["weight"]) for r in weighted]
    actions = [r["action"] for r in weighted]
    assert "promote" in actions and "rollback" in actions and "check-failed" in actions
    assert len(browser.find_elements("css selector", "#chart .mark-promotion")) == actions.count("promote")
    assert len(browser.find_elements("css selector", "#chart .mark-rollback")) == \
        actions.count("rollback") + actions.count("abort")
    # the evidence of each step, every commit with its author, the steering a person could do
    evidence = browser.find_elements("css selector", "table.evidence tbody tr")
    assert len(evidence) == sum(len(r["evidence"]) for r in records)
    cells = [[td.text for td in tr.find_elements("tag name", "td")] for tr in evidence]
    assert ["score\nGET " + world.score_url + " -> $.value", "99.5", "min 90", "1m", "pass"] in cells
    assert ["score\nGET " + world.score_url + " -> $.value", "12", "min 90", "1m", "failed"] in cells
    history = browser.find_elements("css selector", "table.history tr.record")
    assert len(history) == len(records)
    assert any("reviews v3 <b>bold</b> & more" in h.text for h in history)   # shown as text, not markup
    assert not browser.find_elements("css selector", "table.history b")
    verbs = [tr.get_attribute("data-verb") for tr in browser.find_elements("css selector", "table.steer tr[data-verb]")]
    assert verbs == []      # rolled back, no earlier revision recorded: nothing to steer, and the page says so
    assert "nothing to steer now" in browser.find_element("id", "live").text
    screenshot(browser, "ui-release-reviews")


def test_new_commit_appears_without_reload(world, dash, browser):
    browser.get(dash.url + "r/bookinfo/reviews")
    n_points = len(wait_for(lambda: browser.find_elements("css selector", "#chart circle.point")))
    browser.execute_script("window.__sameDocument = 'marker';")
    wait_for(lambda: "on" in browser.find_element("id", "live-state").get_attribute("class"))
    # a person retargets reviews; the controller starts the canary and moves it one step
    human_edit(world.human, lambda d: (d / "releases/bookinfo/reviews.yaml").write_text(
        (d / "releases/bookinfo/reviews.yaml").read_text().replace("version: v3\n", "version: v4\n")
        .replace("reviews-v3:", "reviews-v4:")), "reviews v4")
    wait_for(lambda: browser.find_element("css selector", "table.history tr.record").text.endswith("reviews v4"),
             timeout=5)
    world.tick()
    t0 = time.monotonic()
    wait_for(lambda: len(browser.find_elements("css selector", "#chart circle.point")) > n_points, timeout=5)
    assert time.monotonic() - t0 < 2.0
    assert browser.find_element("id", "live").get_attribute("data-phase") == "Progressing"
    assert browser.execute_script("return window.__sameDocument") == "marker"
    steer = {tr.get_attribute("data-verb"): tr.text for tr in browser.find_elements("css selector", "table.steer tr[data-verb]")}
    assert set(steer) == {"pause", "promote", "abort"}, steer
    assert steer["pause"].startswith("sluice pause bookinfo/reviews --push spec.paused: true")
    assert "spec.promote: v4" in steer["promote"]
    assert browser.execute_script("return window.sluiceUpdates") >= 2
    screenshot(browser, "ui-release-live-update")
    browser.get(dash.url)
    assert rows_in(browser) == world.status()


def test_filters(world, dash, browser):
    browser.get(dash.url)
    wait_for(lambda: rows_in(browser))
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("name", "ns")).select_by_value("shop")
    wait_for(lambda: "ns=shop" in browser.current_url)
    shown = wait_for(lambda: rows_in(browser))
    assert set(shown) == {k for k in world.status() if k.startswith("shop/")} and len(shown) >= 2
    Select(browser.find_element("name", "phase")).select_by_value("Promoted")
    wait_for(lambda: "phase=Promoted" in browser.current_url)
    shown = rows_in(browser)
    assert shown and set(shown) == {k for k, v in world.status().items() if k.startswith("shop/") and v[0] == "Promoted"}
    screenshot(browser, "ui-overview-filtered")
    browser.get(dash.url + "?q=view")
    assert set(rows_in(browser)) == {"bookinfo/reviews"}


def test_no_foreign_requests_no_writes_no_script_injection(world, dash, browser):
    requests(browser)    # drop what earlier tests asked for
    browser.get(dash.url)
    wait_for(lambda: rows_in(browser))
    browser.get(dash.url + "r/batch/xss")
    wait_for(lambda: browser.find_elements("css selector", "p.message"))
    assert browser.find_element("css selector", "p.message").text == XSS
    assert browser.execute_script("return window.pwned") is None
    seen = requests(browser)
    assert seen and all(urlsplit(r["url"]).hostname == "127.0.0.1" for r in seen), seen
    assert {r["method"] for r in seen} == {"GET"}
    for form in browser.find_elements("tag name", "form"):
        assert (form.get_attribute("method") or "get").lower() == "get"
    screenshot(browser, "ui-release-untrusted-text")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        req = urllib.request.Request(dash.url, data=b"x", method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 405 and err.value.headers["Allow"] == "GET, HEAD"
    with urllib.request.urlopen(dash.url, timeout=5) as resp:
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp


@contextmanager
def prefix_proxy(backend_port: int, prefix: str = "/sluice"):
    """A loopback reverse proxy serving the backend under ``prefix``: yields (its URL, a state
    whose ``broken = True`` makes it answer 502, as a proxy whose backend is gone)."""
    state = types.SimpleNamespace(broken=False)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if state.broken:
                self.send_error(502)
                return
            if not self.path.startswith(prefix + "/"):
                self.send_error(404)
                return
            conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=30)
            conn.request("GET", self.path[len(prefix):], headers={"Accept": self.headers.get("Accept", "*/*")})
            resp = conn.getresponse()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while chunk := resp.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except OSError:
                pass
            finally:
                conn.close()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{prefix}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_under_a_path_prefix(world, dash, browser):
    with prefix_proxy(dash.port) as (base, _):
        browser.get(base + "/ui")                   # redirected to ui/, relative to the prefix
        wait_for(lambda: rows_in(browser))
        assert browser.current_url == base + "/ui/"
        browser.find_element("link text", "details").click()
        wait_for(lambda: browser.current_url == base + "/ui/r/bookinfo/details")
        wait_for(lambda: "on" in browser.find_element("id", "live-state").get_attribute("class"))  # script + polls
        color = browser.find_element("tag name", "header").value_of_css_property("background-color")
        assert color == "rgba(36, 41, 47, 1)"       # the stylesheet loaded through the prefix
        browser.find_element("link text", "Sluice").click()
        wait_for(lambda: browser.current_url == base + "/ui/")
        browser.execute_script("window.__sameDocument = 'prefixed';")
        human_edit(world.human, lambda d: (d / "releases/bookinfo/ratings.yaml").write_text(
            (d / "releases/bookinfo/ratings.yaml").read_text().replace("spec:\n", "spec:\n  paused: true\n", 1)),
            "pause ratings")
        world.tick()
        wait_for(lambda: rows_in(browser) == world.status(), timeout=5)
        assert browser.execute_script("return window.__sameDocument") == "prefixed"
        screenshot(browser, "ui-overview-under-prefix")


# --- the server, without a browser ------------------------------------------------

def test_version_is_tiny_with_etag_and_idle_connections_are_closed(world):
    """Pages poll /ui/version (ETag, 304 while unchanged): no stream is held per tab, nothing
    caps clients, and a connection left half-sent or idle is closed after the timeout."""
    source = open_source(world.url)
    source.repo.sync()
    dash = Dashboard(source)
    server = DashboardServer(dash, conn_timeout=0.5).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/ui/version")
        resp = conn.getresponse()
        etag, body = resp.headers["ETag"], json.loads(resp.read())
        assert resp.status == 200 and body == {"generation": dash.generation} and etag == f'"g{dash.generation}"'
        conn.request("GET", "/ui/version", headers={"If-None-Match": etag})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (304, b"")
        dash.bump("test")
        conn.request("GET", "/ui/version", headers={"If-None-Match": etag})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["generation"] == dash.generation
        conn.close()
        # 40 clients at once (well past any old cap) all answered
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(
            urllib.request.urlopen(server.url + "version", timeout=10).status)) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert codes == [200] * 40
        # a half-sent request: closed after the connection timeout, not held for ever
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /ui/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            t0 = time.monotonic()
            assert sock.recv(100) == b""
            assert 0.4 < time.monotonic() - t0 < 5
    finally:
        server.stop()


def test_pages_escape_every_repo_string():
    row = {"namespace": "a&b", "name": '"><svg onload=x>', "strategy": "canary", "phase": "Progressing",
           "weight": 30, "step": 1, "steps": 3, "stable": "<v1>", "new": "v2'", "message": XSS, "valid": True,
           "problems": [], "lastChange": {"author": "<i>eve</i>", "at": "2026-11-22T10:00:00Z"}, "since": None,
           "waitingFor": None, "heldBy": None}
    from datetime import datetime, timezone
    _, html = pages.overview([row], root="./", now=datetime.now(timezone.utc))
    assert "<script" not in html and "<svg onload" not in html and "<i>" not in html and "<v1>" not in html
    assert "&lt;script&gt;" in html and "a&amp;b" in html and "&lt;i&gt;eve&lt;/i&gt;" in html
    assert 'href="./r/a%26b/%22%3E%3Csvg%20onload%3Dx%3E"' in html


def test_sluice_run_serves_the_dashboard(tmp_path):
    files = {p.relative_to(SAMPLE).as_posix(): p.read_bytes() for p in (SAMPLE / "releases").rglob("*") if p.is_file()}
    bare = make_bare(tmp_path, seed=files)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLUICE_WORKDIR": str(tmp_path / "work"), "SLUICE_INTERVAL": "1s",
           "SLUICE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "run", "--repo", str(bare), "--target",
                             "git", "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def page():
            try:
                with urllib.request.urlopen(base + "/ui/", timeout=5) as resp:
                    return resp.read().decode()
            except OSError:
                return ""
        def shown():
            html = page()
            rows = dict(re.findall(r'<tr data-release="([^"]+)" data-phase="([^"]+)"', html))
            tip = re.search(r'id="tip" title="([0-9a-f]{40})"', html)
            return tip and (tip.group(1), rows)

        # the controller's clone at the tip its last pass fetched or pushed, as `sluice status` reads it
        def settled():
            got = shown()
            if not got or got[0] != run("rev-parse", "main", cwd=bare).strip():
                return False
            status = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "status", f"file://{bare}", "-o",
                                     "json"], capture_output=True, text=True, env=env, timeout=60)
            phases = {f"{r['namespace']}/{r['name']}": r["phase"] for r in json.loads(status.stdout)["releases"]}
            return got[1] == phases and got
        tip, rows = wait_for(settled, timeout=60)
        assert set(rows) == {f"{p.parent.name}/{p.stem}" for p in (SAMPLE / "releases").glob("*/*.yaml")}
        assert run("log", "-1", "--format=%an", tip, cwd=bare).strip() == "Sluice"   # it wrote, the page followed
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert (resp.status, resp.headers["Location"]) == (302, "ui/")
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            req = urllib.request.Request(base + "/ui/", data=b"", method=method)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert (err.value.code, err.value.headers["Allow"]) == (405, "GET, HEAD"), method
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        # any Host is answered under sluice run: a pod is reached by service names (docs/dashboard.md)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/ui/version", headers={"Host": "sluice.sluice-system.svc:8080"})
        assert conn.getresponse().status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_a_remote_that_cannot_be_fetched_is_said_not_guessed(tmp_path):
    server = start_dashboard(f"file://{tmp_path / 'nowhere.git'}", every=0.2)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            html = resp.read().decode()
        assert 'id="notice">fetch failed' in html and "nowhere.git" in html
        # the whole git error, not only its last line ("... and the repository exists.")
        assert "does not appear to be a git repository" in html and "the repository exists" in html
        assert "<tbody></tbody>" in html          # no rows made up
    finally:
        server.stop()


# --- review findings: each a regression test ---------------------------------------

def long_history_checkout(tmp_path, commits: int) -> pathlib.Path:
    """A checkout of sample-repo whose bookinfo/reviews has ``commits`` Sluice step commits
    (with evidence) on top of the seed, built by ``git fast-import``."""
    work = tmp_path / "long"
    files = {p.relative_to(SAMPLE).as_posix(): p.read_bytes() for p in SAMPLE.rglob("*") if p.is_file()}
    for rel, data in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work)
    run("commit", "-q", "-m", "seed", cwd=work)
    path, base = "releases/bookinfo/reviews.yaml", files["releases/bookinfo/reviews.yaml"]
    stream = []
    for i in range(commits):
        msg = (f"bookinfo/reviews: canary v2 step {i}\n\nrequest-success-rate 99.9 ok\n\n"
               f"Sluice-Release: bookinfo/reviews\nSluice-Action: advance\nSluice-Weight: {(i + 1) % 50}\n"
               f"Sluice-Evidence: request-success-rate=99.{i} min=99 window=1m ok\n").encode()
        data = base + f"# {i}\n".encode()
        stream.append(b"commit refs/heads/main\ncommitter Sluice <s@x> %d +0000\ndata %d\n%s\n"
                      % (1700000000 + i, len(msg), msg))
        if i == 0:
            stream.append(b"from refs/heads/main^0\n")
        stream.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(stream), cwd=work, check=True, timeout=60)
    run("reset", "-q", "--hard", "main", cwd=work)
    return work


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_history_memory_is_bounded_and_pages_show_the_newest(tmp_path):
    """Finding 1: 150 commits with a release page open (one request per generation) keep the
    history cache within its record budget; a page shows the newest 200 records, and an
    "older" link pages through the rest."""
    work = long_history_checkout(tmp_path, 300)
    dash = Dashboard(open_source(str(work)), history_budget=500)
    server = DashboardServer(dash).start()
    try:
        status, html = get(server.url + "r/bookinfo/reviews")
        assert status == 200 and html.count('class="record"') == 200
        assert html.count('class="point"') == 200 and "the 200 newest commits" in html
        older = re.search(r'class="older" href="\?before=([0-9a-f]{40})"', html).group(1)
        status, page2 = get(server.url + f"r/bookinfo/reviews?before={older}")
        assert status == 200 and page2.count('class="record"') == 101 and 'class="older"' not in page2
        assert 'class="newer"' in page2 and "seed" in page2 and older not in re.findall(r'data-commit="(\w+)"', page2)
        assert get(server.url + "r/bookinfo/reviews?before=" + "0" * 40)[0] == 404
        for k in range(150):
            p = work / "releases/batch/migrator.yaml"
            p.write_text(p.read_text() + f"# {k}\n")
            run("commit", "-q", "-am", f"c{k}", cwd=work)
            dash.bump("test commit")
            view = dash.view()
            records, _ = dash.history(view, "bookinfo/reviews")
            assert len(records) == 200 and records[-1].subject == "bookinfo/reviews: canary v2 step 299"
            if k % 10 == 0:
                dash.history(view, "bookinfo/reviews", older)
                dash.history(view, "batch/migrator")
            assert dash.cached_records() <= 500, (k, dash.cached_records())
        assert len(dash._history) <= 3
    finally:
        server.stop()


def test_credentials_in_a_url_never_reach_a_page_or_the_terminal(world, tmp_path):
    """Finding 3: ``sluice ui http://bob:TOKEN@host/config.git``: every page and the startup
    line say ``http://***@...``, as ``sluice run`` does."""
    token = "s3cr3t-T0KEN-xyz"
    port = free_port()
    with HttpGit(world.bare.parent, token=token) as srv:
        url = srv.url.replace("http://", f"http://bob:{token}@") + "/config.git"
        proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "ui", url, "--listen",
                                 f"127.0.0.1:{port}", "--every", "0.3"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "SLUICE_CACHE_DIR": str(tmp_path / "cache")})
        base = f"http://127.0.0.1:{port}/ui/"
        try:
            html = wait_for(lambda: (lambda r: r[0] == 200 and 'data-release=' in r[1] and r[1])(get(base)),
                            timeout=30)
            pages_seen = [html] + [get(base + f"r/{key}")[1] for key in re.findall(r'data-release="([^"]+)"', html)]
            assert all(token not in page for page in pages_seen)
            assert any(f"In a clone of http://***@127.0.0.1:{srv.url.rsplit(':', 1)[1]}/config.git" in page
                       for page in pages_seen)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert token not in err and "http://***@127.0.0.1" in err


def test_one_odd_hand_written_status_never_takes_down_the_others(tmp_path):
    """Finding 4 and 9: a naive stepStartedAt shows as an unknown age ("-"), a forged
    ``Sluice-Weight: ²`` reads as a person's edit, a file named ``*.yaml`` has only its own
    commits, a row that cannot be drawn is that release's error row: every page answers."""
    work = tmp_path / "co"
    run("init", "-q", "-b", "main", str(work))
    for p in SAMPLE.rglob("*"):
        if p.is_file():
            (work / p.relative_to(SAMPLE)).parent.mkdir(parents=True, exist_ok=True)
            (work / p.relative_to(SAMPLE)).write_bytes(p.read_bytes())
    run("add", "-A", cwd=work)
    run("commit", "-q", "-m", "seed", cwd=work)
    p = work / "releases/batch/migrator.yaml"
    p.write_text(p.read_text() + "status:\n  phase: Progressing\n  stepStartedAt: '2026-01-01T00:00:00'\n")
    run("commit", "-q", "-am", "naive time", cwd=work)
    p = work / "releases/bookinfo/ratings.yaml"
    p.write_text(p.read_text() + "# x\n")
    run("commit", "-q", "-am", "bookinfo/ratings: x\n\nSluice-Release: bookinfo/ratings\nSluice-Action: advance\n"
        "Sluice-Weight: \u00b2\n", cwd=work)
    (work / "releases/bookinfo/*.yaml").write_text("x: [\n")
    run("add", "-A", cwd=work)
    run("commit", "-q", "-m", "star file", cwd=work)
    server = start_dashboard(str(work))
    try:
        status, html = get(server.url)
        assert status == 200
        row = re.search(r'<tr data-release="batch/migrator".*?</tr>', html).group(0)
        assert 'data-phase="Progressing"' in row and '<td title="2026-01-01T00:00:00">-</td>' in row
        assert 'data-release="bookinfo/reviews"' in html
        assert get(server.url + "r/batch/migrator")[0] == 200
        status, ratings = get(server.url + "r/bookinfo/ratings")
        assert status == 200 and '<tr class="record" data-action="edit"' in ratings
        status, star = get(server.url + "r/bookinfo/%2A")
        assert status == 200 and star.count('class="record"') == 1 and "star file" in star
    finally:
        server.stop()
    from datetime import datetime, timezone
    good = {"namespace": "a", "name": "ok", "strategy": "canary", "phase": "Promoted", "weight": 100, "step": 0,
            "steps": 3, "stable": "v1", "new": None, "message": None, "valid": True, "problems": [],
            "lastChange": None, "since": "2026-01-01T00:00:00", "waitingFor": None, "heldBy": None}
    odd = {**good, "name": "odd", "weight": "abc"}
    _, live = pages.overview([odd, good], root="./", now=datetime.now(timezone.utc))
    assert 'data-release="a/ok" data-phase="Promoted" data-weight="100"' in live
    assert 'class="error" data-release="a/odd"' in live and "cannot show this release: ValueError" in live


def test_a_url_is_followed_within_a_second_by_default(world):
    """Finding 5: the default look at a URL (``git ls-remote`` every second, a fetch only when
    the tip moved) shows a new commit within about a second."""
    from reconciler.ui.server import dashboard_for
    dash = dashboard_for(world.url)
    try:
        for k in range(4):
            before = dash.view().tip
            t0 = time.monotonic()
            human_edit(world.human, lambda d: (d / "releases/batch/migrator.yaml").write_text(
                (d / "releases/batch/migrator.yaml").read_text() + f"# follow {k}\n"), f"follow {k}")
            pushed = run("rev-parse", "main", cwd=world.bare).strip()
            assert pushed != before
            wait_for(lambda: dash.view().tip == pushed, timeout=5)
            assert time.monotonic() - t0 < 1.5, k
    finally:
        dash.stop()


def test_host_header_is_checked_on_loopback(world):
    """Finding 8: a loopback ``sluice ui`` answers loopback names only (DNS rebinding), 421
    otherwise; ``--allow-host`` adds names."""
    server = start_dashboard(world.url, every=5)
    allowed = start_dashboard(world.url, every=5, allow_hosts=("dash.internal",))
    try:
        for host, code in (("rebind.attacker.example", 421), ("rebind.attacker.example:80", 421),
                           (f"localhost:{server.port}", 200), (f"127.0.0.1:{server.port}", 200),
                           (f"[::1]:{server.port}", 200), ("LOCALHOST", 200), ("dash.internal", 421)):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/ui/", headers={"Host": host})
            resp = conn.getresponse()
            assert resp.status == code, host
            resp.read()
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", allowed.port, timeout=10)
        conn.request("GET", "/ui/", headers={"Host": "dash.internal:8090"})
        assert conn.getresponse().status == 200
    finally:
        server.stop()
        allowed.stop()


def test_seven_windows_all_update_within_a_second_and_a_half(world, dash, browser):
    """Finding 2: seven pages in one browser (past Chromium's six connections per host) all
    show a new commit; no page holds a connection."""
    main = browser.current_window_handle
    handles = []
    try:
        for i in range(7):
            browser.switch_to.new_window("window")
            browser.get(dash.url + "r/batch/migrator")
            handles.append(browser.current_window_handle)
            wait_for(lambda: "on" in browser.find_element("id", "live-state").get_attribute("class"))
        pushed_at = browser.execute_script("return Date.now()")
        human_edit(world.human, lambda d: (d / "releases/batch/migrator.yaml").write_text(
            (d / "releases/batch/migrator.yaml").read_text() + "# seven windows\n"), "seven windows")
        tip = run("rev-parse", "main", cwd=world.bare).strip()
        updated = []
        for h in handles:
            browser.switch_to.window(h)
            wait_for(lambda: browser.find_element("id", "tip").get_attribute("title") == tip, timeout=10)
            assert browser.find_element("css selector", "table.history tr.record").text.endswith("seven windows")
            updated.append(browser.execute_script("return window.sluiceUpdatedAt") - pushed_at)
        assert max(updated) < 1500, updated
    finally:
        for h in handles:
            browser.switch_to.window(h)
            browser.close()
        browser.switch_to.window(main)


def test_live_label_says_offline_and_recovers(world, dash, browser):
    """Finding 2: the label is honest: "offline" while polls fail, "live" again after."""
    with prefix_proxy(dash.port) as (base, proxy):
        browser.get(base + "/ui/")
        wait_for(lambda: browser.find_element("id", "live-state").text == "live")
        proxy.broken = True
        wait_for(lambda: browser.find_element("id", "live-state").text == "offline", timeout=5)
        proxy.broken = False
        wait_for(lambda: browser.find_element("id", "live-state").text == "live", timeout=5)


def test_header_filters_and_a_deleted_release_follow_live(world, dash, browser):
    """Findings 6 and 7: the header's tip and the filter form follow live swaps; a release
    deleted while its page is open shows the server's "no release ... at this tip"."""
    browser.get(dash.url)
    wait_for(lambda: rows_in(browser))
    lion = (SAMPLE / "releases/batch/migrator.yaml").read_text().replace("migrator", "lion").replace(
        "namespace: batch", "namespace: zoo")
    human_edit(world.human, lambda d: ((d / "releases/zoo").mkdir(exist_ok=True),
                                       (d / "releases/zoo/lion.yaml").write_text(lion)), "add zoo/lion")
    tip = run("rev-parse", "main", cwd=world.bare).strip()
    wait_for(lambda: browser.find_element("id", "tip").get_attribute("title") == tip, timeout=5)
    assert "zoo" in [o.get_attribute("value") for o in browser.find_elements("css selector", "select[name=ns] option")]
    assert "zoo/lion" in rows_in(browser)
    browser.get(dash.url + "r/zoo/lion")
    wait_for(lambda: browser.find_elements("css selector", "table.history tr.record"))
    human_edit(world.human, lambda d: (d / "releases/zoo/lion.yaml").unlink(), "remove zoo/lion")
    wait_for(lambda: "no release zoo/lion at this tip" in browser.find_element("id", "live").text, timeout=5)
    assert browser.find_element("id", "live-state").text == "live"
