"""Analysis against a real Prometheus fed backfilled Istio telemetry, and the
whole decision loop driven on it: a healthy canary promotes, an error spike
at step 3 rolls back at the right check, a latency regression rolls back,
no traffic halts then fails, Prometheus down holds and never promotes, and
the comparison with stable catches what a fixed bound misses."""

from datetime import datetime, timezone

import pytest

from reconciler.adapters.metrics.prometheus import Prometheus
from reconciler.core import analysis
from tests.support import drive, prometheus as promsupport
from tests.support.gitserver import free_port
from tests.support.specs import release, release_doc

pytestmark = pytest.mark.timeout(120)

T0 = 1_790_000_000   # start of the simulated day (unix seconds)
STEP_S = 60


def rel_doc(metrics, **spec):
    return release_doc(
        strategy="canary", status={"phase": "Promoted", "stable": {"version": "v1", "image": "r:1"}, "weight": 100},
        analysis={"metrics": metrics}, **spec)


def walk(url, doc, settings=None, *, start=T0 + 300, passes=30):
    """Run the rollout on simulated time, one pass a minute, checks at each pass's time."""
    providers = {"prometheus": Prometheus(url)} if url else {}
    return drive.walk(providers, release(doc), settings, start=datetime.fromtimestamp(start, timezone.utc),
                      passes=passes, every=STEP_S)


@pytest.fixture(scope="module")
def prom_url():
    h = promsupport.History()
    end = T0 + 3600
    h.traffic("reviews-v1", T0, end, rps=50, error_ratio=0.001, p99_ms=200)
    # healthy canary
    h.traffic("healthy-v2", T0, end, rps=5, error_ratio=0.001, p99_ms=200)
    # error spike from minute 13 (the third step's check window)
    h.traffic("spiky-v2", T0, T0 + 300 + 12 * 60, rps=5, error_ratio=0.0, p99_ms=200)
    h.traffic("spiky-v2", T0 + 300 + 12 * 60 + 5, end, rps=5, error_ratio=0.2, p99_ms=200)
    # slow canary
    h.traffic("slow-v2", T0, end, rps=5, error_ratio=0.0, p99_ms=2000)
    # 400 ms p99: under a 500 ms bound, but 2x stable's 200 ms
    h.traffic("regress-v2", T0, end, rps=5, error_ratio=0.0, p99_ms=400)
    h.traffic("regress-v1", T0, end, rps=50, error_ratio=0.0, p99_ms=200)
    # a healthy canary whose last step is 100%: stable serves until that step, then nothing
    h.traffic("full-v2", T0, end, rps=5, error_ratio=0.0, p99_ms=200)
    h.traffic("full-v1", T0, T0 + 300 + 120, rps=50, error_ratio=0.0, p99_ms=200)
    with promsupport.start(h) as url:
        yield url


def named(doc, name):
    doc["metadata"]["name"] = name
    doc["spec"]["service"]["name"] = name
    doc["spec"]["template"]["containers"][0]["name"] = name
    return doc


def test_query_values(prom_url):
    prom = Prometheus(prom_url)
    at = datetime.fromtimestamp(T0 + 600, timezone.utc)
    q = analysis.render_query(analysis.BUILTIN["request-success-rate"],
                              {"namespace": "bookinfo", "workload": "healthy-v2", "interval": "1m"})
    assert prom.query(q, at) == pytest.approx(99.9, abs=0.01)
    q = analysis.render_query(analysis.BUILTIN["request-duration"],
                              {"namespace": "bookinfo", "workload": "healthy-v2", "interval": "1m"})
    assert 100 < prom.query(q, at) <= 250
    assert prom.query('sum(rate(istio_requests_total{destination_workload="nobody"}[1m]))', at) is None


def test_healthy_canary_promotes(prom_url):
    doc = named(rel_doc([{"name": "request-success-rate", "min": 99}, {"name": "request-duration", "max": 500}]),
                "healthy")
    rel, events = walk(prom_url, doc)
    assert [e.action for _, e in events] == ["start", "advance", "advance", "advance", "promote"]
    assert [e.weight for _, e in events] == [0, 10, 20, 50, 100]
    assert events[-1][1].evidence[0]["name"] == "request-success-rate"


def test_error_spike_at_step_three_rolls_back_at_the_right_check(prom_url):
    doc = named(rel_doc([{"name": "request-success-rate", "min": 99}]), "spiky")
    doc["spec"]["strategy"]["canary"] = {"steps": [10, 20, 30, 50], "interval": "5m", "maxFailedChecks": 2}
    rel, events = walk(prom_url, doc, passes=60)
    actions = [e.action for _, e in events]
    assert actions == ["start", "advance", "advance", "advance", "check-failed", "rollback"]
    failed_at = [e for _, e in events if e.action == "check-failed"][0]
    assert failed_at.weight == 30 and failed_at.step == 3          # the spike hit during step 3
    assert events[-1][1].evidence[0]["value"] < 99
    assert rel.status["phase"] == "RolledBack"


def test_latency_regression_rolls_back(prom_url):
    doc = named(rel_doc([{"name": "request-duration", "max": 500}]), "slow")
    rel, events = walk(prom_url, doc)
    assert events[-1][1].action == "rollback"
    assert "request-duration" in events[-1][1].reason


