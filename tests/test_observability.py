"""The Grafana dashboard and the PrometheusRule in deploy/ read metrics the
controller really exports, parse as PromQL, and the alerts fire when they should:
``promtool check rules`` / ``promtool test rules`` on the rule file, and a real
Prometheus scraping a real controller's /metrics through a rollback."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.controller import Controller
from reconciler.runtime import Metrics, Runner, Server
from tests.support import prometheus as prom
from tests.support.drive import T0
from tests.support.gitserver import make_bare
from tests.support.specs import dump, release_doc
from tests.support.tools import require
from tests.support.webserver import Server as JSONServer

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sluice.json"
UNIT_TESTS = Path(__file__).parent / "fixtures" / "prometheus-rules.test.yaml"
# Grafana's own variables, as Grafana substitutes them before a query reaches Prometheus
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "30s", "$release": ".*"}


def rule_doc() -> dict:
    return yaml.safe_load(RULES.read_text())


def alerts() -> dict[str, dict]:
    return {r["alert"]: r for g in rule_doc()["spec"]["groups"] for r in g["rules"] if "alert" in r}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    out += [v["definition"].removeprefix("label_values(").split(",")[0]
            for v in dash["templating"]["list"] if v["type"] == "query"]
    for i, e in enumerate(out):
        for var, value in GRAFANA_VARS.items():
            e = e.replace(var, value)
        out[i] = e
    return out


def exported_names() -> set[str]:
    """Every sample name the controller's registry can export (counters' _total, histograms' _bucket...)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def sluice_names(expr: str) -> set[str]:
    return set(re.findall(r"\bsluice_[a-z_]+\b", expr))


def test_the_rules_are_a_prometheus_rule_with_the_alerts_a_platform_team_wants():
    doc = rule_doc()
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    got = alerts()
    for name in ("SluiceRollback", "SluiceReleaseStuck", "SluicePassesFailing", "SluiceNoLeader",
                 "SluiceSignatureRefused"):
        assert name in got, name
    for name, rule in got.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_metric_the_rules_and_the_dashboard_read_is_exported_by_the_controller():
    known = exported_names()
    used = set()
    for rule in alerts().values():
        used |= sluice_names(rule["expr"])
    for expr in dashboard_exprs():
        used |= sluice_names(expr)
    assert used, "no sluice_ metric found: the parser is broken"
    assert used - known == set(), f"not exported by reconciler.runtime.Metrics: {sorted(used - known)}"


def test_promtool_checks_the_rules_and_their_unit_tests_pass(tmp_path):
    promtool = require("promtool", "prometheus")
    (tmp_path / "sluice-rules.yml").write_text(yaml.safe_dump(rule_doc()["spec"]))
    (tmp_path / "rules.test.yaml").write_text(UNIT_TESTS.read_text())
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "sluice-rules.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(alerts())} rules found" in check.stdout
    unit = subprocess.run([promtool, "test", "rules", str(tmp_path / "rules.test.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    assert {"SluiceRollback", "SluiceReleaseStuck", "SluicePassesFailing", "SluiceNoLeader",
            "SluiceSeveralLeaders", "SluiceSignatureRefused", "SluiceNotificationsFailing"} <= tested


def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each panel's query (Grafana variables substituted) as a recording rule."""
    promtool = require("promtool", "prometheus")
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    (tmp_path / "dash.yml").write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "dash.yml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(exprs)} rules found" in check.stdout


def test_the_dashboard_is_importable_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]   # no hard-coded data source
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for what in ("weight", "checks", "rollback", "pass duration", "errors", "leader"):
        assert what in titles, what
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "release"} <= variables


# --- a real Prometheus, a real controller ----------------------------------------------------------

