"""A step is judged on its own traffic: its analysis window opens when its
routing is live, never at the commit alone.

The kubernetes target knows the routing is live when the VirtualService it
last observed is what Sluice would apply, since the moment its apply
returned (or, after a restart, Sluice's managedFields time). The decision
holds checks while it is not live, records when it became live
(``status.appliedAt``, the ``Sluice-Applied-After`` trailer), holds the
rollout with a message past the target's deadline, and never lets that wait
delay a rollback."""

from datetime import timedelta

import pytest

from reconciler.core.decide import APPLIED_RECHECK, APPLIED_RECHECK_LATER, Observations, analysis_due, decide, window_start
from reconciler.core.messages import format_commit
from reconciler.core.model import Applied, MetricResult, Readiness
from tests.support import ssa
from tests.support.cluster_env import Env, promoted
from tests.support.drive import T0
from tests.support.gitserver import run
from tests.support.specs import release

pytestmark = pytest.mark.timeout(180)


# --- the emulator moves a manager's managedFields time as a real API server does --------------
def test_managed_fields_time_moves_when_the_manager_changes_a_value_it_owns(emu, monkeypatch):
    clock = iter(f"2026-11-25T10:00:0{i}Z" for i in range(10))
    monkeypatch.setattr(ssa, "now", lambda: next(clock))
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "r", "namespace": "ns"},
          "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "subset": "a"}, "weight": 100}]}]}}

    def times(obj):
        return {e["manager"]: e["time"] for e in obj["metadata"]["managedFields"]}
    first = times(emu.apply_as("sluice", vs))
    same = times(emu.apply_as("sluice", vs))
    assert same == first   # a no-op apply moves nothing
    vs["spec"]["http"][0]["route"][0]["weight"] = 90
    moved = times(emu.apply_as("sluice", vs))
    assert moved["sluice"] > first["sluice"]   # same field set, a value it owns changed
    emu.edit("virtualservices", "ns", "r", lambda o: o["spec"]["http"][0].update(timeout="5s"), manager="person")
    after = times(emu.get("virtualservices", "ns", "r"))
    assert after["sluice"] == moved["sluice"]   # another manager's change does not move Sluice's time