def test_no_traffic_halts_then_fails(prom_url):
    doc = named(rel_doc([{"name": "request-success-rate", "min": 99}]), "silent")
    rel, events = walk(prom_url, doc)
    assert [e.action for _, e in events] == ["start", "advance", "check-failed", "rollback"]
    assert all(e.weight == 10 for _, e in events[2:3])     # never advanced past the first step
    # with onNoData: hold it waits instead, and never promotes
    doc = named(rel_doc([{"name": "request-success-rate", "min": 99}]), "silent")
    doc["spec"]["analysis"]["onNoData"] = "hold"
    rel, events = walk(prom_url, doc, passes=15)
    assert [e.action for _, e in events] == ["start", "advance", "hold"] and rel.status["weight"] == 10


def test_prometheus_down_holds_and_never_promotes():
    doc = named(rel_doc([{"name": "request-success-rate", "min": 99}]), "healthy")
    rel, events = walk(f"http://127.0.0.1:{free_port()}", doc, passes=15)
    assert [e.action for _, e in events] == ["start", "advance", "hold"]
    assert rel.status["phase"] == "Progressing" and rel.status["weight"] == 10
    assert "unreachable" in events[-1][1].reason


def test_comparison_with_stable_catches_what_a_bound_misses(prom_url):
    bound_only = named(rel_doc([{"name": "request-duration", "max": 500}]), "regress")
    _, events = walk(prom_url, bound_only)
    assert events[-1][1].action == "promote"
    compared = named(rel_doc([{"name": "request-duration", "max": 500,
                               "compareToStable": {"maxIncreasePercent": 50}}]), "regress")
    _, events = walk(prom_url, compared)
    last = events[-1][1]
    assert last.action == "rollback" and "worse than stable" in last.reason
    assert last.evidence[0]["stable"] <= 250


def test_templates_and_escaping():
    settings = {"metricTemplates": {"errs": {"query": 'sum(x{ns="{{namespace}}",v="{{ canary_version }}"}[{{ interval }}])', "max": 1}}}
    doc = rel_doc([{"name": "errs"}, {"name": "custom", "query": 'y{r="{{ release }}"}', "min": 0, "interval": "90s"}])
    doc["metadata"]["name"] = 'we"ird'
    checks = analysis.plan_checks(release(doc), settings, canary_version="v2", stable_version="v1")
    assert checks[0].query == 'sum(x{ns="bookinfo",v="v2"}[1m])' and checks[0].max == 1
    assert checks[1].query == 'y{r="we\\"ird"}'
    with pytest.raises(analysis.TemplateError, match="unknown variable"):
        analysis.render_query("{{ nope }}", {"namespace": "x"})


def test_compare_to_stable_at_a_last_step_of_100_percent_uses_stables_last_window(prom_url):
    """At 100% stable has no traffic: its window before the last step is the
    comparison, so a healthy release promotes instead of being rolled back."""
    doc = named(rel_doc([{"name": "request-duration", "max": 500, "compareToStable": {"maxIncreasePercent": 50}}]),
                "full")
    doc["spec"]["strategy"]["canary"] = {"steps": [50, 100], "interval": "1m", "maxFailedChecks": 1}
    rel, events = walk(prom_url, doc)
    assert [e.action for _, e in events] == ["start", "advance", "advance", "promote"], events
    assert events[-1][1].evidence[0]["stable"] == pytest.approx(events[-1][1].evidence[0]["value"], rel=0.5)


@pytest.mark.parametrize("promql,asked", [
    ('sum(rate(x{a="b"}[1m30s])) / sum(rate(x[1m30s]))',
     'sum((increase_prometheus(x{a="b"}[1m30s]) / 90)) / sum((increase_prometheus(x[1m30s]) / 90))'),
    ("sum(increase(x[2m]))", "sum(increase_prometheus(x[2m]))"),
    ("delta(g[5m])", "delta_prometheus(g[5m])"),
    ("irate(x[1m]) + idelta(x[1m])", "irate(x[1m]) + idelta(x[1m])"),                   # no previous-sample issue
    ('rate(x{l="rate(y[1m])"}[5m:1m] offset 1m)', '(increase_prometheus(x{l="rate(y[1m])"}[5m:1m] offset 1m) / 300)'),
    ("sum by (rate) (Rate (x[2m]))", "sum by (rate) ((increase_prometheus(x[2m]) / 120))"),
    ("my_rate(x[1m]) + rates_total", "my_rate(x[1m]) + rates_total"),
    ("rate(rate(x[1m])[5m:])", "(increase_prometheus((increase_prometheus(x[1m]) / 60)[5m:]) / 300)"),
])
def test_victoriametrics_is_asked_with_prometheus_window_semantics(promql, asked):
    from reconciler.adapters.metrics.prometheus import prometheus_semantics
    assert prometheus_semantics(promql) == asked
    vm = Prometheus("http://vm:8428", flavor="victoriametrics")
    assert vm.describe(promql, {}) == asked and Prometheus("http://p:9090").describe(promql, {}) == promql


def test_a_query_victoriametrics_cannot_be_asked_the_prometheus_way_is_an_error_result():
    from reconciler.adapters import metrics
    from reconciler.errors import MetricsError
    vm = Prometheus("http://127.0.0.1:9", flavor="victoriametrics")
    with pytest.raises(MetricsError, match=r"rate\(\) needs a range"):
        vm.translate("rate(x)")   # MetricsQL's own default window would count the sample before it
    assert isinstance(metrics.build({"p": {"address": "http://p", "flavor": "mimir"}})["p"], metrics.Unusable)
