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


# --- an unknown variable: refused at file:line; at run time it errs its metric only ---

def test_an_unknown_variable_errs_its_metric_only_at_run_time():
    from reconciler.adapters import metrics
    checks = plan([{"name": "request-success-rate", "min": 99},
                   {"name": "trial", "query": 'sum(x{pod=~"{{ nope }}.*"}[{{ interval }}])', "max": 1, "dryRun": True}],
                  now=NOW)
    assert checks[0].error == "" and "unknown variable {{ nope }}" in checks[1].error
    asked = []

    class Store:
        kind = "prometheus"

        def describe(self, query, variables):
            return query or ""

        def measure(self, query, variables, at):
            asked.append(query)
            return 90.0

    results = metrics.run_checks({"prometheus": Store()}, checks, NOW)
    assert [r.outcome for r in results] == ["failed", "error"] and "{{ nope }}" in results[1].message
    assert len(asked) == 1   # the metric that cannot be asked is not
    # the dry run never decides: the real metric's failure does
    assert analysis.verdict(results, rel_with([{"name": "x", "query": "q"}]), {}) == "fail"


def test_unplanned_results_hold_each_metric_and_keep_dry_runs():
    rel = rel_with([{"name": "a", "query": "q", "max": 1}, {"name": "b", "query": "q", "max": 1, "dryRun": True}])
    results = analysis.unplanned(rel, "boom")
    assert [(r.name, r.outcome, r.dry_run) for r in results] == [("a", "error", False), ("b", "error", True)]
    assert analysis.verdict(results, rel, {}) == "hold"


@pytest.mark.parametrize("settings,metrics_,line", [
    (b"", [{"name": "x", "query": 'sum(x{a="{{ nope }}"})', "max": 1, "dryRun": True}], "releases"),
    (b"metricTemplates:\n  t: {query: 'sum(x{a=\"{{ nope }}\"})', max: 1}\n", [{"name": "t"}], "sluice.yaml"),
])
def test_an_unknown_variable_in_a_query_is_refused_at_file_line(settings, metrics_, line):
    problems = load(settings, metrics_)
    assert problems and "unknown variable {{ nope }}" in problems[0].message, [str(p) for p in problems]
    assert problems[0].file.startswith(line) and problems[0].line > 1


# --- conditions that can never fail (or never pass) ---

@pytest.mark.parametrize("metric,words", [
    ({"max": float("nan")}, "max: use a finite number"),
    ({"min": float("nan")}, "min: use a finite number"),
    ({"equals": float("nan")}, "equals: use a finite number"),
    ({"notEquals": float("nan")}, "notEquals: use a finite number"),
    ({"range": [float("nan"), 1]}, "range: use a finite number"),
    ({"equals": 1, "tolerance": float("inf")}, "tolerance: use a finite number"),
    ({"max": float("inf")}, "max: use a finite number"),
    ({"min": 5, "max": 1}, "min 5 is above max 1"),
    ({"max": 1, "compareToStable": {"maxIncrease": float("inf")}}, "compareToStable.maxIncrease: use a finite"),
])
def test_conditions_that_no_value_can_fail_or_pass_are_refused(metric, words):
    problems = load(b"", [{"name": "x", "query": "q", **metric}])
    assert len(problems) == 1 and words in problems[0].message, [str(p) for p in problems]
    assert problems[0].file == "releases/bookinfo/reviews.yaml" and problems[0].line > 1


def test_a_min_above_a_max_across_template_and_metric_is_refused():
    settings = b"metricTemplates:\n  t: {query: q, min: 5}\n"
    problems = load(settings, [{"name": "t", "max": 1}])
    assert len(problems) == 1 and "min 5 is above max 1 (with its template's condition)" in problems[0].message
    assert problems[0].path[-1] == "max"
    assert load(b"metricTemplates:\n  ok: {query: q, min: 1}\n", [{"name": "ok", "max": 2}]) == []
    problems = load(b"metricTemplates:\n  bad: {query: q, min: 5, max: 1}\n", [])
    assert problems and problems[0].file == "sluice.yaml" and "min 5 is above max 1" in problems[0].message


def test_compare_to_stable_on_a_web_metric_is_refused():
    settings = b"providers:\n  health: {type: web, url: 'https://h.example.com/', jsonPath: $.ok}\n"
    problems = load(settings, [{"name": "h", "provider": "health", "max": 1,
                                "compareToStable": {"maxIncrease": 1}}])
    assert len(problems) == 1 and "answers about now only" in problems[0].message


# --- provider settings: URLs, timeouts, header values ---

