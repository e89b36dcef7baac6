"""Analysis against two real Prometheus-compatible stores, Prometheus and
VictoriaMetrics (asked with ``flavor: victoriametrics``), fed the same
backfilled Istio telemetry: the same healthy and failing canaries are judged
the same on both; a low-traffic canary below minRequests never promotes; a
step's window excludes traffic from before its weight was applied, also at
the sample that straddles that moment (MetricsQL's own rate/increase would
count it) and when the step's traffic is too low for minRequests; a
VictoriaMetrics that hides its newest samples (-search.latencyOffset) is an
error, never a judgement of the previous step; credentials reach a gateway
that refuses requests without them, and never show in what is recorded."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from reconciler.adapters import metrics
from reconciler.adapters.metrics import prometheus as prometheus_mod
from reconciler.adapters.metrics.prometheus import Prometheus
from reconciler.core import analysis
from reconciler.core.decide import iso
from tests.support import drive, prometheus as promsupport, victoria
from tests.support.authproxy import AuthProxy
from tests.support.specs import release, release_doc

pytestmark = pytest.mark.timeout(180)

T0 = 1_790_000_000          # start of the simulated hour (unix seconds)
APPLIED = T0 + 1800         # "stepped": bad until here, good after
BOUNDARY = T0 + 2400        # a sample time; the next step's weight is applied 2s after it
STORES = ("prometheus", "victoria")
TOKEN = "t0ken-for-the-gateway"


def history() -> promsupport.History:
    h = promsupport.History()
    end = T0 + 3600
    h.traffic("reviews-v1", T0, end, rps=50, error_ratio=0.001, p99_ms=200)
    h.traffic("healthy-v2", T0, end, rps=5, error_ratio=0.001, p99_ms=200)
    h.traffic("failing-v2", T0, end, rps=5, error_ratio=0.1, p99_ms=200)
    h.traffic("slow-v2", T0, end, rps=5, error_ratio=0.0, p99_ms=2000)
    h.traffic("trickle-v2", T0, end, rps=0.01, error_ratio=0.0, p99_ms=200)   # ~3 requests in 5 minutes
    h.traffic("stepped-v2", T0, APPLIED, rps=5, error_ratio=0.5, p99_ms=200)
    h.traffic("stepped-v2", APPLIED + promsupport.STEP, end, rps=5, error_ratio=0.0, p99_ms=200)
    # the sample at BOUNDARY + STEP counts requests from before the weight was applied at BOUNDARY + 2:
    # the previous step's, with 30% errors; the step's own traffic after it is clean
    step = promsupport.STEP
    h.traffic("straddle-v2", T0, BOUNDARY + step, rps=8, error_ratio=0.3, p99_ms=200)
    h.traffic("straddle-v2", BOUNDARY + 2 * step, end, rps=8, error_ratio=0.0, p99_ms=200)
    # 40 requests per sample before the weight was applied, 1 per sample after: too few for minRequests 20
    h.traffic("lowafter-v2", T0, BOUNDARY + step, rps=8, error_ratio=0.0, p99_ms=200)
    h.traffic("lowafter-v2", BOUNDARY + 2 * step, end, rps=0.2, error_ratio=0.0, p99_ms=200)
    return h


@pytest.fixture(scope="module")
def prometheus_url():
    with promsupport.start(history()) as url:
        yield url


@pytest.fixture(scope="module")
def victoria_url():
    with victoria.start(history()) as url:
        VICTORIA.add(url)
        yield url


@pytest.fixture(params=STORES)
def store(request):
    return request.getfixturevalue(f"{request.param}_url")


def settings_of(url: str, **extra) -> dict:
    """The provider block that asks the store at ``url`` as Sluice should (sluice.yaml's)."""
    return {"address": url, **(victoria.PROVIDER if url in VICTORIA else {}), **extra}


def provider(url: str) -> Prometheus:
    return metrics.build({"prometheus": settings_of(url)})["prometheus"]


VICTORIA: set[str] = set()   # URLs of the VictoriaMetrics servers of this module


def at(t: int) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def doc_for(workload: str, metrics_, status=None, **spec):
    doc = release_doc(name=workload, analysis={"metrics": metrics_}, status=status or {
        "phase": "Promoted", "stable": {"version": "v1", "image": "r:1"}, "weight": 100}, **spec)
    return doc


def walk(url, doc, settings=None, passes=30):
    return drive.walk({"prometheus": provider(url)}, release(doc), settings, start=at(T0 + 300), passes=passes)


BOTH = [{"name": "request-success-rate", "min": 99}, {"name": "request-duration", "max": 500}]


@pytest.mark.parametrize("workload,outcome", [("healthy", "promote"), ("failing", "rollback"), ("slow", "rollback")])
def test_the_same_canaries_are_judged_the_same_on_both_stores(prometheus_url, victoria_url, workload, outcome):
    runs = {}
    for name, url in (("prometheus", prometheus_url), ("victoria", victoria_url)):
        rel, events = walk(url, doc_for(workload, BOTH))
        runs[name] = [(e.action, e.weight) for _, e in events]
        assert events[-1][1].action == outcome, (name, events)
        evidence = {e["name"]: e for e in events[-1][1].evidence}
        assert evidence["request-success-rate"]["provider"] == "prometheus"
        assert evidence["request-success-rate"]["window"] == "1m"
        assert "istio_requests_total" in evidence["request-success-rate"]["query"]
        if workload == "healthy":
            assert evidence["request-success-rate"]["value"] == pytest.approx(99.9, abs=0.05)
            assert 100 < evidence["request-duration"]["value"] <= 250
    assert runs["prometheus"] == runs["victoria"]


def test_the_stores_agree_on_values(prometheus_url, victoria_url):
    when = at(T0 + 900)
    for workload in ("healthy-v2", "failing-v2", "slow-v2"):
        for name, template in analysis.BUILTIN.items():
            q = analysis.render_query(template, {"namespace": "bookinfo", "workload": workload, "interval": "1m"})
            a, b = provider(prometheus_url).measure(q, {}, when), provider(victoria_url).measure(q, {}, when)
            assert a == pytest.approx(b, rel=0.3), (workload, name)


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_a_low_traffic_canary_below_min_requests_never_promotes(store):
    ok_metric = [{"name": "request-success-rate", "min": 99}]
    # without a minimum, three requests at 100% look perfect: it promotes (what minRequests is for)
    _, events = walk(store, doc_for("trickle", ok_metric))
    assert events[-1][1].action == "promote"
    # with one, too few requests is no data: onNoData fail rolls it back, never promoting
    rel, events = walk(store, doc_for("trickle", [{**ok_metric[0], "minRequests": 100}]))
    assert "promote" not in [e.action for _, e in events] and rel.status["phase"] == "RolledBack"
    first = events[2][1].evidence[0]
    assert first["outcome"] == "nodata" and "fewer than minRequests 100" in first["message"]
    # the repo-wide default applies too; onNoData hold waits at the first step instead
    doc = doc_for("trickle", ok_metric)
    doc["spec"]["analysis"]["onNoData"] = "hold"
    rel, events = walk(store, doc, {"analysis": {"minRequests": 100}}, passes=12)
    assert [e.action for _, e in events] == ["start", "advance", "hold"] and rel.status["weight"] == 10
    # a healthy canary has enough traffic and promotes with the same minimum
    _, events = walk(store, doc_for("healthy", [{**ok_metric[0], "minRequests": 100}]))
    assert events[-1][1].action == "promote"


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_a_steps_window_excludes_traffic_from_before_its_weight_was_applied(store):
    """stepped-v2 answered 50% errors until APPLIED, then none. A check two
    minutes after its weight was applied at APPLIED judges those two minutes,
    not the 10m the metric asks for."""
    metric = [{"name": "request-success-rate", "min": 99, "interval": "10m"}]
    status = {"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
              "canary": {"version": "v2", "image": "r:2"}, "weight": 10, "step": 1,
              "stepStartedAt": iso(at(APPLIED - 600))}
    rel = release(doc_for("stepped", metric, status))
    providers = {"prometheus": provider(store)}
    now = at(APPLIED + 120)

    def check(**kw):
        checks = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1", now=now, **kw)
        return metrics.run_checks(providers, checks, now)[0]

    aligned = check(applied_at=at(APPLIED))
    assert aligned.outcome == "ok" and aligned.value == pytest.approx(100)
    assert aligned.window == 120 and aligned.to_status()["window"] == "2m" and "[2m]" in aligned.query
    # the step began (status.stepStartedAt) 10 minutes before: its whole window holds the bad traffic
    whole = check()
    assert whole.outcome == "failed" and whole.window == 600 and whole.value < 80
    # right after the weight was applied there is nothing to judge yet: no data, nothing asked
    early = check(applied_at=now - timedelta(milliseconds=400))
    assert early.outcome == "nodata" and "minimum window" in early.message and early.query == ""
    # plan_checks without a clock keeps the configured window (callers that do not align)
    legacy = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1")[0]
    assert legacy.window == 600


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_credentials_and_tenant_header_reach_a_gateway_that_refuses_without_them(store, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    required = {"Authorization": f"Bearer {TOKEN}", "X-Scope-OrgID": "shop"}
    rel = release(doc_for("healthy", BOTH, {
        "phase": "Progressing", "stable": {"version": "v1", "image": "r:1"}, "canary": {"version": "v2", "image": "r:2"},
        "weight": 10, "step": 1, "stepStartedAt": iso(at(T0 + 600))}))
    now = at(T0 + 660)
    checks = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1", now=now)
    with AuthProxy(store, required) as proxy:
        good = metrics.build({"prometheus": {**settings_of(store), "address": proxy.url, "tokenFile": str(token),
                                             "headers": {"X-Scope-OrgID": "shop"}}})
        results = metrics.run_checks(good, checks, now)
        assert [r.outcome for r in results] == ["ok", "ok"] and proxy.refused == 0
        assert all(s.get("authorization") == f"Bearer {TOKEN}" and s.get("x-scope-orgid") == "shop"
                   for s in proxy.seen)
        direct = metrics.run_checks({"prometheus": provider(store)}, checks, now)
        assert [r.value for r in results] == [r.value for r in direct]
        # the wrong tenant, or no token: refused, an error result that holds and never promotes
        for cfg in ({**settings_of(store), "address": proxy.url, "tokenFile": str(token),
                     "headers": {"X-Scope-OrgID": "other"}},
                    {**settings_of(store), "address": proxy.url, "headers": {"X-Scope-OrgID": "shop"}}):
            refused = metrics.run_checks(metrics.build({"prometheus": cfg}), checks, now)
            assert {r.outcome for r in refused} == {"error"} and "401" in refused[0].message
            assert analysis.verdict(refused, rel, {}) == "hold"
        recorded = str([r.to_status() for r in results + refused])
        assert TOKEN not in recorded and proxy.refused == 4
        # a tenant id is not a secret: the record keeps it readable, and short values never garble it
        assert "***" not in recorded


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_basic_auth_reaches_the_gateway(store, tmp_path):
    import base64
    password = tmp_path / "pw"
    password.write_text("s3cret-pass")
    basic = base64.b64encode(b"sluice:s3cret-pass").decode()
    with AuthProxy(store, {"Authorization": f"Basic {basic}"}) as proxy:
        prom = metrics.build({"mimir": {**settings_of(store), "type": "prometheus", "address": proxy.url,
                                        "basicAuth": {"username": "sluice", "passwordFile": str(password)}}})["mimir"]
        q = analysis.render_query(analysis.REQUESTS, {"namespace": "bookinfo", "workload": "healthy-v2",
                                                      "interval": "1m"})
        # 300 requests in the minute; increase_prometheus does not extrapolate to the window's edges (275)
        assert prom.measure(q, {}, at(T0 + 900)) == pytest.approx(300, rel=0.1)
        assert proxy.refused == 0 and "s3cret-pass" not in repr(prom) and basic not in repr(prom)


def boundary_check(url: str, workload: str, metric: dict, provider_=None):
    """One check of ``workload`` 45s after its step's weight was applied, 2s after a sample."""
    applied = at(BOUNDARY + 2)
    now = applied + timedelta(seconds=45)
    status = {"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
              "canary": {"version": "v2", "image": "r:2"}, "weight": 20, "step": 2, "stepStartedAt": iso(applied)}
    rel = release(doc_for(workload.removesuffix("-v2"), [metric], status))
    checks = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1", now=now, applied_at=applied)
    assert checks[0].window == 45
    prov = provider_ or provider(url)
    requests = prov.measure(checks[0].requests_query, {}, now) if checks[0].requests_query else None
    return metrics.run_checks({"prometheus": prov}, checks, now)[0], requests


def test_the_sample_straddling_the_steps_start_is_judged_the_same_on_both_stores(prometheus_url, victoria_url):
    """The first sample after the weight was applied still counts requests from before it. Prometheus
    never counts the increase into the window's first sample; MetricsQL's own rate() does (it starts from
    the last sample before the window): asked the Prometheus way, VictoriaMetrics agrees."""
    metric = {"name": "request-success-rate", "min": 99}
    results = {url: boundary_check(url, "straddle-v2", metric)[0] for url in (prometheus_url, victoria_url)}
    for result in results.values():
        assert result.outcome == "ok" and result.value == pytest.approx(100), result.message
    assert "increase_prometheus(" in results[victoria_url].query and "rate(" not in results[victoria_url].query
    # what flavor: victoriametrics prevents: MetricsQL's rate() judges the previous step's errors as this one's
    plain = Prometheus(victoria_url)
    naive, _ = boundary_check(victoria_url, "straddle-v2", metric, plain)
    assert naive.outcome == "failed" and naive.value < 99


def test_low_traffic_in_the_steps_own_window_is_too_few_on_both_stores(prometheus_url, victoria_url):
    """1 request per sample since the weight was applied, 40 per sample before: with minRequests 20
    both stores say no data; MetricsQL's own increase() would count the previous step's 40 and judge."""
    metric = {"name": "request-success-rate", "min": 99, "minRequests": 20}
    for url in (prometheus_url, victoria_url):
        result, requests = boundary_check(url, "lowafter-v2", metric)
        assert result.outcome == "nodata" and "fewer than minRequests 20" in result.message, (url, result.message)
        assert 7 <= requests <= 10, (url, requests)
    naive, requests = boundary_check(victoria_url, "lowafter-v2", metric, Prometheus(victoria_url))
    assert naive.outcome == "ok" and requests > 40


def test_a_victoriametrics_hiding_its_newest_samples_never_judges_the_previous_steps_traffic():
    """VictoriaMetrics' default -search.latencyOffset (30s) evaluates a query at now - 30s: a step
    applied 45s ago would be judged mostly on the previous step's errors. Asked with
    flavor: victoriametrics it evaluates at the time asked; behind a gateway that drops the arguments
    that say so, the provider's time() probe sees it and the check is an error that holds."""
    now_s = int(time.time())
    base = now_s - now_s % promsupport.STEP        # the newest sample
    applied = base - 43                            # 2s after a sample
    recent = promsupport.History()
    recent.traffic("recent-v2", base - 600, base - 45, rps=5, error_ratio=0.5, p99_ms=200)
    recent.traffic("recent-v2", base - 40, base, rps=5, error_ratio=0.0, p99_ms=200)
    metric = [{"name": "request-success-rate", "min": 99, "interval": "5m"}]
    status = {"phase": "Progressing", "stable": {"version": "v1", "image": "r:1"},
              "canary": {"version": "v2", "image": "r:2"}, "weight": 20, "step": 2, "stepStartedAt": iso(at(applied))}
    rel = release(doc_for("recent", metric, status))

    def check(address, **cfg):
        now = datetime.now(timezone.utc)
        checks = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1", now=now)
        assert 43 <= checks[0].window < 300
        results = metrics.run_checks(metrics.build({"prometheus": {"address": address, **cfg}}), checks, now)
        return results[0], analysis.verdict(results, rel, {})

    with victoria.start(recent, latency_offset=None) as url:
        judged, verdict = check(url, **victoria.PROVIDER)
        assert judged.outcome == "ok" and judged.value == pytest.approx(100) and verdict == "pass", judged.message
        # asked as a plain PromQL store, it judges the previous step's traffic
        naive, verdict = check(url)
        assert naive.outcome == "failed" and verdict == "fail"
        with AuthProxy(url, {}, drop_params=tuple(prometheus_mod.VICTORIA_ARGS)) as gateway:
            hidden, verdict = check(gateway.url, **victoria.PROVIDER)
        assert hidden.outcome == "error" and "-search.latencyOffset" in hidden.message and verdict == "hold"
        assert "s before the time asked" in hidden.message


def test_a_comment_never_stops_the_victoriametrics_rewrite():
    """An apostrophe in a # comment is no string: every rate after it is rewritten too."""
    from reconciler.adapters.metrics.prometheus import prometheus_semantics
    asked = prometheus_semantics('100 * (1 - sum(rate(x{code=~"5.."}[1m])) # the canary\'s errors\n'
                                 ' / sum(rate(x[1m])))  # and a rate( in a comment')
    assert "rate(" not in asked.replace("increase_prometheus(", "") and asked.count("increase_prometheus(") == 2
    assert '"5.."' in asked and "#" not in asked
