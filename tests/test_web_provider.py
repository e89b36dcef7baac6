"""The web provider against a real HTTP server on 127.0.0.1: GET and POST with
templated URL and body, JSONPath reading one number (bool, numeric string,
null), every malformed answer an error result with a clear message, auth and
TLS CA as configured, no redirect followed, bounded answers, and secrets
never in what is recorded."""

import json
import ssl
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.adapters import metrics
from reconciler.adapters.metrics.web import Web
from reconciler.core import analysis
from reconciler.core.model import Release
from reconciler.errors import MetricsError
from tests.support.specs import release, release_doc
from tests.support.webserver import Server
from tests.support.tools import require

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
TOKEN = "web-t0ken-value"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def provider(cfg):
    """A web provider built the way the controller builds it from sluice.yaml."""
    return metrics.build({"web": {"type": "web", **cfg}})["web"]


def check_of(metric, name='we"ird', settings=None):
    doc = release_doc(name=name, analysis={"metrics": [metric]}, status={
        "phase": "Progressing", "stable": {"version": "v1", "image": "r:1"}, "canary": {"version": "v2", "image": "r:2"},
        "weight": 10, "step": 1})
    rel = release(doc)
    return rel, analysis.plan_checks(rel, settings or {}, canary_version="v2", stable_version="v1", now=NOW)


def judge(prov, metric, **kw):
    rel, checks = check_of({"provider": "web", **metric}, **kw)
    return metrics.run_checks({"web": prov}, checks, NOW)[0]


def test_get_with_a_templated_url_reads_one_number(server):
    server.answer("/checks/we%22ird", {"data": {"result": [{"name": "latency", "ok": 99.5}]}})
    prov = provider({"url": server.url + "/checks/{{ release }}?workload={{ workload }}&window={{ interval }}",
                     "jsonPath": "$.data.result[?(@.name == 'latency')].ok"})
    result = judge(prov, {"name": "synthetic", "min": 99})
    assert result.outcome == "ok" and result.value == 99.5 and result.provider == "web"
    got = server.seen[-1]
    assert got["method"] == "GET" and got["path"] == "/checks/we%22ird?workload=we%22ird-v2&window=1m"
    assert result.query.startswith("GET http://127.0.0.1") and "-> $.data.result" in result.query
    assert result.to_status()["provider"] == "web" and result.to_status()["window"] == "1m"


def test_post_sends_a_json_body_with_escaped_variables(server):
    server.answer("/query", {"series": [{"value": "0.25"}]})
    prov = provider({"url": server.url + "/query", "method": "POST", "jsonPath": "{$.series[0].value}",
                     "body": '{"release": "{{ release }}", "window": "{{ interval }}"}'})
    result = judge(prov, {"name": "errors", "max": 0.5})
    assert result.outcome == "ok" and result.value == 0.25
    got = server.seen[-1]
    assert got["method"] == "POST" and got["headers"]["content-type"] == "application/json"
    assert json.loads(got["body"]) == {"release": 'we"ird', "window": "1m"}


@pytest.mark.parametrize("answer,outcome,value", [
    ({"healthy": True}, "ok", 1.0),
    ({"healthy": False}, "failed", 0.0),
    ({"healthy": "1"}, "ok", 1.0),
    ({"healthy": None}, "nodata", None),
    ({"healthy": "NaN"}, "nodata", None),
])
def test_bools_numeric_strings_and_null(server, answer, outcome, value):
    server.answer("/health", answer)
    result = judge(provider({"url": server.url + "/health", "jsonPath": "$.healthy"}), {"name": "health", "equals": 1})
    assert (result.outcome, result.value) == (outcome, value), result.message


