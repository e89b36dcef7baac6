"""Fail closed, release by release (invariants 7 and 9), on the kubernetes target
against the API emulator and a real git remote:

- a status that cannot be trusted holds its release at file:line while the
  others roll out, and the pass never raises;
- a lost status block starts the strategy from its first step, never a promotion;
- a rollback applied before its commit is never undone, whatever git says,
  until its commit lands;
- a new version that stops being ready mid-rollout holds its weight, fails
  its checks and is rolled back after progressDeadline;
- the runner survives a pass that raises.
"""

import pytest
import yaml

from reconciler.core.observed import ROLLBACK_ANNOTATION
from tests.support.cluster_env import Env, promoted
from tests.support.gitserver import make_bare, run
from tests.support.specs import dump

pytestmark = pytest.mark.timeout(120)


spec = promoted


LIVE = {"phase": "Progressing", "stable": {"version": "v1", "image": "example.com/{n}:v1"},
        "canary": {"version": "v2", "image": "example.com/{n}:v2"}, "weight": 10, "step": 1, "failedChecks": 0,
        "startedAt": "2026-11-22T09:00:00Z", "stepStartedAt": "2026-11-22T09:00:00Z"}


def live_status(name, **change):
    out = yaml.safe_load(yaml.safe_dump(LIVE).replace("{n}", name))
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


BAD = {
    "naive": dict(stepStartedAt="2026-11-22 09:00:00"),
    "future": dict(stepStartedAt="2031-01-01T00:00:00Z"),
    "noversion": dict(canary={"image": "example.com/noversion:v2"}),
    "shortened": dict(step=7),
}


def test_untrusted_statuses_hold_at_file_line_while_the_others_roll_out(tmp_path, emu):
    docs = [spec("healthy")] + [spec(n, status=live_status(n, **change)) for n, change in BAD.items()]
    env = Env(tmp_path, emu, docs)
    # what each bad release runs now: its stable version (it must be left as it runs)
    for n in BAD:
        env.emu.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": f"{n}-v1", "namespace": "bookinfo", "labels": {
                "app.kubernetes.io/managed-by": "sluice", "sluice.dev/release": n,
                "sluice.dev/release-namespace": "bookinfo", "sluice.dev/instance": "sluice", "app": n, "version": "v1"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": n, "version": "v1"}},
                     "template": {"metadata": {"labels": {"app": n, "version": "v1"}},
                                  "spec": {"containers": [{"name": n, "image": f"example.com/{n}:v1"}]}}}})
    before = {n: env.status(n) for n in BAD}
    phases = []
    for _ in range(6):
        report = env.tick()
        assert report.error is None
        phases.append(report.outcomes["bookinfo/healthy"].phase)
        held = {p.release: p for p in report.problems}
        for n in BAD:
            problem = held[f"bookinfo/{n}"]
            assert problem.file == f"releases/bookinfo/{n}.yaml" and problem.line > 1, problem
            assert env.status(n) == before[n]                       # nothing committed for it
            assert emu.get("virtualservices", "bookinfo", n) is None   # nothing applied for it
            assert emu.get("deployments", "bookinfo", f"{n}-v1") is not None   # nothing pruned
    assert env.status("healthy")["phase"] == "Promoted" and env.status("healthy")["stable"]["version"] == "v2"
    assert "future" in str(held["bookinfo/future"]) and "RFC 3339" in str(held["bookinfo/naive"])
    assert "steps" in str(held["bookinfo/shortened"]) and "version" in str(held["bookinfo/noversion"])


def test_a_lost_status_starts_the_strategy_and_never_promotes(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(target={"version": "v1", "image": "example.com/reviews:v1"})])
    env.tick()
    env.tick()
    assert env.weights() == {"v1": 100}

    def lose_status_and_retarget(text):
        text = text.split("status:")[0]
        return text.replace("version: v1\n    image: example.com/reviews:v1",
                            "version: v2\n    image: example.com/reviews:v2")
    env.edit("reviews", lose_status_and_retarget, "bad merge: status lost, target v2")
    seen = []
    for _ in range(8):
        env.tick()
        seen.append(env.weights())
        if env.status()["phase"] == "Promoted":
            break
    first = env.status()
    assert seen[0] == {"v1": 100}, seen                  # nothing moved before the first step
    assert {"v1": 90, "v2": 10} in seen and {"v1": 50, "v2": 50} in seen   # every step ran
    subjects = run("log", "--format=%s", "main", cwd=env.bare).splitlines()
    assert any("start canary v1 -> v2" in s and "status was missing" in s for s in subjects), subjects
    assert first["stable"]["version"] == "v2"


def test_an_adopted_status_when_the_target_already_runs(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(target={"version": "v1", "image": "example.com/reviews:v1"})])
    env.tick()
    env.edit("reviews", lambda t: t.split("status:")[0], "status lost")
    emu.reset_counts()
    report = env.tick()
    assert report.outcomes["bookinfo/reviews"].event.action == "adopt"
    assert env.weights() == {"v1": 100} and emu.writes() == 0


