"""The decision function, strategy by strategy, from start to promotion and
to rollback, with the events that become commits."""

import pytest

from reconciler.core.decide import Observations, decide, schedule
from tests.support.drive import T0, Driver, bad, ok
from tests.support.specs import release, release_doc

V1 = {"version": "v1", "image": "example.com/reviews:v1"}


def promoted(**kw):
    return {"phase": "Promoted", "stable": dict(V1), "weight": 100, "step": 0, "failedChecks": 0, **kw}


def drv(strategy="canary", **spec):
    return Driver(release(release_doc(strategy=strategy, status=promoted(), **spec)))


def run_until(d, phase, *, limit=50, **tick):
    for _ in range(limit):
        d.tick(seconds=61, **tick)
        if d.status.get("phase") == phase:
            return
    raise AssertionError(f"never reached {phase}: {d.status}")


def test_first_deploy_goes_straight_to_stable():
    d = Driver(release())
    dec = d.tick()
    assert d.status["phase"] == "Promoted" and d.status["stable"]["version"] == "v2"
    assert dec.event.action == "deploy" and dec.event.summary == "deploy v2"
    assert d.tick(seconds=600).event is None   # idempotent


def test_canary_walks_every_step_then_promotes():
    d = drv()
    start = d.tick()
    assert start.event.summary == "start canary v1 -> v2 (3 steps)" and start.notify == "started"
    assert d.status["weight"] == 0 and d.status["phase"] == "Progressing"
    assert d.tick(ready=False).event is None          # not ready: no traffic moves
    first = d.tick()
    assert first.event.summary == "canary v2 0% -> 10% (step 1/3)"
    assert d.tick(seconds=30).event is None            # interval not over
    second = d.tick(seconds=31)
    assert second.event.summary == "canary v2 10% -> 20% (step 2/3)"
    assert second.event.evidence == ({"name": "request-success-rate", "value": 99.9, "min": 99, "ok": True},)
    assert d.status["lastAnalysis"]["results"][0]["value"] == 99.9
    third = d.tick(seconds=61)
    assert (third.event.weight, third.event.previous_weight, third.event.step, third.event.steps) == (50, 20, 3, 3)
    prom = d.tick(seconds=61)
    assert prom.event.action == "promote" and prom.event.summary == "promote v2 50% -> 100%"
    assert d.status["stable"]["version"] == "v2" and "canary" not in d.status
    assert d.status["retiring"]["version"] == "v1"
    assert d.tick(seconds=10).event is None
    fin = d.tick(seconds=25)
    assert fin.event.action == "finalize" and "retiring" not in d.status
    assert d.tick(seconds=1000).event is None


def test_step_weight_max_weight():
    d = drv(strategy="canary")
    d.rel.doc["spec"]["strategy"] = {"canary": {"stepWeight": 20, "maxWeight": 60, "interval": "30s"}}
    weights = []
    for _ in range(20):
        dec = d.tick(seconds=31)
        if dec.event and dec.event.action == "advance":
            weights.append(dec.event.weight)
        if d.status["phase"] == "Promoted" and weights:
            break
    assert weights == [20, 40, 60] and d.status["stable"]["version"] == "v2"
    assert schedule(d.rel) == [(20, 0.0), (40, 30.0), (60, 60.0), (100, 90.0)]


def test_failed_checks_roll_back_exactly_at_the_limit():
    d = drv()   # maxFailedChecks: 2
    d.tick(); d.tick()
    assert d.status["weight"] == 10
    one = d.tick(seconds=61, results=[bad()])
    assert one.event.action == "check-failed" and d.status["failedChecks"] == 1 and d.status["weight"] == 10
    assert one.event.summary == "canary v2 check failed 1/2 at 10% (step 1/3)"
    assert d.tick(seconds=30, results=[bad()]).event is None   # next check an interval after the failed one
    two = d.tick(seconds=31, results=[bad()])
    assert two.event.action == "rollback" and two.urgent and two.notify == "rolledBack"
    assert two.event.summary == "rollback v2 10% -> 0%: 2/2 failed checks: request-success-rate 91.0 < min 99"
    assert d.status["phase"] == "RolledBack" and d.status["weight"] == 0
    assert d.status["rolledBack"]["version"] == "v2"
    # the same target is not retried ...
    assert d.tick(seconds=600).event is None
    # ... until a human bumps spec.retry
    assert d.tick(retry=1).event.action == "start"