@pytest.mark.parametrize("answer,status,words", [
    ({"other": 1}, 200, "selected 0 values"),
    ({"healthy": [1, 2]}, 200, "selected 2 values"),        # $.healthy[*]
    ({"healthy": {"a": 1}}, 200, "selected a JSON dict"),
    ({"healthy": "green"}, 200, "selected the string 'green'"),
    (b"<html>oops</html>", 200, "not JSON"),
    ({"error": "down"}, 503, "answered 503"),
])
def test_anything_but_one_number_is_an_error_result(server, answer, status, words):
    server.answer("/health", answer, status=status)
    path = "$.healthy[*]" if words == "selected 2 values" else "$.healthy"
    result = judge(provider({"url": server.url + "/health", "jsonPath": path}), {"name": "health", "equals": 1})
    assert result.outcome == "error" and words in result.message, result.message


def test_an_oversized_answer_is_an_error_not_a_truncated_parse(server):
    server.answer("/big", b'{"v": 1, "pad": "' + b"x" * (2 << 20) + b'"}')
    result = judge(provider({"url": server.url + "/big", "jsonPath": "$.v"}), {"name": "big", "max": 5})
    assert result.outcome == "error" and "more than 1048576 bytes" in result.message


def test_unreachable_and_timeout_are_error_results_that_hold(server):
    import time

    from tests.support.gitserver import free_port
    rel, checks = check_of({"name": "health", "provider": "web", "equals": 1})
    dead = provider({"url": f"http://127.0.0.1:{free_port()}/x", "jsonPath": "$.v"})
    results = metrics.run_checks({"web": dead}, checks, NOW)
    assert results[0].outcome == "error" and "unreachable" in results[0].message
    assert analysis.verdict(results, rel, {}) == "hold"

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(1.5)

        def log_message(self, *a):
            pass
    slow = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    try:
        prov = provider({"url": f"http://127.0.0.1:{slow.server_port}/", "jsonPath": "$.v", "timeout": "200ms"})
        t0 = time.monotonic()
        assert metrics.run_checks({"web": prov}, checks, NOW)[0].outcome == "error"
        assert time.monotonic() - t0 < 1.2
    finally:
        slow.shutdown()
        slow.server_close()