def test_a_rollback_whose_commit_did_not_land_is_never_undone(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(progressDeadline="2m")])
    env.tick()
    env.tick()
    assert env.weights() == {"v1": 90, "v2": 10}
    # the new version stops being ready at 10%: held, then rolled back after the deadline
    emu.set_ready("bookinfo", "reviews-v2", False)
    env.tick(ready=False)
    assert env.weights() == {"v1": 90, "v2": 10} and env.status()["notReadySince"]
    env.block_pushes()
    report = env.tick(seconds=200, ready=False)
    assert report.error and not report.pushed
    assert env.weights() == {"v1": 100}                      # applied at once, without its commit
    vs = emu.get("virtualservices", "bookinfo", "reviews")
    assert "v2" in vs["metadata"]["annotations"][ROLLBACK_ANNOTATION]
    # pods come back, git still says Progressing at 10%: traffic must not return to v2
    emu.set_ready("bookinfo", "reviews-v2")
    for _ in range(3):
        env.tick(seconds=61, ready=False)
        assert env.weights() == {"v1": 100}
    # a person's kubectl edit of the weights is repaired back to the rollback, not to git's 10%
    env.block_pushes(False)
    report = env.tick(seconds=1, ready=False)
    assert report.pushed and env.status()["phase"] == "Failed"
    assert env.weights() == {"v1": 100}
    vs = emu.get("virtualservices", "bookinfo", "reviews")
    assert ROLLBACK_ANNOTATION not in ((vs["metadata"].get("annotations")) or {})   # cleared once it landed


def _to_twenty(env):
    for _ in range(3):
        env.tick()
    assert env.weights() == {"v1": 80, "v2": 20}


def test_an_unready_version_mid_rollout_holds_and_fails_its_checks(tmp_path, emu):
    env = Env(tmp_path, emu, [spec()])    # maxFailedChecks 2
    _to_twenty(env)
    emu.set_ready("bookinfo", "reviews-v2", False)
    env.tick(ready=False)
    assert env.weights() == {"v1": 80, "v2": 20} and env.status()["failedChecks"] == 1
    env.tick(ready=False)
    status = env.status()
    assert status["phase"] == "RolledBack" and "not ready" in status["message"]
    assert env.weights() == {"v1": 100}


def test_progress_deadline_rolls_back_mid_rollout(tmp_path, emu):
    doc = spec(progressDeadline="10m")
    doc["spec"]["strategy"]["canary"]["maxFailedChecks"] = 100
    env = Env(tmp_path, emu, [doc])
    _to_twenty(env)
    emu.set_ready("bookinfo", "reviews-v2", False)
    for _ in range(5):
        env.tick(ready=False)
        assert env.weights() == {"v1": 80, "v2": 20}      # held, never advanced
    env.tick(seconds=600, ready=False)
    status = env.status()
    assert status["phase"] == "Failed" and "progressDeadline" in status["message"], status
    assert env.weights() == {"v1": 100}


def test_sluice_run_with_every_malformed_status_beside_healthy_releases(tmp_path):
    """The process stays up, /healthz is 200, the healthy releases promote as if the
    bad ones were not there, and each bad one is named with its file:line."""
    import os
    import pathlib
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.support.gitserver import free_port

    def healthy(name):
        doc = spec(name)
        doc["spec"]["strategy"]["canary"]["interval"] = "1s"
        return doc
    files = {f"releases/bookinfo/{n}.yaml": dump(healthy(n)) for n in ("alpha", "omega")}
    for n, change in BAD.items():
        files[f"releases/bookinfo/{n}.yaml"] = dump(spec(n, status=live_status(n, **change)))
    bare = make_bare(tmp_path, seed=files)
    port = free_port()
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "SLUICE_WORKDIR": str(tmp_path / "work"), "SLUICE_INTERVAL": "1s"}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "run", "--repo", str(bare), "--target", "git",
                             "--no-watch", "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def status_of(name):
        return yaml.safe_load(run("show", f"main:releases/bookinfo/{name}.yaml", cwd=bare)).get("status") or {}
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(
                status_of(n).get("stable", {}).get("version") == "v2" for n in ("alpha", "omega")):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert all(status_of(n)["stable"]["version"] == "v2" for n in ("alpha", "omega"))
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        for n in BAD:
            assert run("show", f"main:releases/bookinfo/{n}.yaml", cwd=bare) == files[f"releases/bookinfo/{n}.yaml"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for n in BAD:
        assert f"releases/bookinfo/{n}.yaml:" in err, (n, err[-3000:])
    assert "Traceback" not in err


def _with_env(text, value):
    doc = yaml.safe_load(text)
    doc["spec"]["template"]["containers"][0]["env"] = [{"name": "FLAG", "value": value}]
    return dump(doc)


def _lose_status(text):
    doc = yaml.safe_load(text)
    doc.pop("status")
    return dump(doc)


def _pods(emu):
    return {d["metadata"]["name"]: ([e["value"] for c in d["spec"]["template"]["spec"]["containers"]
                                     for e in c.get("env") or []], d["spec"].get("replicas"))
            for d in emu.objects("deployments").values()}


@pytest.mark.parametrize("abort", [True, False])
def test_a_lost_status_never_puts_other_content_on_a_deployment_of_the_same_name(tmp_path, emu, abort):
    """A template edit under the same version (revision v1-<hash>); then, aborted or mid-way,
    the status is lost. Rebuilding from what runs would put the new template on reviews-v1's
    pods at once: the release holds at file:line instead."""
    env = Env(tmp_path, emu, [spec(target={"version": "v1", "image": "example.com/reviews:v1"})])
    env.tick()
    env.tick()
    env.edit("reviews", lambda t: _with_env(t, "bad"), "template edit")
    env.tick()
    env.tick()
    if abort:
        env.edit("reviews", lambda t: t.replace("spec:\n", "spec:\n  abort: true\n", 1), "abort")
        env.tick()
    before, weights = _pods(emu), env.weights()
    env.edit("reviews", _lose_status, "bad merge: status lost")
    for _ in range(2):
        report = env.tick()
        assert any(p.release == "bookinfo/reviews" and "status is missing" in p.message for p in report.problems)
    assert _pods(emu) == before and env.weights() == weights
    assert _pods(emu)["reviews-v1"][0] == []              # stable still runs what it ran
