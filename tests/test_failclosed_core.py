"""Fail closed in the pure core, with plain data: what a lost status becomes,
which statuses are doubted, when a release wants its next look, and the
rollback recorded on a VirtualService."""

import json
from datetime import timedelta

from reconciler.core import analysis
from reconciler.core.decide import Decision, Observations, decide, stages, wake_in
from reconciler.core.model import MetricResult, Readiness
from reconciler.core.observed import ROLLBACK_ANNOTATION, pending_rollback
from reconciler.core.trusted import status_problems
from tests.support.drive import T0, Driver, bad
from tests.support.specs import release, release_doc

V1 = {"version": "v1", "image": "example.com/reviews:v1"}


def ready(*names):
    return {n: Readiness(n, "ready") for n in names}


def lost(**spec):
    return release(release_doc(**spec))   # no status block at all


def test_a_lost_status_mid_rollout_restarts_the_strategy_even_when_the_target_has_most_traffic():
    running = ({"version": "v2", "image": "example.com/reviews:v2", "replicas": 2, "weight": 60},
               {"version": "v1", "image": "example.com/reviews:v1", "replicas": 2, "weight": 40})
    d = decide(lost(), Observations(ready("v1", "v2"), running=running), T0)
    assert d.event.action == "start" and d.status["stable"]["version"] == "v1" and d.status["weight"] == 0


def test_a_lost_status_with_the_target_scaled_to_zero_stays_rolled_back():
    running = ({"version": "v1", "image": "example.com/reviews:v1", "replicas": 2, "weight": 100},
               {"version": "v2", "image": "example.com/reviews:v2", "replicas": 0, "weight": 0})
    d = decide(lost(), Observations(ready("v1"), running=running), T0)
    assert d.status["phase"] == "RolledBack" and d.status["rolledBack"]["version"] == "v2"
    again = decide(release(release_doc()).with_status(d.status), Observations(ready("v1")), T0 + timedelta(hours=1))
    assert again.event is None                          # not started again without a retry


def live(**change):
    st = {"phase": "Progressing", "stable": dict(V1), "canary": {"version": "v2", "image": "example.com/reviews:v2"},
          "weight": 10, "step": 1, "failedChecks": 0, "startedAt": "2026-11-22T09:00:00Z",
          "stepStartedAt": "2026-11-22T09:00:00Z"}
    st.update(change)
    return release(release_doc(status=st))


def doubts(rel, running=None):
    return status_problems(rel, [s.weight for s in stages(rel)], T0, running)


def test_doubted_statuses():
    assert doubts(live()) == []
    assert "not the weight of step 1" in doubts(live(weight=90))[0][1]
    assert "not the weight of step 3" in doubts(live(step=3, weight=10))[0][1]
    assert doubts(live(step=0, weight=0)) == []
    assert "whole number" in doubts(live(phase="RolledBack", weight=0, rolledBack={"version": "v2", "retry": "x"}))[0][1]
    # a stable that does not run while another version serves
    assert "does not run while v1 serves" in doubts(live(stable={"version": "v0", "image": "x:0"}), ["v1", "v2"])[0][1]
    # only the canary runs: the stable Deployment was deleted, which is drift to put back, not doubt
    assert doubts(live(), ["v2"]) == []


def test_waiting_for_approval_is_still_judged_and_rolls_back_on_failure():
    doc = release_doc(status={"phase": "Promoted", "stable": dict(V1), "weight": 100}, gates={"promotion": "manual"})
    doc["spec"]["strategy"]["canary"]["maxFailedChecks"] = 1
    d = Driver(release(doc))
    for _ in range(5):
        d.tick(seconds=61)
    assert d.status["phase"] == "WaitingApproval" and d.status["weight"] == 50
    d.tick(seconds=61, results=[bad()])
    assert d.status["phase"] == "RolledBack" and d.status["weight"] == 0


def test_a_moment_already_past_is_retried_after_an_interval_not_at_once():
    rel = live(message="analysis held: metrics provider unavailable, nothing advances")
    # the check is overdue (it held): the next look is an interval away, not 0
    assert wake_in(rel, Decision(dict(rel.status)), T0 + timedelta(hours=1)) == 60
    promoted = release(release_doc(status={"phase": "Promoted", "stable": dict(V1), "weight": 100,
                                           "retiring": {**V1, "until": "2026-11-22T09:00:00Z"}}))
    assert wake_in(promoted, Decision(dict(promoted.status)), T0 + timedelta(hours=1)) == 5.0
    waiting = live(phase="WaitingApproval", waitingFor="promotion", step=3, weight=50)
    assert wake_in(waiting, Decision(dict(waiting.status)), T0 + timedelta(hours=1)) == 60