def test_nodata_and_provider_error():
    d = drv()
    d.tick(); d.tick()
    nodata = d.tick(seconds=61, results=[], verdict="fail")
    assert nodata.event.action == "check-failed"
    held = d.tick(seconds=61, results=[ok()], verdict="hold")
    assert held.event.action == "hold" and d.status["weight"] == 10
    assert d.tick(seconds=61, results=[ok()], verdict="hold").event is None   # one commit per hold, not per check
    assert d.tick(seconds=61).event.action == "advance"


def test_pause_resume_and_abort():
    d = drv()
    d.tick(); d.tick()
    p = d.tick(paused=True)
    assert p.event.action == "pause" and d.status["phase"] == "Paused"
    assert d.tick(seconds=300, paused=True).event is None
    r = d.tick(paused=False)
    assert r.event.action == "resume" and d.status["phase"] == "Progressing" and d.status["weight"] == 10
    assert d.tick(seconds=30).event is None   # the interval restarted at resume
    a = d.tick(abort=True)
    assert a.event.action == "abort" and d.status["phase"] == "Aborted" and a.urgent
    assert d.tick(seconds=100, abort=True).event is None


def test_gates_step_and_promotion():
    d = drv(gates={"promotion": "manual", "steps": [2]})
    d.tick(); d.tick()
    w = d.tick(seconds=61)
    assert w.event.action == "wait-approval" and d.status["waitingFor"] == "step-2" and d.status["weight"] == 10
    assert d.tick(seconds=61).event is None
    go = d.tick(approve="v2@2")
    assert go.event.action == "approve" and d.status["weight"] == 20
    d.tick(seconds=61)
    promo_wait = d.tick(seconds=61)
    assert d.status["waitingFor"] == "promotion" and promo_wait.notify == "waitingApproval"
    assert d.tick(approve="v2").event.action == "promote"


@pytest.mark.parametrize("strategy,expected", [
    ("blueGreen", ["start", "advance", "advance", "advance", "promote"]),
    ("abTesting", ["start", "advance", "advance", "advance", "promote"]),
    ("mirror", ["start", "advance", "advance", "advance", "advance", "promote"]),
])
def test_iteration_strategies(strategy, expected):
    d = drv(strategy)
    run_until(d, "Promoted")
    assert [e.action for e in d.events] == expected
    weights = [e.weight for e in d.events]
    if strategy == "mirror":
        assert weights == [0, 0, 0, 25, 50, 100]
    else:
        assert weights == [0, 0, 0, 0, 100]   # match/preview only, then the switch


@pytest.mark.parametrize("strategy", ["blueGreen", "abTesting", "mirror", "darkLaunch"])
def test_iteration_strategies_roll_back(strategy):
    d = drv(strategy)
    run_until(d, "RolledBack", results=[bad()])
    assert d.events[-1].action == "rollback" and d.status["weight"] == 0


def test_dark_launch_waits_for_a_human():
    d = drv("darkLaunch")
    d.tick(); d.tick()
    assert d.status["step"] == 1 and d.status["weight"] == 0
    w = d.tick(seconds=61)
    assert w.event.action == "wait-approval"
    for _ in range(5):
        assert d.tick(seconds=61).event is None
    assert d.tick(approve="v2").event.action == "promote"


@pytest.mark.parametrize("strategy", ["rolling", "recreate"])
def test_plain_strategies_follow_readiness(strategy):
    d = drv(strategy)
    d.tick()
    assert d.tick(ready=False).event is None
    assert d.tick().event.action == "promote" and "retiring" not in d.status
    d2 = drv(strategy)
    d2.tick()
    f = d2.tick(ready="failed")
    assert f.event.action == "rollback" and d2.status["phase"] == "Failed"


def test_progress_deadline():
    d = drv(progressDeadline="2m")
    d.tick()
    assert d.tick(seconds=60, ready=False).event is None
    f = d.tick(seconds=61, ready=False)
    assert d.status["phase"] == "Failed" and "progressDeadline" in f.event.summary


def test_retarget_mid_rollout():
    d = drv()
    d.tick(); d.tick()
    doc = d.rel.doc
    doc["spec"]["target"] = {"version": "v3", "image": "example.com/reviews:v3"}
    r = d.tick()
    assert r.event.action == "retarget" and d.status["canary"]["version"] == "v3" and d.status["weight"] == 0
    assert r.event.summary == "retarget canary v1 -> v3 (3 steps): v2 replaced by v3"


def test_decide_never_mutates_its_input():
    rel = release(release_doc(status=promoted()))
    before = repr(rel.doc)
    decide(rel, Observations({}), T0)
    assert repr(rel.doc) == before
