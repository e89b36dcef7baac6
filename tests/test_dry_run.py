"""A dry-run metric through the whole controller (git remote, real Prometheus,
a web endpoint on loopback): measured at every check and recorded in status
and in each step's commit, it never rolls a release back; the same metric
without dryRun does. A dry run whose answer no provider can read (an
integer beyond any float, a jsonPath sort over mixed types) errs itself
only: the real metric's failure still rolls the release back."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.support import prometheus as promsupport
from tests.support.drive import T0
from tests.support.git_env import GitEnv
from tests.support.gitserver import run
from tests.support.specs import dump, release_doc

pytestmark = pytest.mark.timeout(180)
START = int(T0.timestamp())


class Health:
    """A health endpoint that says the new version is unhealthy."""

    def __init__(self, answer: bytes | None = None):
        self.asked = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.asked += 1
                data = answer if answer is not None else json.dumps({"status": {"healthy": False}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def prom_url():
    h = promsupport.History()
    h.traffic("reviews-v1", START - 600, START + 3600, rps=50, error_ratio=0.001, p99_ms=200)
    h.traffic("reviews-v2", START - 600, START + 3600, rps=5, error_ratio=0.001, p99_ms=200)
    with promsupport.start(h) as url:
        yield url


@pytest.fixture
def health():
    h = Health()
    yield h
    h.close()


ERRORS = ('sum(rate(istio_requests_total{destination_workload="{{ workload }}",response_code=~"5.."}[{{ interval }}]))'
          ' / sum(rate(istio_requests_total{destination_workload="{{ workload }}"}[{{ interval }}]))')


def repo(prom_url, health_url, dry_run, json_path="$.status.healthy", real_dry_run=None):
    settings = ("apiVersion: sluice.dev/v1alpha1\nkind: Settings\nproviders:\n"
                f"  prometheus: {{address: '{prom_url}'}}\n"
                f"  health: {{type: web, url: '{health_url}/health/{{{{ workload }}}}', jsonPath: '{json_path}'}}\n")
    metrics = [{"name": "request-success-rate", "min": 99},
               {"name": "health", "provider": "health", "equals": 1, "dryRun": dry_run},
               {"name": "error-ratio", "query": ERRORS, "max": 0,
                "dryRun": dry_run if real_dry_run is None else real_dry_run}]
    doc = release_doc(analysis={"metrics": metrics},
                      status={"phase": "Promoted", "stable": {"version": "v1", "image": "example.com/reviews:v1"},
                              "weight": 100})
    return {"sluice.yaml": settings, "releases/bookinfo/reviews.yaml": dump(doc)}


def roll(env, passes=15):
    """Passes until the rollout the first pass starts is over; its last phase."""
    for _ in range(passes):
        report = env.tick()
        assert report.error is None and not report.problems, (report.error, report.problems)
        phase = report.outcomes["bookinfo/reviews"].phase
        if phase in ("Promoted", "RolledBack") and any("start canary" in s for s in env.subjects()):
            return phase
    return None


def test_a_failing_dry_run_metric_is_recorded_and_never_rolls_back(tmp_path, prom_url, health):
    env = GitEnv(tmp_path, repo(prom_url, health.url, dry_run=True))
    assert roll(env) == "Promoted"
    subjects = env.subjects()
    assert not any("rollback" in s or "check failed" in s for s in subjects), subjects
    assert health.asked >= 3   # measured at every check
    log = run("log", "--format=%B%x00", "main", cwd=env.bare).split("\x00")
    advance = next(m for m in log if "Sluice-Action: advance" in m and "Sluice-Evidence: health" in m)
    assert "Sluice-Evidence: health=0 equals=1 window=1m provider=health dryRun=true failed" in advance
    assert "health 0 (equals 1, over 1m, via health) failed (dry run: not judged)" in advance
    assert "dryRun=true failed" in next(line for line in advance.splitlines() if "error-ratio=" in line)
    assert f"Sluice-Query: health GET {health.url}/health/reviews-v2 -> $.status.healthy" in advance
    status = yaml.safe_load(env.show("releases/bookinfo/reviews.yaml"))["status"]
    results = {r["name"]: r for r in status["lastAnalysis"]["results"]}
    assert results["health"]["dryRun"] is True and results["health"]["outcome"] == "failed"
    assert results["request-success-rate"]["ok"] is True and "dryRun" not in results["request-success-rate"]


def test_the_same_metric_without_dry_run_rolls_back(tmp_path, prom_url, health):
    env = GitEnv(tmp_path, repo(prom_url, health.url, dry_run=False))
    assert roll(env) == "RolledBack"
    assert any("check failed" in s for s in env.subjects())


@pytest.mark.parametrize("answer,json_path", [
    (b'{"v": ' + b"9" * 400 + b"}", "$.v"),
    (b'{"items": [{"v": 1}, {"v": "a"}]}', "$.items[/v]"),
])
def test_a_dry_run_whose_answer_cannot_be_read_never_stops_a_real_failure_rolling_back(tmp_path, prom_url, answer,
                                                                                       json_path):
    odd = Health(answer)
    try:
        env = GitEnv(tmp_path, repo(prom_url, odd.url, dry_run=True, json_path=json_path, real_dry_run=False))
        assert roll(env) == "RolledBack"
        assert odd.asked >= 1 and any("check failed" in s for s in env.subjects())
        status = yaml.safe_load(env.show("releases/bookinfo/reviews.yaml"))["status"]
        results = {r["name"]: r for r in status["lastAnalysis"]["results"]}
        assert results["health"]["dryRun"] is True and results["health"]["outcome"] in ("error", "nodata")
        assert results["error-ratio"]["outcome"] == "failed"
    finally:
        odd.close()
