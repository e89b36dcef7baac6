"""The pure judgement of a check: conditions beyond min/max, dry runs that
never decide, minRequests, windows cut at the step's start, what a result
records (status and commit trailers, read back by history), and the
validation of providers and conditions at file:line, including under a
controller policy."""

from datetime import datetime, timedelta, timezone

import pytest

from reconciler.core import analysis
from reconciler.core.loader import load_files
from reconciler.core.messages import format_commit, parse_commit
from reconciler.core.model import Event, MetricResult
from tests.support.specs import dump, release, release_doc

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
SETTINGS = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"


def rel_with(metrics, status=None, **analysis_spec):
    doc = release_doc(analysis={"metrics": metrics, **analysis_spec}, status=status or {
        "phase": "Progressing", "stable": {"version": "v1", "image": "r:1"}, "canary": {"version": "v2", "image": "r:2"},
        "weight": 10, "step": 1, "stepStartedAt": "2026-11-22T09:58:00Z"})
    return release(doc)


def plan(metrics, settings=None, **kw):
    return analysis.plan_checks(rel_with(metrics), settings or {}, canary_version="v2", stable_version="v1", **kw)


@pytest.mark.parametrize("metric,value,outcome", [
    ({"range": [1, 2]}, 1.0, "ok"), ({"range": [1, 2]}, 2.0, "ok"), ({"range": [1, 2]}, 2.01, "failed"),
    ({"range": [1, 2]}, 0.5, "failed"),
    ({"equals": 1}, 1.0, "ok"), ({"equals": 1}, 0.0, "failed"), ({"equals": 1, "tolerance": 0.1}, 1.05, "ok"),
    ({"equals": 1, "tolerance": 0.1}, 1.2, "failed"),
    ({"notEquals": 0}, 3.0, "ok"), ({"notEquals": 0}, 0.0, "failed"), ({"notEquals": 0, "tolerance": 0.5}, 0.4, "failed"),
])
def test_conditions(metric, value, outcome):
    check = plan([{"name": "x", "query": "q", **metric}])[0]
    result = analysis.evaluate(check, value)
    assert result.outcome == outcome, result.message
    status = result.to_status()
    for key in ("equals", "notEquals", "tolerance"):
        assert status.get(key) == metric.get(key)
    if "range" in metric:
        assert (status["min"], status["max"]) == tuple(metric["range"])


def test_a_metric_condition_replaces_its_templates_kind_of_condition_and_merges_bounds():
    settings = {"metricTemplates": {"t": {"query": "q", "equals": 1, "tolerance": 0.2},
                                    "b": {"query": "q", "min": 1, "max": 10}}}
    own_bound = plan([{"name": "t", "max": 5}], settings)[0]
    assert (own_bound.min, own_bound.max, own_bound.equals, own_bound.tolerance) == (None, 5, None, None)
    own_equality = plan([{"name": "t", "equals": 2}], settings)[0]
    assert (own_equality.equals, own_equality.tolerance) == (2, 0.2)
    merged = plan([{"name": "b", "min": 2}], settings)[0]
    assert (merged.min, merged.max) == (2, 10)   # as before: key by key
    ranged = plan([{"name": "b", "range": [3, 4]}], settings)[0]
    assert (ranged.min, ranged.max, ranged.lower_is_worse) == (3, 4, False)


def test_dry_run_results_are_recorded_but_never_decide():
    rel = rel_with([{"name": "request-success-rate", "min": 99}, {"name": "x", "query": "q", "max": 1, "dryRun": True}])
    checks = analysis.plan_checks(rel, {}, canary_version="v2", stable_version="v1")
    ok = analysis.evaluate(checks[0], 99.9)
    for dry in (analysis.evaluate(checks[1], 5.0), analysis.evaluate(checks[1], None),
                analysis.evaluate(checks[1], None, error="provider down")):
        assert dry.dry_run and not dry.ok and dry.to_status()["dryRun"] is True
        assert analysis.verdict((ok, dry), rel, {}) == "pass"
    assert analysis.verdict((analysis.evaluate(checks[0], 90.0), analysis.evaluate(checks[1], 0.5)), rel, {}) == "fail"
    # a check made of dry runs only judges on time alone
    assert analysis.verdict((analysis.evaluate(checks[1], 5.0),), rel, {}) == "pass"