def vs(annotation, manager="sluice"):
    fields = {"f:metadata": {"f:annotations": {f"f:{ROLLBACK_ANNOTATION}": {}}}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo", "annotations": {ROLLBACK_ANNOTATION: annotation},
                         "managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": fields}]}}


def test_a_rollback_mark_counts_only_when_sluice_wrote_it_and_an_unreadable_one_holds():
    rel = live()
    mark = json.dumps({"version": "v2", "reason": "2/2 failed checks", "at": "2026-11-22T10:00:00Z",
                       "phase": "RolledBack", "lastAnalysis": {"at": "2026-11-22T10:00:00Z",
                                                               "results": [{"name": "x", "ok": False}]}})
    assert pending_rollback(rel, [vs(mark)]).mark["version"] == "v2"
    forged = pending_rollback(rel, [vs(mark, manager="kubectl-edit")])
    assert forged.mark is None and not forged.hold and "not by Sluice" in forged.note
    garbled = pending_rollback(rel, [vs("{not json")])
    assert garbled.mark is None and garbled.hold
    # decided again as it was: its time and evidence, not the time of the pass that finally commits it
    d = decide(rel, Observations(ready("v1", "v2"), rollback=pending_rollback(rel, [vs(mark)]).mark),
               T0 + timedelta(hours=3))
    assert d.status["rolledBack"]["at"] == "2026-11-22T10:00:00Z" and d.event.evidence[0]["name"] == "x"


def test_compare_to_stable_at_100_percent_reads_stables_window_even_after_a_pause():
    doc = release_doc(status={"phase": "Promoted", "stable": dict(V1), "weight": 100},
                      analysis={"metrics": [{"name": "request-duration", "max": 500,
                                             "compareToStable": {"maxIncreasePercent": 50}}]})
    doc["spec"]["strategy"]["canary"]["steps"] = [50, 100]
    d = Driver(release(doc))
    d.tick()
    d.tick(seconds=61)
    ok = [MetricResult("request-duration", "ok", 100.0, max=500)]
    d.tick(seconds=61, results=ok)
    assert d.status["weight"] == 100
    at_full = d.status["stableServedUntil"]
    d.tick(seconds=1, paused=True)
    d.tick(seconds=600, paused=False)
    assert d.status["phase"] == "Progressing" and d.status["stableServedUntil"] == at_full
    checks = analysis.plan_checks(d.rel, {}, canary_version="v2", stable_version="v1")
    assert checks[0].stable_at == at_full


def test_an_approval_between_checks_after_a_failed_one_waits_for_the_next_check():
    """A check failed while waiting for approval (below maxFailedChecks); the approval lands
    before the next check is due: nothing is promoted until a check passes."""
    doc = release_doc(status={"phase": "Promoted", "stable": dict(V1), "weight": 100}, gates={"promotion": "manual"})
    doc["spec"]["strategy"]["canary"]["maxFailedChecks"] = 3
    d = Driver(release(doc))
    for _ in range(5):
        d.tick(seconds=61)
    assert d.status["phase"] == "WaitingApproval"
    d.tick(seconds=61, results=[bad()])
    assert d.status["phase"] == "WaitingApproval" and d.status["failedChecks"] == 1
    d.tick(seconds=5, approve="v2")          # approved a moment later: no check is due
    assert d.status["phase"] == "WaitingApproval" and d.status["weight"] == 50
    d.tick(seconds=61, approve="v2")         # the next check passes: now it promotes
    assert d.status["phase"] == "Promoted" and d.status["weight"] == 100


def test_a_hand_edited_count_or_hook_record_never_stops_the_pass():
    from reconciler.controller import _whole
    from reconciler.core.hooks import Answer, record
    assert [_whole(v) for v in ("x", None, True, 2.5, 3)] == [0, 0, 0, 0, 3]
    answer = Answer("page", "rollback", "http://127.0.0.1:9/x", 200, 0.1)
    for junk in (5, True, "x", [1, {"name": "ok"}]):
        kept = record({"lastHooks": junk}, [answer])["lastHooks"]
        assert all(isinstance(h, dict) for h in kept) and kept[-1]["name"] == "page"


def test_a_non_finite_metric_in_a_hook_body_is_sent_as_null():
    """histogram_quantile answers +Inf for a failing canary: the hook body stays strict JSON and
    the hook is asked (it used to raise in every pass, so the canary was never rolled back)."""
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from reconciler.adapters.hooks import Gate
    from reconciler.core.hooks import Call
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(_json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        call = Call("smoke", "step", f"http://127.0.0.1:{server.server_port}/x", 5.0, 0,
                    {"evidence": [{"name": "p99", "value": float("inf")}, {"name": "nan", "value": float("nan")}]})
        (answer,) = Gate([call]).answers()
        assert answer.status == 200 and got[0]["evidence"][0]["value"] is None and got[0]["evidence"][1]["value"] is None
    finally:
        server.shutdown()
        server.server_close()