@pytest.mark.parametrize("block,words", [
    (b"{type: web, url: 'http://[::1/x', jsonPath: $.v}", "providers.p.url is not a valid URL"),
    (b"{type: web, url: 'http://127.0.0.1:99999/x', jsonPath: $.v}", "providers.p.url is not a valid URL"),
    (b"{address: 'http://[::1'}", "providers.p.address is not a valid URL"),
    (b"{address: 'http://h:99999'}", "providers.p.address is not a valid URL"),
    (b"{address: 'http://h/prom?x=1'}", "no query string or fragment"),
    (b"{address: 'http://h/prom#x'}", "no query string or fragment"),
    (b"{address: 'http://h', timeout: 100d}", "over the maximum"),
    (b"{address: 'http://h', timeout: 61}", "61 is greater than the maximum of 60"),
    (b"{address: 'http://h', timeout: .nan}", "over the maximum"),
    (b"{address: 'http://h', headers: {X-Api-Key: \"k\\n\"}}", "must be one line of text"),
    (b"{address: 'http://h', headers: {X-A: \"a\\r\\nX-B: b\"}}", "must be one line of text"),
    (b"{address: 'http://h', headers: {X-A: \"caf\\u00e9\\u2028\"}}", "cannot be sent in an HTTP header"),
    (b"{address: 'http://h', flavor: mimir}", "flavor"),
])
def test_provider_settings_that_cannot_work_are_refused_at_file_line(block, words):
    problems = load(b"providers:\n  p: " + block + b"\n", [])
    assert problems and problems[0].file == "sluice.yaml" and problems[0].line == 4, [str(p) for p in problems]
    assert words in problems[0].message, problems[0].message
    assert "k\n" not in problems[0].message and "a\r\n" not in problems[0].message   # a header value is never quoted


def test_provider_settings_that_work_load():
    assert load(b"providers:\n  p: {address: 'http://[::1]:9090/prom', timeout: 60s, flavor: victoriametrics,\n"
                b"      headers: {X-Scope-OrgID: caf\xc3\xa9}}\n", [{"name": "request-success-rate", "min": 99,
                                                                     "provider": "p"}]) == []


def test_a_header_value_with_a_trailing_newline_is_refused_by_both_validators():
    """Python's $ matches before a final newline: the pattern must not rely on it."""
    from reconciler.core import schema
    for name in ("sluice", "policy"):
        kind = "Settings" if name == "sluice" else "Policy"
        doc = {"apiVersion": "sluice.dev/v1alpha1", "kind": kind,
               "providers": {"p": {"address": "http://h", "headers": {"X-Api-Key": "TENANT-API-KEY\n"}}}}
        assert not schema.is_valid(name, doc) and list(schema.errors(name, doc))
        doc["providers"]["p"]["headers"]["X-Api-Key"] = "TENANT-API-KEY"
        assert schema.is_valid(name, doc) and not list(schema.errors(name, doc))


def test_a_policy_header_value_with_a_trailing_newline_is_refused_without_quoting_it():
    from reconciler.core import policy as policies
    text = (b"apiVersion: sluice.dev/v1alpha1\nkind: Policy\nproviders:\n  prometheus:\n    address: http://p\n"
            b"    headers:\n      X-Api-Key: |\n        TENANT-API-KEY-5f2a9c\n")
    _, problems = policies.load(text, "/etc/sluice/policy.yaml")
    assert problems and problems[0].line == 7 and "TENANT-API-KEY" not in str(problems[0])


# --- under a controller policy the repo may not make the controller read its files or call any URL ---

POLICY_NO_PROVIDERS = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Policy",
                       "tenancy": {"folders": {"bookinfo": {"namespaces": ["bookinfo"]}}}}


@pytest.mark.parametrize("policy", [POLICY_NO_PROVIDERS, {**POLICY_NO_PROVIDERS, "providers": {}},
                                    {**POLICY_NO_PROVIDERS, "providers": {"prometheus": {"address": "http://p"}}}])
@pytest.mark.parametrize("block,key", [
    (b"meta: {type: web, url: 'http://169.254.169.254/computeMetadata/v1/x', jsonPath: $, "
     b"headers: {Metadata-Flavor: Google}}", "web providers are the policy file's"),
    (b"prometheus: {address: 'https://kubernetes.default.svc', "
     b"caFile: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt}", "caFile: credentials are the controller's"),
    (b"prometheus: {address: 'https://evil.example', tokenFile: /var/run/secrets/token}", "tokenFile: credentials are"),
    (b"prometheus: {address: 'https://evil.example', basicAuth: {username: u, passwordFile: /p}}",
     "basicAuth: credentials are"),
    (b"mimir: {address: 'http://mimir.monitoring:8080/prometheus', headers: {X-Scope-OrgID: payments-prod}}",
     "headers are the policy file's"),
])
def test_under_a_policy_the_repo_may_not_define_web_providers_nor_read_controller_files(policy, block, key):
    problems = load(b"providers:\n  " + block + b"\n", [], policy)
    assert problems and problems[0].file == "sluice.yaml" and problems[0].line == 4, [str(p) for p in problems]
    assert key in problems[0].message


def test_the_policys_own_providers_may_still_be_web_and_read_files():
    from reconciler.core import policy as policies
    text = (b"apiVersion: sluice.dev/v1alpha1\nkind: Policy\nproviders:\n"
            b"  prometheus: {address: 'https://prom', caFile: /ca.pem, tokenFile: /token}\n"
            b"  health: {type: web, url: 'https://h/{{ workload }}', jsonPath: $.ok, headers: {X-Api-Key: k}}\n")
    policy, problems = policies.load(text, "policy.yaml")
    assert problems == []
    assert load(b"", [{"name": "up", "provider": "health", "equals": 1}], policy) == []