def test_min_requests_applies_to_the_built_ins_only_and_counts_in_the_window():
    checks = plan([{"name": "request-success-rate", "min": 99}, {"name": "request-duration", "max": 500,
                                                                 "minRequests": 10},
                   {"name": "x", "query": "q", "max": 1}], {"analysis": {"minRequests": 50}}, now=NOW)
    assert [c.min_requests for c in checks] == [50, 10, 0]
    assert checks[0].requests_query.startswith("sum(increase(istio_requests_total{") and "[1m]" in checks[0].requests_query
    assert checks[2].requests_query is None
    few = analysis.evaluate(checks[0], 100.0, requests=3)
    assert few.outcome == "nodata" and few.value == 100.0 and "3 requests in the 1m window" in few.message
    assert analysis.evaluate(checks[0], 100.0, requests=None).outcome == "nodata"        # no series: none
    assert analysis.evaluate(checks[0], 100.0, requests=float("nan")).outcome == "nodata"
    assert analysis.evaluate(checks[0], 100.0, requests=50).outcome == "ok"
    # release-wide default over the repo's
    rel_default = analysis.plan_checks(rel_with([{"name": "request-success-rate", "min": 99}], minRequests=7),
                                       {"analysis": {"minRequests": 50}}, canary_version="v2", stable_version="v1")
    assert rel_default[0].min_requests == 7


def test_min_requests_also_guards_the_stable_side_of_a_comparison():
    check = plan([{"name": "request-duration", "max": 500, "minRequests": 20,
                   "compareToStable": {"maxIncreasePercent": 50}}])[0]
    assert check.stable_requests_query and "reviews-v1" in check.stable_requests_query
    result = analysis.evaluate(check, 200.0, 210.0, requests=100, stable_requests=2)
    assert result.outcome == "nodata" and "requests to stable" in result.message


@pytest.mark.parametrize("since,window,skip", [
    (3600, 300, False), (300, 300, False), (120.7, 120, False), (1.2, 1, False), (0.5, 0, True), (-30, 0, True),
])
def test_windows_start_when_the_weight_was_applied(since, window, skip):
    checks = plan([{"name": "request-success-rate", "min": 99, "interval": "5m"}], now=NOW,
                  applied_at=NOW - timedelta(seconds=since))
    assert checks[0].window == window and bool(checks[0].skip) == skip
    if not skip:
        assert f"[{analysis.format_duration(window)}]" in checks[0].query
        assert checks[0].variables["interval"] == analysis.format_duration(window)
    else:
        result = analysis.evaluate(checks[0], 99.9)
        assert result.outcome == "nodata" and result.query == "" and "minimum window" in result.message


def test_windows_fall_back_to_the_steps_start_then_to_the_interval():
    metric = [{"name": "request-success-rate", "min": 99, "interval": "5m"}]
    assert plan(metric, now=NOW)[0].window == 120        # stepStartedAt 09:58, now 10:00
    assert plan(metric)[0].window == 300                 # no clock: the interval, as before
    no_step = analysis.plan_checks(rel_with(metric, status={"phase": "Progressing", "weight": 10, "step": 1,
                                                            "stepStartedAt": "garbage"}),
                                   {}, canary_version="v2", stable_version="v1", now=NOW)
    assert no_step[0].window == 300


def test_what_a_result_records_reaches_status_commit_and_history():
    check = plan([{"name": "health", "query": "up{x=\"{{ workload }}\"}\n  > 0", "equals": 1, "dryRun": True}],
                 now=NOW)[0]
    result = analysis.evaluate(check, 0.0)
    status = result.to_status()
    assert status == {"name": "health", "value": 0.0, "equals": 1, "ok": False, "outcome": "failed",
                      "message": "0 != 1", "dryRun": True, "window": "1m", "provider": "prometheus",
                      "query": 'up{x="reviews-v2"} > 0'}
    ok = MetricResult("request-success-rate", "ok", 99.9, min=99, provider="mimir", query="sum(x)", window=60)
    message = format_commit(Event("bookinfo/reviews", "advance", "canary v2 10% -> 20%",
                                  evidence=(status, ok.to_status())))
    assert "health 0 (equals 1, over 1m) failed (dry run: not judged)" in message
    assert "request-success-rate 99.9 (min 99, over 1m, via mimir) ok" in message
    parsed = parse_commit(message).evidence()
    assert parsed[0]["dryRun"] is True and parsed[0]["window"] == "1m" and parsed[0]["query"] == 'up{x="reviews-v2"} > 0'
    assert parsed[1] == {"name": "request-success-rate", "value": 99.9, "min": 99.0, "window": "1m",
                         "provider": "mimir", "ok": True, "query": "sum(x)"}


def test_a_long_query_is_recorded_cut():
    check = plan([{"name": "x", "query": "sum(" + "a + " * 400 + "b)", "max": 1}])[0]
    assert len(analysis.evaluate(check, 0.5).query) == analysis.QUERY_CHARS


def load(settings: bytes, metrics, policy=None):
    doc = release_doc(analysis={"metrics": metrics})
    return load_files({"sluice.yaml": SETTINGS + settings, "releases/bookinfo/reviews.yaml": dump(doc).encode()},
                      policy=policy).problems


