"""``sluice plan`` on real git histories: a PR that starts a canary, one that
changes only steps, one that retargets mid-rollout, one with an invalid spec
(exit 1 with file:line), one that touches nothing Sluice owns (exit 0); with
golden text/markdown output and a JSON shape check."""

import json
import pathlib
import shutil

import jsonschema
import pytest

from reconciler.cli.main import main
from tests.support.gitserver import run

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(__file__).parent / "golden"
ENV = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "a@x"}


@pytest.fixture
def repo(tmp_path):
    work = tmp_path / "config"
    shutil.copytree(REPO / "sample-repo", work)
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work, env=ENV)
    run("commit", "-q", "-m", "base", cwd=work, env=ENV)
    return work


def change(work, path, old, new, msg="change"):
    p = work / path
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    run("commit", "-q", "-am", msg, cwd=work, env=ENV)


def plan(capsys, work, fmt="json"):
    code = main(["plan", str(work), "--base", "HEAD~1", "--format", fmt])
    out = capsys.readouterr().out
    return code, (json.loads(out) if fmt == "json" else out)


def test_pr_that_starts_a_canary(repo, capsys):
    change(repo, "releases/bookinfo/productpage.yaml", "version: v1-2\n    image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.1",
           "version: v1-3\n    image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.2")
    code, doc = plan(capsys, repo)
    assert code == 2
    (r,) = doc["releases"]
    assert r["summary"] == "start a canary rollout v1-2 -> v1-3"
    assert [s["weight"] for s in r["schedule"]] == [10, 20, 30, 40, 50, 100]
    assert r["healthySeconds"] == 600 and r["rollbackSeconds"] == 360
    assert "promotion to 100% needs no human approval (gates.promotion: manual adds one)" in r["warnings"]
    assert r["diff"] == ""   # nothing rendered changes until the controller starts the rollout


def test_pr_that_changes_only_steps(repo, capsys):
    change(repo, "releases/bookinfo/reviews.yaml", "steps: [10, 20, 30, 50]", "steps: [5, 10, 20, 30, 50]")
    code, doc = plan(capsys, repo)
    assert code == 2
    assert doc["releases"][0]["summary"] == "change the rollout schedule of the running rollout"


def test_pr_that_retargets_mid_rollout(repo, capsys):
    change(repo, "releases/bookinfo/reviews.yaml", "reviews-v2:1.20.1\n  strategy", "reviews-v3:1.20.1\n  strategy")
    change(repo, "releases/bookinfo/reviews.yaml", "    version: v2\n    image: docker.io/istio/examples-bookinfo-reviews-v3",
           "    version: v3\n    image: docker.io/istio/examples-bookinfo-reviews-v3")
    code = main(["plan", str(repo), "--base", "HEAD~2", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    assert doc["releases"][0]["summary"] == "retarget mid-rollout: v2 goes back to 0%, v3 starts from step 1"


def test_pr_with_an_invalid_spec(repo, capsys):
    change(repo, "releases/shop/checkout.yaml", "port: 8080", "port: eighty")
    code, out = plan(capsys, repo, "text")
    assert code == 1
    assert "releases/shop/checkout.yaml:10:19: spec.service.port: 'eighty' is not of type 'integer'" in out


def test_pr_touching_nothing_sluice_owns(repo, capsys):
    (repo / "docs.md").write_text("notes\n")
    run("add", "-A", cwd=repo, env=ENV)
    run("commit", "-q", "-m", "docs", cwd=repo, env=ENV)
    code, out = plan(capsys, repo, "text")
    assert code == 0 and out == "No release changes.\n"


PLAN_SCHEMA = {
    "type": "object", "required": ["apiVersion", "valid", "exitCode", "releases"],
    "properties": {"apiVersion": {"const": "sluice.dev/plan/v1"}, "valid": {"type": "boolean"},
                   "exitCode": {"enum": [0, 1, 2]},
                   "releases": {"type": "array", "items": {"type": "object", "required": [
                       "release", "file", "change", "summary", "strategy", "schedule", "healthySeconds",
                       "rollbackSeconds", "gates", "warnings", "problems", "diff"]}}},
}


def test_golden_text_markdown_and_json_shape(repo, capsys):
    change(repo, "releases/bookinfo/ratings.yaml", "iterations: 10", "iterations: 4")
    code, doc = plan(capsys, repo)
    jsonschema.validate(doc, PLAN_SCHEMA)
    for fmt in ("text", "markdown"):
        _, out = plan(capsys, repo, fmt)
        golden = GOLDEN / f"plan-ratings.{'md' if fmt == 'markdown' else 'txt'}"
        assert golden.exists(), f"missing golden file {golden}"
        assert out == golden.read_text()


def test_a_route_change_is_not_a_revision_and_prints_no_rollout_schedule(repo, capsys):
    change(repo, "releases/bookinfo/reviews.yaml", "service: {name: reviews, port: 9080, gateways: [mesh]}",
           "service: {name: reviews, port: 9080, gateways: [mesh], http: {timeout: 3s}}")
    code, doc = plan(capsys, repo)
    (r,) = doc["releases"]
    assert r["summary"] == "update the spec: applies at once to every version (not a revision)"
    assert r["schedule"] == [] and r["healthySeconds"] is None and r["revision"] is None
    assert "timeout: 3s" in r["diff"]   # the running rollout's routes get it on the next pass
    code, out = plan(capsys, repo, "text")
    assert "applies at once to every version (not a revision)" in out and "schedule:" not in out
