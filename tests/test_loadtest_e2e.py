"""A canary with no traffic of its own, judged by a real Prometheus with
``onNoData: fail``: without a hook it is rolled back (nothing to judge); with
pre-rollout and step hooks pointing at ``sluice hook loadtest`` (the real CLI,
a subprocess) the receiver drives requests at the canary's loopback workload
server, which counts them as ``istio_requests_total``, Prometheus scrapes
them, and the canary is promoted. The Controller runs with the git target on
the real clock, 3s steps; every wait is bounded."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.adapters.metrics.prometheus import Prometheus
from reconciler.controller import Controller
from reconciler.core.messages import parse_commit
from tests.support.applier import ScrapingPrometheus
from tests.support.gitserver import free_port, make_bare, run
from tests.support.specs import dump, release_doc

REPO = pathlib.Path(__file__).resolve().parents[1]
FILE = "releases/bookinfo/reviews.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Workload:
    """One loopback server standing in for every version of reviews: ``GET /<version>``
    is a request to that version (counted, answered 200); ``GET /metrics`` exports the
    counts as Istio's ``istio_requests_total`` as the destination proxy reports them."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        work = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):   # noqa: N802
                if self.path == "/metrics":
                    body = work.export().encode()
                else:
                    with work._lock:
                        version = self.path.strip("/")
                        work.counts[version] = work.counts.get(version, 0) + 1
                    body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def export(self) -> str:
        lines = ["# TYPE istio_requests_total counter"]
        with self._lock:
            for version in ("v1", "v2"):   # a series from the start: a counter's first increase is seen
                labels = ('reporter="destination",destination_workload_namespace="bookinfo",'
                          f'destination_workload="reviews-{version}",response_code="200"')
                lines.append(f"istio_requests_total{{{labels}}} {self.counts.get(version, 0)}")
        return "\n".join(lines) + "\n"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mesh(tmp_path):
    work = Workload()
    prom = ScrapingPrometheus(work.address, tmp_path).__enter__()
    yield work, prom
    prom.__exit__()
    work.close()


def receiver(tmp_path):
    """``sluice hook loadtest`` as a user runs it; returns (process, url) once it answers."""
    port = free_port()
    err = open(tmp_path / "loadtest.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "hook", "loadtest",
                             "--listen", f"127.0.0.1:{port}", "--max-rps", "50", "--max-duration", "1m"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 20
    while time.monotonic() < end and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                json.loads(resp.read())
                return proc, url
        except OSError:
            threading.Event().wait(0.1)
    proc.kill()
    raise RuntimeError(f"sluice hook loadtest did not start: {(tmp_path / 'loadtest.err').read_text()}")


def doc(hooks=None):
    d = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    d["spec"]["strategy"]["canary"].update(steps=[20, 50], interval="3s", maxFailedChecks=2)
    d["spec"]["analysis"] = {"onNoData": "fail", "metrics": [{"name": "request-success-rate", "min": 99}]}
    if hooks:
        d["spec"]["hooks"] = hooks
    return d


def roll(tmp_path, prom, release, goals=("Promoted", "RolledBack"), timeout=90.0):
    """Passes of a Controller (git target, real clock) until the release reaches a goal."""
    bare = make_bare(tmp_path, seed={FILE: dump(release)})
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget(), prometheus=Prometheus(prom.url))
    end = time.monotonic() + timeout
    phase = None
    while time.monotonic() < end:
        phase = ctl.run_pass().outcomes["bookinfo/reviews"].phase
        if phase in goals:
            break
        threading.Event().wait(0.3)   # the controller's pass cadence
    messages = [run("show", "-s", "--format=%B", sha, cwd=bare)
                for sha in run("log", "--reverse", "--format=%H", "main", "--", FILE, cwd=bare).split()[1:]]
    return phase, [parse_commit(m) for m in messages], messages


def test_no_traffic_is_rolled_back_and_the_loadtest_hook_brings_it_to_promotion(tmp_path, mesh):
    work, prom = mesh
    phase, commits, _ = roll(tmp_path / "alone", prom, doc())
    assert phase == "RolledBack"
    assert all(e["outcome"] == "nodata" for c in commits if c.action == "check-failed" for e in c.evidence())
    assert work.counts.get("v2", 0) == 0

    proc, url = receiver(tmp_path)
    try:
        load = {"url": f"http://{work.address}/v2", "rps": "20", "duration": "20s"}
        hooks = [{"name": "warm-up", "type": "pre-rollout", "url": url, "metadata": load},
                 {"name": "load", "type": "step", "url": url, "metadata": load}]
        phase, commits, messages = roll(tmp_path / "loaded", prom, doc(hooks))
        assert phase == "Promoted", messages
        assert work.counts.get("v2", 0) > 20   # the receiver's requests, nothing else sends any
        judged = [e for c in commits if c.action in ("advance", "promote") for e in c.evidence()]
        assert {e["name"] for e in judged} >= {"warm-up", "load", "request-success-rate"}
        assert all(e["ok"] for e in judged if e["name"] == "request-success-rate")
        assert [c.action for c in commits][:2] == ["start", "advance"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
