"""Properties of the decision function over random specs and observation
sequences driven with a simulated clock."""

import math

from hypothesis import HealthCheck, given, settings, strategies as st

from reconciler.core.decide import max_failed, stages
from reconciler.core.model import MetricResult
from tests.support.drive import Driver
from tests.support.specs import release, release_doc

V1 = {"version": "v1", "image": "example.com/reviews:v1"}

steps_st = st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True).map(sorted)
obs_st = st.sampled_from(["pass", "fail", "nodata", "nan", "notready"])


@st.composite
def specs(draw):
    kind = draw(st.sampled_from(["canary", "blueGreen", "abTesting", "mirror", "canary"]))
    doc = release_doc(strategy=kind, status={"phase": "Promoted", "stable": dict(V1), "weight": 100, "step": 0})
    strat = doc["spec"]["strategy"][kind]
    strat["maxFailedChecks"] = draw(st.integers(1, 4))
    if kind == "canary":
        strat["steps"] = draw(steps_st)
    elif kind == "mirror":
        strat["iterations"] = draw(st.integers(1, 4))
        strat["canary"] = {"steps": draw(steps_st)}
    else:
        strat["iterations"] = draw(st.integers(1, 4))
    return doc


def result_for(kind):
    if kind == "pass":
        return [MetricResult("request-success-rate", "ok", 99.9, min=99)], None
    if kind == "fail":
        return [MetricResult("request-success-rate", "failed", 90.0, min=99)], None
    if kind == "nan":
        return [MetricResult("request-success-rate", "nodata", math.nan, min=99)], None
    return [MetricResult("request-success-rate", "nodata", None, min=99)], None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.lists(obs_st, min_size=1, max_size=60))
def test_rollout_properties(doc, sequence):
    d = Driver(release(doc))
    d.tick()   # start
    n_stages = len(stages(d.rel))
    limit = max_failed(d.rel)
    last_weight = 0
    passes_seen = 0
    for kind in sequence + ["pass"] * (n_stages + 2):
        before = dict(d.status)
        results, verdict = result_for(kind)
        dec = d.tick(seconds=3600, ready=kind != "notready", results=results, verdict=verdict)
        s = d.status
        # weights stay in 0..100; stable gets the rest
        assert 0 <= s.get("weight", 0) <= 100
        if s["phase"] in ("Progressing", "WaitingApproval"):
            # never decreases within a rollout
            assert s["weight"] >= last_weight
            last_weight = s["weight"]
        ev = dec.event
        if ev and ev.action in ("advance", "promote") and before.get("step", 0) >= 1:
            # an advance after the first stage always follows a pass
            assert kind == "pass", (kind, ev)
        if ev and ev.action == "rollback" and s["phase"] == "RolledBack":
            # analysis rolls back exactly when failed checks reach the limit
            # (a new version that is not ready when its check is due fails that check)
            assert s["failedChecks"] == limit and kind in ("fail", "nodata", "nan", "notready")
        if ev and ev.action == "rollback" and s["phase"] == "Failed":
            assert kind == "notready"   # the progress deadline passed
        if ev and ev.action == "check-failed":
            assert s["failedChecks"] < limit
        if kind == "pass":
            passes_seen += 1
        if s["phase"] in ("Promoted", "RolledBack", "Failed"):
            break
        # idempotent: deciding again at the same time changes nothing
        again = d.tick(seconds=0, ready=kind != "notready")
        assert again.event is None and again.status == s
    # every sequence ends in promotion or rollback within the bound
    assert d.status["phase"] in ("Promoted", "RolledBack", "Failed"), d.status
