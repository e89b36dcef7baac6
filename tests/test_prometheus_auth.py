"""Prometheus behind a gateway (Thanos, Mimir): tokenFile, basic auth, custom
headers and timeout from sluice.yaml reach the HTTP request, are re-read when
rotated, and never show in a repr, an error or a log line."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.adapters.metrics.prometheus import Prometheus, from_settings
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from reconciler.errors import MetricsError

pytestmark = pytest.mark.timeout(60)
TOKEN = "s3cr3t-token-value"
PASSWORD = "hunter2-password"


class Server:
    def __init__(self, status=200, delay=0.0):
        seen = self.seen = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.headers)
                time.sleep(outer.delay)
                body = {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "1.5"]}]}}
                if outer.status != 200:   # a hostile gateway echoing what it got
                    body = {"status": "error", "error": f"denied {self.headers.get('Authorization')} "
                                                        f"{self.headers.get('X-Api-Key')} "
                                                        f"for tenant {self.headers.get('X-Scope-OrgID')}"}
                data = json.dumps(body).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.status, self.delay = status, delay
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_token_file_headers_and_timeout_are_sent_and_rotation_applies(tmp_path, server):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    prom = from_settings({"address": server.url, "tokenFile": str(token), "timeout": "2s",
                          "headers": {"X-Scope-OrgID": "tenant-a"}})
    assert prom.timeout == 2.0
    assert prom.query("up") == 1.5
    assert server.seen[-1]["Authorization"] == f"Bearer {TOKEN}" and server.seen[-1]["X-Scope-OrgID"] == "tenant-a"
    token.write_text("rotated")
    prom.query("up")
    assert server.seen[-1]["Authorization"] == "Bearer rotated"
    assert TOKEN not in repr(prom) and "tenant-a" not in repr(prom)


def test_basic_auth(tmp_path, server):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    prom = from_settings({"address": server.url, "basicAuth": {"username": "sluice", "passwordFile": str(pw)}})
    prom.query("up")
    assert server.seen[-1]["Authorization"] == "Basic " + base64.b64encode(f"sluice:{PASSWORD}".encode()).decode()
    assert PASSWORD not in repr(prom)


def test_secrets_never_in_errors_or_logs(tmp_path):
    bad = Server(status=401)
    try:
        token = tmp_path / "token"
        token.write_text(TOKEN)
        prom = from_settings({"address": bad.url, "tokenFile": str(token),
                              "headers": {"X-Api-Key": "api-key-value", "X-Scope-OrgID": "shop"}})
        with pytest.raises(MetricsError) as err:
            prom.query("up")
        text = str(err.value) + repr(err.value) + repr(prom)
        assert "401" in text
        for secret in (TOKEN, "api-key-value"):
            assert secret not in text
        assert "for tenant shop" in text   # a tenant id is not a secret: the gateway's words stay readable
        assert "user:pw" not in repr(Prometheus("http://user:pw@prom:9090"))
        assert err.value.__cause__ is None and err.value.__context__ is None
    finally:
        bad.close()
    missing = from_settings({"address": "http://127.0.0.1:9", "tokenFile": str(tmp_path / "absent")})
    with pytest.raises(MetricsError, match="cannot read tokenFile"):
        missing.query("up")


def test_timeout_is_honoured(tmp_path):
    slow = Server(delay=1.5)
    try:
        prom = from_settings({"address": slow.url, "timeout": "200ms"})
        t0 = time.monotonic()
        with pytest.raises(MetricsError):
            prom.query("up")
        assert time.monotonic() - t0 < 1.2
    finally:
        slow.close()


def test_controller_builds_the_provider_from_settings(tmp_path, server):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    ctl = Controller(repo=None, target=GitTarget())
    prom = ctl._provider({"providers": {"prometheus": {"address": server.url, "tokenFile": str(token),
                                                       "headers": {"X-Scope-OrgID": "t"}}}})["prometheus"]
    assert isinstance(prom, Prometheus)
    prom.query("up")
    assert server.seen[-1]["Authorization"] == f"Bearer {TOKEN}"


def test_schema_refuses_literal_secrets_and_authorization_header():
    from reconciler.core.loader import load_files
    base = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nproviders:\n  prometheus:\n    address: http://p\n"
    for extra in (b"    token: abc\n", b"    headers: {Authorization: Bearer x}\n",
                  b"    tokenFile: /t\n    basicAuth: {username: u, passwordFile: /p}\n",
                  b"    basicAuth: {username: u, password: p}\n"):
        out = load_files({"sluice.yaml": base + extra})
        assert out.problems and out.problems[0].file == "sluice.yaml", extra


class Answer(Server):
    """Answers every query with ``body`` as it is."""

    def __init__(self, body: bytes):
        super().__init__()
        body_ = body

        class Handler(self.httpd.RequestHandlerClass):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body_)))
                self.end_headers()
                self.wfile.write(body_)

        self.httpd.RequestHandlerClass = Handler


@pytest.mark.parametrize("value", [b"9" * 400, b"true", b"[1]"])
def test_an_odd_sample_value_is_an_error_never_an_exception(value):
    from datetime import datetime, timezone

    from reconciler.adapters import metrics
    from reconciler.core import analysis
    from tests.support.specs import release, release_doc
    answer = Answer(b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[0,'
                    + value + b"]}]}}")
    try:
        rel = release(release_doc(analysis={"metrics": [{"name": "request-success-rate", "min": 99, "dryRun": True},
                                                        {"name": "request-duration", "max": 500}]},
                                  status={"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
                                          "canary": {"version": "v2", "image": "r:2"}, "weight": 10, "step": 1}))
        now = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
        checks = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1", now=now)
        results = metrics.run_checks(metrics.build({"prometheus": {"address": answer.url}}), checks, now)
        assert [r.outcome for r in results] == ["error", "error"]
        assert all("answered a malformed vector" in r.message for r in results)
    finally:
        answer.close()