def test_token_and_headers_arrive_and_never_show(server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server.answer("/v", {"v": 3})
    prov = provider({"url": server.url + "/v?api_key=literal-key-in-url", "jsonPath": "$.v",
                     "tokenFile": str(token), "headers": {"X-Api-Tenant": "tenant-secret"}})
    result = judge(prov, {"name": "v", "max": 5})
    assert result.outcome == "ok"
    assert server.seen[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert server.seen[-1]["headers"]["x-api-tenant"] == "tenant-secret"
    shown = json.dumps(result.to_status()) + repr(prov)
    for secret in (TOKEN, "tenant-secret", "literal-key-in-url"):
        assert secret not in shown
    # a server echoing the credentials in its error never gets them into the record
    server.answer("/v", {"error": f"bad {TOKEN} for tenant-secret"}, status=401)
    failed = judge(prov, {"name": "v", "max": 5})
    assert failed.outcome == "error" and "401" in failed.message
    assert TOKEN not in failed.message and "tenant-secret" not in failed.message


def test_a_redirect_is_not_followed_and_credentials_stay_home(server, tmp_path):
    other = Server()
    try:
        other.answer("/v", {"v": 1})
        server.answer("/v", {}, status=302, Location=other.url + "/v")
        token = tmp_path / "token"
        token.write_text(TOKEN)
        result = judge(provider({"url": server.url + "/v", "jsonPath": "$.v", "tokenFile": str(token)}),
                       {"name": "v", "max": 5})
        assert result.outcome == "error" and "302" in result.message and other.seen == []
    finally:
        other.close()


def test_tls_with_a_private_ca(tmp_path):
    openssl = require("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls = Server(tls=ctx)
    try:
        tls.answer("/v", {"v": 2})
        trusted = judge(provider({"url": tls.url + "/v", "jsonPath": "$.v", "caFile": str(cert)}),
                        {"name": "v", "max": 5})
        assert trusted.outcome == "ok" and trusted.value == 2
        untrusted = judge(provider({"url": tls.url + "/v", "jsonPath": "$.v"}), {"name": "v", "max": 5})
        assert untrusted.outcome == "error" and "CERTIFICATE_VERIFY_FAILED" in untrusted.message
        missing = judge(provider({"url": tls.url + "/v", "jsonPath": "$.v", "caFile": str(tmp_path / "none.pem")}),
                        {"name": "v", "max": 5})
        assert missing.outcome == "error" and "cannot read caFile" in missing.message
    finally:
        tls.close()


def test_compare_to_stable_asks_the_url_of_each_version(server):
    server.answer("/p99/we%22ird-v2", {"p99": 400})
    server.answer("/p99/we%22ird-v1", {"p99": 200})
    prov = provider({"url": server.url + "/p99/{{ workload }}", "jsonPath": "$.p99"})
    result = judge(prov, {"name": "p99", "max": 500, "compareToStable": {"maxIncreasePercent": 50}})
    assert result.outcome == "failed" and result.stable_value == 200 and "worse than stable" in result.message


def test_the_web_provider_needs_a_valid_json_path():
    with pytest.raises(ValueError, match="invalid jsonPath"):
        Web("http://127.0.0.1:1/", json_path_text="$.a[")
    built = metrics.build({"web": {"type": "web", "url": "http://127.0.0.1:1/", "jsonPath": "$.a["}})["web"]
    with pytest.raises(MetricsError, match="invalid settings"):
        built.measure(None, {}, NOW)   # never built from a file that passed validation; never a crash either


def test_validation_reports_web_settings_at_file_line():
    from reconciler.core.loader import load_files
    settings = (b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nproviders:\n"
                b"  health: {type: web, url: 'https://h.example.com/{{ release }}', jsonPath: $.ok}\n")
    doc = release_doc(analysis={"metrics": [{"name": "health", "provider": "health", "equals": 1},
                                            {"name": "checkout", "provider": "nowhere", "equals": 1}]})
    from tests.support.specs import dump
    problems = load_files({"sluice.yaml": settings, "releases/bookinfo/reviews.yaml": dump(doc).encode()}).problems
    assert [(p.file, p.path[-1]) for p in problems] == [("releases/bookinfo/reviews.yaml", "provider")]
    assert "provider 'nowhere' is not defined in sluice.yaml providers (defined: health)" in problems[0].message
    assert problems[0].line > 1
    assert isinstance(release(doc), Release)


def test_an_answer_quoting_the_credential_back_is_redacted(server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server.answer("/echo", {"v": f"Bearer {TOKEN}"})
    result = judge(provider({"url": server.url + "/echo", "jsonPath": "$.v", "tokenFile": str(token)}),
                   {"name": "v", "max": 5})
    assert result.outcome == "error" and "selected the string" in result.message and TOKEN not in result.message


# --- whatever an answer holds, it errs its own metric only (never the release's analysis) ---

@pytest.mark.parametrize("body,path,outcome,words", [
    (b'{"v": ' + b"9" * 400 + b"}", "$.v", "nodata", "NaN/Inf"),               # beyond any float: as 1e400
    (b'{"items": [{"v": 1}, {"v": "a"}]}', "$.items[/v]", "error", "cannot be applied to this answer"),
    (b'{"v": "1_000"}', "$.v", "error", "selected the string '1_000'"),          # Python's float() takes it
])
def test_odd_answers_are_a_result_of_their_metric_never_an_exception(server, body, path, outcome, words):
    server.routes["/odd"] = (200, body, {})
    result = judge(provider({"url": server.url + "/odd", "jsonPath": path}), {"name": "odd", "max": 5})
    assert result.outcome == outcome and words in result.message, result.message


def test_a_provider_that_raises_anything_errs_its_metric_only_and_never_quotes_the_exception():
    class Broken:
        kind = "broken"

        def describe(self, query, variables):
            return "broken"

        def measure(self, query, variables, at):
            raise ValueError("Invalid header value b'Bearer SUPERSECRET\\nline2'")

    class Fine:
        kind = "fine"

        def describe(self, query, variables):
            return "fine"

        def measure(self, query, variables, at):
            return 0.5

    rel, checks = check_of({"name": "a", "provider": "broken", "max": 1, "dryRun": True})
    rel2, more = check_of({"name": "b", "provider": "fine", "max": 1})
    results = metrics.run_checks({"broken": Broken(), "fine": Fine()}, checks + more, NOW)
    assert [r.outcome for r in results] == ["error", "ok"]
    assert "ValueError" in results[0].message and "SUPERSECRET" not in str(results[0].to_status())


@pytest.mark.parametrize("cfg", [{"type": "web", "url": "http://[::1/x", "jsonPath": "$.v"},
                                 {"address": "http://[::1"}, {"address": "http://127.0.0.1:99999"}])
def test_an_unparseable_url_is_an_error_result_at_run_time(cfg):
    rel, checks = check_of({"name": "m", "provider": "p", "max": 5, "dryRun": True})
    queried = [analysis.MetricCheck(**{**c.__dict__, "query": "up"}) for c in checks] if "address" in cfg else checks
    result = metrics.run_checks(metrics.build({"p": cfg}), queried, NOW)[0]
    assert result.outcome == "error" and "invalid URL" in result.message, result.message


# --- a deadline per request, however slowly the server answers ---

class Drip:
    """Answers one byte every ``pause`` seconds: in the headers (``where="headers"``) or the body."""

    def __init__(self, where: str, pause: float = 0.2):
        self.stopped = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
                body = b'{"v": 1' + b" " * 99992 + b"}"
                data = (head + b"X-Pad: " + b"a" * 1000 + b"\r\n\r\n" + body) if where == "headers" else None
                if data is None:
                    self.wfile.write(head + b"\r\n")
                    data = body
                for i in range(len(data)):
                    try:
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    if outer.stopped.wait(pause):
                        return

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_the_timeout_bounds_the_whole_request_not_each_read(where):
    import time
    drip = Drip(where)
    try:
        prov = provider({"url": drip.url + "/v", "jsonPath": "$.v", "timeout": "1s"})
        t0 = time.monotonic()
        result = judge(prov, {"name": "v", "max": 5})
        took = time.monotonic() - t0
        assert result.outcome == "error" and "did not answer within the 1s timeout" in result.message
        assert took < 1.8, took   # one byte every 0.2s kept a per-read timeout waiting for hours
    finally:
        drip.close()


def test_the_timeout_is_at_most_a_minute():
    from reconciler.adapters.metrics.httpclient import MAX_TIMEOUT, client_from_settings
    assert MAX_TIMEOUT == 60
    assert client_from_settings("web", {"timeout": "100d"}).timeout == MAX_TIMEOUT
    assert client_from_settings("web", {"timeout": float("nan")}).timeout == 5.0


# --- secrets: control characters refused before sending, escaped forms redacted, evidence kept readable ---

@pytest.mark.parametrize("content", ["SUPERSECRETTOKEN\nline2", "SUPERSECRETTOKEN\r\nmore", "SUPER\tSECRETTOKEN"])
def test_a_token_with_a_control_character_is_refused_unsent_and_never_quoted(server, tmp_path, content):
    token = tmp_path / "token"
    token.write_text(content)
    server.answer("/v", {"v": 1})
    result = judge(provider({"url": server.url + "/v", "jsonPath": "$.v", "tokenFile": str(token)}),
                   {"name": "v", "max": 5})
    assert result.outcome == "error" and "tokenFile holds a control character" in result.message
    assert server.seen == []
    shown = json.dumps(result.to_status())
    assert "SUPER" not in shown and "SECRETTOKEN" not in shown


def test_redaction_hides_escaped_forms_of_a_secret():
    from reconciler.adapters.metrics.httpclient import HttpClient
    client = HttpClient("web", token="SUPERSECRETTOKEN\nline2")
    for quoted in ("b'Bearer SUPERSECRETTOKEN\\nline2'", '"SUPERSECRETTOKEN\\nline2"', "SUPERSECRETTOKEN%0Aline2",
                   "echo: SUPERSECRETTOKEN"):
        assert "SUPERSECRETTOKEN" not in client.redact(quoted), quoted


@pytest.mark.parametrize("tenant", ["1", "e", "bookinfo"])
def test_a_tenant_header_never_garbles_the_record(server, tenant):
    server.answer("/v/bookinfo", {"v": 1})
    prov = provider({"url": server.url + "/v/{{ namespace }}?w={{ workload }}", "jsonPath": "$.v",
                     "headers": {"X-Scope-OrgID": tenant}})
    result = judge(prov, {"name": "v", "max": 5}, name="reviews")
    assert result.outcome == "ok" and server.seen[-1]["headers"]["x-scope-orgid"] == tenant
    assert result.query == f"GET {server.url}/v/bookinfo?w=reviews-v2 -> $.v"


def test_credential_like_headers_are_redacted_whatever_their_length(server):
    server.answer("/v", {"error": "key k3y and tenant some-long-tenant-name refused"}, status=403)
    prov = provider({"url": server.url + "/v", "jsonPath": "$.v",
                     "headers": {"X-Api-Key": "k3y", "X-Tenant": "some-long-tenant-name"}})
    result = judge(prov, {"name": "v", "max": 5})
    assert result.outcome == "error" and "k3y" not in result.message and "some-long-tenant-name" not in result.message


@pytest.mark.parametrize("param", ["jwt", "sig", "pwd", "pass", "access", "code", "sid", "session", "hmac",
                                   "x-api-key", "apikey", "access_token"])
def test_credential_like_url_parameters_are_hidden(server, param):
    server.answer("/v", {"v": 1})
    result = judge(provider({"url": server.url + f"/v?{param}=S3CRET-VALUE&w={{{{ workload }}}}", "jsonPath": "$.v"}),
                   {"name": "v", "max": 5})
    assert result.outcome == "ok" and "S3CRET" not in json.dumps(result.to_status())
    assert "w=we\"ird-v2" in result.query


def test_a_prometheus_address_shows_no_credential_like_parameter():
    from reconciler.adapters.metrics.prometheus import Prometheus
    prom = Prometheus("http://prom:9090/?api_key=S3CRET-VALUE")
    assert "S3CRET" not in repr(prom)


def test_every_address_of_a_name_shares_the_one_deadline(monkeypatch):
    """A name with several addresses that never answer: create_connection would give each
    the whole timeout; the request still ends within its own."""
    import socket
    real = socket.getaddrinfo

    def answer(host, port, *args, **kw):   # a resolver answer of 8 blackholed addresses (TEST-NET-1)
        if host == "prom.multi.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{i}", port)) for i in range(1, 9)]
        return real(host, port, *args, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", answer)
    prom = metrics.build({"prometheus": {"address": "http://prom.multi.example:9090", "timeout": "1s"}})["prometheus"]
    t0 = time.monotonic()
    with pytest.raises(MetricsError):
        prom.measure("up", {}, NOW)
    assert time.monotonic() - t0 < 1.8


def test_every_header_value_is_hidden_and_a_short_one_garbles_nothing(server):
    """A 7-character API key in a header of any name is hidden; a short value hides only
    where it stands alone, never inside numbers or durations of the recorded query."""
    server.answer("/api/v1/query", {"status": "error", "error": "denied: X-Honeycomb-Team=hc7Ab2x shard=1"},
                  status=400)
    prom = metrics.build({"prometheus": {"address": server.url, "headers": {
        "X-Honeycomb-Team": "hc7Ab2x", "X-Session-Shard": "1"}}})["prometheus"]
    with pytest.raises(MetricsError) as err:
        prom.measure('sum(rate(x{code="500"}[10m])) / 100', {}, NOW)
    assert "hc7Ab2x" not in str(err.value) and "shard=***" in str(err.value)
    asked = prom.describe('sum(rate(x{code="500"}[10m])) / 100', {})
    assert "500" in asked and "10m" in asked and "100" in asked and "***" not in asked