def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _wait(what: str, fn, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.mark.slow
def test_a_real_rollback_fires_the_rollback_alert_in_a_real_prometheus(tmp_path):
    """The controller exports the rollback series at 0 before the rollback, so the
    alert's increase() sees the first one: Prometheus scrapes /metrics every second
    and evaluates deploy/prometheus-rules.yaml every second."""
    web = JSONServer()
    web.answer("/health", {"ok": 0})     # the canary's health check fails
    settings = ("apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"
                f"providers:\n  synth: {{type: web, url: '{web.url}/health', jsonPath: '$.ok'}}\n")
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["analysis"] = {"metrics": [{"name": "health", "provider": "synth", "min": 1}]}
    doc["spec"]["strategy"] = {"canary": {"steps": [50], "interval": "1m", "maxFailedChecks": 1}}
    bare = make_bare(tmp_path, seed={"sluice.yaml": settings, "releases/bookinfo/reviews.yaml": dump(doc)})
    now = [T0]
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget(), clock=lambda: now[0])
    metrics = Metrics()
    server = Server("127.0.0.1", 0, Runner(lambda: None), metrics)
    server.start()

    def run_pass():
        now[0] += timedelta(minutes=2)
        report = ctl.run_pass()
        metrics.observe_pass(report, 0.01)
        return report.outcomes["bookinfo/reviews"]

    config = ("global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [sluice-rules.yml]\n"
              f"scrape_configs:\n  - job_name: sluice\n    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n")
    try:
        with prom.start(config=config, files={"sluice-rules.yml": yaml.safe_dump(rule_doc()["spec"])}) as url:
            assert run_pass().phase == "Progressing"
            query = urllib.parse.quote('sluice_release_events_total{action="rollback",release="bookinfo/reviews"}')
            _wait("the rollback series at 0 scraped",
                  lambda: _get(f"{url}/api/v1/query?query={query}")["data"]["result"])
            firing = lambda: [a for a in _get(f"{url}/api/v1/alerts")["data"]["alerts"]   # noqa: E731
                              if a["labels"]["alertname"] == "SluiceRollback" and a["state"] == "firing"]
            assert not firing()
            phases = [run_pass().phase for _ in range(4)]
            assert "RolledBack" in phases, phases
            got = _wait("SluiceRollback firing", firing)
            assert got[0]["labels"]["release"] == "bookinfo/reviews"
            assert got[0]["annotations"]["summary"] == "bookinfo/reviews was rolled back"
            rules = _get(f"{url}/api/v1/rules")["data"]["groups"]
            assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
    finally:
        server.stop()
        web.close()


def test_the_overdue_time_is_exported_while_progressing_and_removed_after():
    """sluice_release_overdue_timestamp_seconds: progressDeadline + (maxFailedChecks+1) intervals after the
    step started, for a Progressing release only."""
    from reconciler.controller import ReleaseOutcome, PassReport
    from reconciler.core.decide import overdue_at
    from tests.support.specs import release
    rel = release(status={"phase": "Progressing", "weight": 10, "step": 1, "stepStartedAt": "2026-11-22T10:00:00Z",
                          "stable": {"version": "v1", "image": "r:1"}, "canary": {"version": "v2", "image": "r:2"}},
                  progressDeadline="5m")
    rel.doc["spec"]["strategy"] = {"canary": {"steps": [10, 50], "interval": "1m", "maxFailedChecks": 2}}
    due = overdue_at(rel)
    assert due == T0 + timedelta(minutes=5 + 3)
    assert overdue_at(rel.with_status({**rel.status, "phase": "WaitingApproval"})) is None
    metrics = Metrics()
    report = PassReport(outcomes={rel.key: ReleaseOutcome(rel.key, "Progressing", 10, 1, overdue_at=due)})
    metrics.observe_pass(report, 0.1)
    sample = metrics.registry.get_sample_value("sluice_release_overdue_timestamp_seconds", {"release": rel.key})
    assert sample == due.timestamp()
    metrics.observe_pass(PassReport(outcomes={rel.key: ReleaseOutcome(rel.key, "Promoted", 100, 0)}), 0.1)
    assert metrics.registry.get_sample_value("sluice_release_overdue_timestamp_seconds", {"release": rel.key}) is None