# --- the decision, with the target's answer as an observation ---------------------------------
def progressing(step_started=T0, **extra):
    status = {"phase": "Progressing", "stable": {"version": "v1", "image": "example.com/reviews:v1"},
              "canary": {"version": "v2", "image": "example.com/reviews:v2"}, "weight": 10, "step": 1,
              "failedChecks": 0, "startedAt": (step_started - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "stepStartedAt": step_started.strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
    return release(status=status)


READY = {"v2": Readiness("v2", "ready"), "v1": Readiness("v1", "ready")}


def test_no_check_is_due_before_the_routing_is_live():
    rel = progressing()
    later = T0 + timedelta(minutes=5)
    assert analysis_due(rel, later)   # by the commit alone it would be
    waiting = Applied(None, waiting="argocd Application argocd/shop: at 1a2b3c4 (OutOfSync)", deadline=600)
    assert not analysis_due(rel, later, waiting)
    d = decide(rel, Observations(READY, applied=waiting), later)
    assert d.event is None and d.status == rel.status and d.next_check_in == APPLIED_RECHECK_LATER
    soon = decide(rel, Observations(READY, applied=waiting), T0 + timedelta(seconds=10))
    assert soon.next_check_in == APPLIED_RECHECK   # looked at often at first, then less (a stuck applier)


def test_the_window_and_the_next_check_start_when_the_routing_went_live():
    rel = progressing()
    live = Applied(T0 + timedelta(seconds=40))
    assert not analysis_due(rel, T0 + timedelta(seconds=61), live)   # 21 s of its own traffic: not yet
    assert analysis_due(rel, T0 + timedelta(seconds=101), live)
    assert window_start(rel, live) == T0 + timedelta(seconds=40)
    d = decide(rel, Observations(READY, analysis=(), verdict="pass", applied=live), T0 + timedelta(seconds=101))
    assert d.status["step"] == 2 and "appliedAt" not in d.status   # a new step starts without it
    message = format_commit(d.event)
    assert "Sluice-Applied-After: 40.0s" in message and "live 40.0s after its commit" in message


def test_a_failed_check_records_when_its_step_went_live():
    rel = progressing()
    live = Applied(T0 + timedelta(seconds=40, microseconds=5))
    failed = (MetricResult("m", "failed", 1.0),)
    d = decide(rel, Observations(READY, analysis=failed, verdict="fail", applied=live), T0 + timedelta(seconds=101))
    assert d.status["failedChecks"] == 1
    # whole seconds, rounded up: never a moment before the routing was live
    assert d.status["appliedAt"] == (T0 + timedelta(seconds=41)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_past_the_deadline_the_rollout_is_held_once_and_goes_on_when_live():
    rel = progressing()
    waiting = Applied(None, waiting="flux Kustomization flux-system/apps: at 1a2b3c4, waiting for 5d6e7f8",
                      deadline=300)
    early = decide(rel, Observations(READY, applied=waiting), T0 + timedelta(seconds=200))
    assert early.event is None
    held = decide(rel, Observations(READY, applied=waiting), T0 + timedelta(seconds=301))
    assert held.event is not None and held.event.action == "hold"
    assert held.status["heldBy"] == "applier" and held.status["phase"] == "Progressing"
    assert "5d6e7f8" in held.status["message"] and "5m" in held.status["message"]
    assert held.status["weight"] == 10 and held.status["step"] == 1
    again = decide(rel.with_status(held.status), Observations(READY, applied=waiting), T0 + timedelta(seconds=400))
    assert again.event is None   # held once, not a commit per pass
    live = Applied(T0 + timedelta(seconds=420))
    resumed = decide(rel.with_status(held.status), Observations(READY, applied=live), T0 + timedelta(seconds=421))
    assert resumed.event is not None and "heldBy" not in resumed.status
    assert resumed.status["appliedAt"] == (T0 + timedelta(seconds=420)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_while_the_next_step_is_not_live_the_canary_is_still_judged_and_a_failure_counts():
    rel = progressing(weight=20, step=2)
    waiting = Applied(None, waiting="argocd Application argocd/shop: at 1a2b3c4 (OutOfSync)", deadline=600)
    bad = (MetricResult("request-success-rate", "failed", 50.0, min=99),)
    d = decide(rel, Observations(READY, analysis=bad, verdict="fail", applied=waiting, guard=True), T0 + timedelta(seconds=70))
    assert d.status["failedChecks"] == 1 and d.status["step"] == 2 and d.event.action == "check-failed"
    assert "not applied yet" in d.status["message"]
    good = (MetricResult("request-success-rate", "ok", 100.0, min=99),)
    d = decide(rel, Observations(READY, analysis=good, verdict="pass", applied=waiting, guard=True), T0 + timedelta(seconds=70))
    assert d.event is None and d.status["step"] == 2   # a pass at the old weight never advances the new step
    empty = (MetricResult("request-success-rate", "nodata", None, min=99),)
    d = decide(rel, Observations(READY, analysis=empty, verdict="fail", applied=waiting, guard=True), T0 + timedelta(seconds=70))
    assert d.event is None and not d.status["failedChecks"]   # no traffic at the old weight is not a failure
    last = progressing(weight=20, step=2, failedChecks=2)
    d = decide(last, Observations(READY, analysis=bad, verdict="fail", applied=waiting, guard=True), T0 + timedelta(seconds=70))
    assert d.status["phase"] == "RolledBack" and d.status["weight"] == 0


def test_a_rollout_whose_first_commit_is_not_applied_is_held_not_failed():
    rel = progressing(weight=0, step=0)
    waiting = Applied(None, waiting="flux Kustomization flux-system/apps: at 1a2b3c4, waiting for 5d6e7f8",
                      deadline=300)
    missing = {"v1": Readiness("v1", "ready"), "v2": Readiness("v2", "missing", "no Deployment yet")}
    d = decide(rel, Observations(missing, applied=waiting), T0 + timedelta(minutes=11))   # past progressDeadline
    assert d.status["phase"] == "Progressing" and d.status.get("heldBy") == "applier"
    assert "flux Kustomization" in d.status["message"]
    # applied late: the version gets its whole progressDeadline from then
    live = Applied(T0 + timedelta(minutes=12))
    d = decide(rel, Observations(missing, applied=live), T0 + timedelta(minutes=15))
    assert d.status["phase"] == "Progressing"
    d = decide(rel, Observations(missing, applied=live), T0 + timedelta(minutes=23))
    assert d.status["phase"] == "Failed"


def test_the_deadline_counts_from_when_the_wait_began_not_from_the_step():
    rel = progressing()
    # a person re-rendered the file 20 minutes into a 30-minute step: a new commit to wait for
    fresh = Applied(None, waiting="argocd ...: waiting for 09abf7f", deadline=600,
                    since=T0 + timedelta(minutes=20))
    d = decide(rel, Observations(READY, applied=fresh), T0 + timedelta(minutes=20, seconds=5))
    assert d.event is None   # seconds of waiting are not a hold
    d = decide(rel, Observations(READY, applied=fresh), T0 + timedelta(minutes=31))
    assert d.status.get("heldBy") == "applier"


def test_the_cluster_targets_unapplied_first_routing_never_stops_progress_deadline():
    """The kubernetes target applies itself (no applier deadline): a first VirtualService it
    cannot apply leaves readiness and progressDeadline to judge, never a silent wait."""
    rel = progressing(weight=0, step=0)
    refused = Applied(None, waiting="VirtualService bookinfo/reviews does not carry this step's routing yet")
    missing = {"v1": Readiness("v1", "ready"), "v2": Readiness("v2", "progressing", "0/2 ready")}
    d = decide(rel, Observations(missing, applied=refused), T0 + timedelta(minutes=11))
    assert d.status["phase"] == "Failed"


def test_a_held_rollout_is_looked_at_every_15s_not_every_2s():
    from reconciler.core.decide import wake_in
    from reconciler.core.decide import Decision
    rel = progressing(heldBy="applier")
    assert wake_in(rel, Decision(dict(rel.status)), T0 + timedelta(hours=6)) == APPLIED_RECHECK_LATER


def test_a_rollback_never_waits_for_the_routing():
    waiting = Applied(None, waiting="argocd Application argocd/shop: OutOfSync", deadline=60)
    aborted = progressing()
    aborted.spec["abort"] = True
    d = decide(aborted, Observations(READY, applied=waiting), T0 + timedelta(seconds=5))
    assert d.status["phase"] == "Aborted" and d.status["weight"] == 0
    broken = progressing(notReadySince=(T0 - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    d = decide(broken, Observations({"v2": Readiness("v2", "progressing", "0/1 ready")}, applied=waiting),
               T0 + timedelta(seconds=5))
    assert d.status["phase"] == "Failed" and d.status["weight"] == 0


# --- the kubernetes target end to end, on the API emulator ------------------------------------
def test_on_the_cluster_target_a_check_waits_for_the_virtualservice_to_carry_the_step(tmp_path, emu):
    env = Env(tmp_path, emu, [promoted()])
    env.tick()                                   # v2 starts at 0%
    assert env.status()["step"] == 0
    emu.fail_next("patch", "virtualservices", 403)
    report = env.tick()                          # step 1 committed; its VirtualService apply is refused
    assert env.status()["step"] == 1 and report.applied.errors
    committed = env.now
    report = env.tick()                          # an interval since the commit, but the weights are not live:
    assert env.status()["step"] == 1 and not report.commits   # a guard check at the live weight never advances
    assert not report.applied.errors
    live_at = env.now                            # this pass's apply put the weights live
    report = env.tick(seconds=30)                # 30 s of its own traffic: not due
    assert "bookinfo/reviews" not in report.analysis
    report = env.tick(seconds=31)                # an interval after it went live: judged, and step 2
    assert "bookinfo/reviews" in report.analysis and env.status()["step"] == 2
    body = run("log", "-1", "--format=%B", "main", cwd=env.bare)
    assert f"Sluice-Applied-After: {(live_at - committed).total_seconds():.1f}s" in body, body


def test_after_a_restart_a_guard_check_still_rolls_a_failing_canary_back_at_once():
    """Since a restart the step's window starts anew, but a canary already failing is not
    given an extra interval: a guard check counts a metric out of bounds."""
    rel = progressing(failedChecks=2)
    seen = Applied(T0 + timedelta(minutes=5), estimated=True)
    bad = (MetricResult("request-success-rate", "failed", 50.0, min=99),)
    d = decide(rel, Observations(READY, analysis=bad, verdict="fail", applied=seen, guard=True),
               T0 + timedelta(minutes=5))
    assert d.status["phase"] == "RolledBack"
    good = (MetricResult("request-success-rate", "ok", 100.0, min=99),)
    d = decide(rel, Observations(READY, analysis=good, verdict="pass", applied=seen, guard=True),
               T0 + timedelta(minutes=5))
    assert d.event is None and d.status["step"] == 1   # never advances on a guard
    assert 59 <= d.next_check_in <= 60                 # the real check: an interval after it was seen


def test_a_check_due_a_moment_after_the_step_interval_is_not_put_off_a_whole_interval():
    rel = progressing()
    live = Applied(T0 + timedelta(seconds=0.3))   # applied 0.3 s after the step's commit
    d = decide(rel, Observations(READY, applied=live), T0 + timedelta(seconds=60))
    assert d.next_check_in < 1


def test_after_a_restart_the_window_starts_when_this_process_first_sees_the_routing(tmp_path, emu):
    env = Env(tmp_path, emu, [promoted()])
    env.tick()
    env.tick()                                   # step 1 committed and applied
    assert env.status()["step"] == 1
    env.restart()                                # a new process: no memory of its apply
    seen = env.now + timedelta(seconds=61)
    report = env.tick()                          # an interval since the commit, but when it went live is
    assert not report.commits and env.status()["step"] == 1   # unknown to this process (the API server's clock
    report = env.tick(seconds=59)                # may be skewed): a guard check only, never an advance
    assert "bookinfo/reviews" not in report.analysis and env.now < seen + timedelta(seconds=60)
    report = env.tick(seconds=2)                 # an interval after it first saw it live: judged
    assert "bookinfo/reviews" in report.analysis and env.status()["step"] == 2


# --- the git target without cluster access says so in what it commits -------------------------
def test_without_cluster_access_the_status_and_sluice_status_say_readiness_is_unchecked(tmp_path):
    from click.testing import CliRunner

    from reconciler.cli.main import cli
    from tests.support.git_env import GitEnv
    from tests.support.specs import dump

    doc = promoted()
    env = GitEnv(tmp_path, {"releases/bookinfo/reviews.yaml": dump(doc)})
    env.tick()
    status = yaml_status(env)
    assert status["phase"] == "Progressing" and status["readinessChecked"] is False
    out = CliRunner().invoke(cli, ["status", f"file://{env.bare}"])
    assert out.exit_code == 0, out.output
    assert "Progressing*" in out.output and "readiness not checked" in out.output
    for _ in range(8):
        env.tick()
    status = yaml_status(env)
    assert status["phase"] == "Promoted" and "readinessChecked" not in status   # only a rollout is at risk
    out = CliRunner().invoke(cli, ["status", f"file://{env.bare}"])
    assert "readiness not checked" not in out.output


def yaml_status(env):
    import yaml
    return yaml.safe_load(env.show("releases/bookinfo/reviews.yaml"))["status"]


def test_after_a_restart_a_failing_canary_is_rolled_back_on_the_first_pass(tmp_path, emu):
    """The guard check after a restart is judged over the step's window as git records it,
    not over the instant since this process first saw the routing (which is no window)."""
    from tests.support.webserver import Server
    server = Server()
    try:
        server.answer("/rate", {"value": 100})
        doc = promoted()
        doc["spec"]["analysis"] = {"metrics": [{"name": "success", "provider": "health", "min": 99}]}
        doc["spec"]["strategy"]["canary"]["maxFailedChecks"] = 1
        settings = (f"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nproviders:\n  health:\n    type: web\n"
                    f"    url: {server.url}/rate\n    jsonPath: $.value\n").encode()
        env = Env(tmp_path, emu, [doc], extra={"sluice.yaml": settings})
        env.tick()
        env.tick()                               # step 1 committed and applied
        assert env.status()["step"] == 1
        server.answer("/rate", {"value": 50})   # the canary goes bad; the controller restarts
        env.restart()
        env.tick()
        st = env.status()
        assert st["phase"] == "RolledBack" and "guard check" in st["rolledBack"]["reason"], st
    finally:
        server.close()