@pytest.mark.parametrize("metric,words", [
    ({"name": "x", "query": "q", "min": 1, "range": [1, 2]}, "use one condition"),
    ({"name": "x", "query": "q", "equals": 1, "notEquals": 2}, "use one condition"),
    ({"name": "x", "query": "q", "max": 1, "tolerance": 0.1}, "tolerance applies to equals or notEquals only"),
    ({"name": "x", "query": "q", "range": [2, 1]}, "is empty"),
    ({"name": "x", "query": "q", "max": 1, "minRequests": 5}, "minRequests counts the Istio requests"),
    ({"name": "request-success-rate", "min": 99, "provider": "thanos"}, "provider 'thanos' is not defined"),
    ({"name": "request-success-rate", "min": 99, "provider": "health"}, "is a built-in PromQL metric"),
    ({"name": "h", "provider": "health", "query": "up"}, "a metric for it has no query"),
])
def test_invalid_analysis_is_reported_at_file_line(metric, words):
    settings = b"providers:\n  health: {type: web, url: 'https://h.example.com/', jsonPath: $.ok}\n"
    problems = load(settings, [metric])
    assert len(problems) == 1 and words in problems[0].message, [str(p) for p in problems]
    assert problems[0].file == "releases/bookinfo/reviews.yaml" and problems[0].line > 1


def test_valid_analysis_loads():
    settings = (b"providers:\n  prometheus: {address: 'http://p:9090'}\n  thanos: {address: 'https://t', caFile: /ca}\n"
                b"  health: {type: web, url: 'https://h.example.com/{{ release }}', method: POST,\n"
                b"           body: '{\"w\": \"{{ workload }}\"}', jsonPath: '{$.ok}', timeout: 2s}\n"
                b"metricTemplates:\n  up: {provider: health, equals: 1}\n"
                b"analysis: {minRequests: 20}\n")
    metrics = [{"name": "request-success-rate", "min": 99, "provider": "thanos", "minRequests": 100},
               {"name": "up", "dryRun": True}, {"name": "ready", "provider": "health", "notEquals": 0},
               {"name": "x", "query": "q", "range": [0, 1]}, {"name": "y", "query": "q", "provider": "prometheus"}]
    assert load(settings, metrics) == []


def test_under_a_policy_with_providers_the_repos_are_ignored_and_may_not_hold_credentials():
    policy = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Policy",
              "providers": {"prometheus": {"address": "http://p"}, "mimir": {"address": "http://m",
                                                                            "tokenFile": "/t"}}}
    repo = b"providers:\n  vm: {address: 'http://vm'}\n"
    assert load(repo, [{"name": "request-success-rate", "min": 99, "provider": "mimir"}], policy) == []
    problems = load(repo, [{"name": "request-success-rate", "min": 99, "provider": "vm"}], policy)
    assert "not defined in the controller policy's providers (defined: mimir, prometheus)" in problems[0].message
    secret = b"providers:\n  vm: {address: 'http://vm', tokenFile: /var/run/secrets/token}\n"
    problems = load(secret, [], policy)
    assert problems and problems[0].file == "sluice.yaml" and "credentials are the controller's" in problems[0].message
    # without a policy the repo's providers are the ones in force
    assert load(repo, [{"name": "request-success-rate", "min": 99, "provider": "vm"}]) == []


def test_policy_file_providers_are_validated_like_the_repos():
    from reconciler.core import policy as policies
    text = (b"apiVersion: sluice.dev/v1alpha1\nkind: Policy\nproviders:\n"
            b"  health: {type: web, url: 'https://h/{{ nope }}', jsonPath: '$.ok'}\n")
    _, problems = policies.load(text, "policy.yaml")
    assert problems and "unknown variable {{ nope }}" in problems[0].message and problems[0].line == 4


def test_provider_schemas_of_repo_and_policy_agree():
    from reconciler.core import schema
    assert schema.schema("sluice")["$defs"] == schema.schema("policy")["$defs"]


def test_the_dashboard_metrics_show_dry_runs():
    from prometheus_client import generate_latest

    from reconciler.controller import PassReport
    from reconciler.runtime import Metrics
    report = PassReport()
    report.analysis["bookinfo/reviews"] = (
        MetricResult("request-success-rate", "ok", 99.9, min=99),
        MetricResult("trial", "failed", 7.0, max=1, dry_run=True))
    m = Metrics()
    m.observe_pass(report, 0.1)
    text = generate_latest(m.registry).decode()
    assert 'sluice_analysis_ok{metric="trial",release="bookinfo/reviews"} 0.0' in text
    assert 'sluice_analysis_dry_run{metric="trial",release="bookinfo/reviews"} 1.0' in text
    assert 'sluice_analysis_ok{metric="request-success-rate",release="bookinfo/reviews"} 1.0' in text
    assert 'sluice_analysis_value{metric="trial",release="bookinfo/reviews"} 7.0' in text
