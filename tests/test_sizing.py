"""Canary sizing and autoscalers: the pods of each version at every step
(canary, blue/green, A/B, dynamicStableScale, rollback), one HPA per version
under spec.autoscaling (valid autoscaling/v2, no replicas on Deployments),
readiness counting the pods the next weight needs, and on the API emulator
with the real controller: an HPA's replicas survive 100 passes of a rollout,
a person's `kubectl scale` is put back."""

from datetime import datetime, timezone

import kubernetes_validate
import pytest

from reconciler.core import sizing
from reconciler.core.decide import Observations, decide
from reconciler.core.model import MetricResult, Readiness
from reconciler.core.readiness import deployment_readiness
from reconciler.core.render import render
from tests.support.cluster_env import Env, promoted
from tests.support.specs import release

V1 = {"version": "v1", "image": "example.com/reviews:v1"}
V2 = {"version": "v2", "image": "example.com/reviews:v2"}
CPU = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)


def status(step, weight, phase="Progressing", **extra):
    return {"phase": phase, "stable": dict(V1), "canary": dict(V2), "weight": weight, "step": step,
            "stepStartedAt": "2026-11-22T09:00:00Z", **extra}


def replicas(rel):
    """{version: spec.replicas (None when absent)} of the rendered Deployments."""
    return {o["metadata"]["labels"]["version"]: o["spec"].get("replicas") for o in render(rel)
            if o["kind"] == "Deployment"}


def canary(steps, r, **strategy):
    return {"canary": {"steps": steps, "interval": "1m", **strategy}}


def run_of(r, steps, **strategy):
    """(new, stable) pods at each status step 0..n of a canary of ``r`` replicas."""
    out = []
    weights = [0] + steps
    for step, weight in enumerate(weights):
        rel = release(replicas=r, strategy="canary", status=status(step, weight))
        rel.doc["spec"]["strategy"] = canary(steps, r, **strategy)
        got = replicas(rel)
        out.append((got["v2"], got["v1"]))
    return out


def test_canary_new_version_runs_the_next_weight_and_full_at_the_last_step():
    # step 0 readies 10% (1 pod), step 1 (10%) readies 20%, step 2 (20%) readies 50%, step 3 runs full
    assert run_of(10, [10, 20, 50]) == [(1, 10), (2, 10), (5, 10), (10, 10)]


def test_canary_of_three_rounds_up_and_never_runs_fewer_than_one():
    assert run_of(3, [10, 20, 50]) == [(1, 3), (1, 3), (2, 3), (3, 3)]
    assert run_of(1, [1, 2]) == [(1, 1), (1, 1), (1, 1)]


def test_total_pods_stay_under_replicas_plus_the_largest_step_before_the_last():
    for r in (1, 2, 3, 7, 10, 40, 99):
        for steps in ([10, 20, 50], [1, 5, 33], [25, 50, 75, 90], [5]):
            run = run_of(r, steps)
            bound = r + -(-r * max(steps) // 100)
            assert all(new + stable <= bound for new, stable in run[:-1]), (r, steps, run)
            assert run[-1] == (r, r)   # the last step: full before the switch to 100%


def test_dynamic_stable_scale_shrinks_stable_one_step_behind_the_traffic_and_a_rollback_restores_it():
    # at step N stable runs the share it served before N: if step N's routing never lands, it still has them
    assert run_of(10, [10, 20, 50], dynamicStableScale=True) == [(1, 10), (2, 10), (5, 9), (10, 8)]
    assert run_of(3, [10, 20, 50], dynamicStableScale=True) == [(1, 3), (1, 3), (2, 3), (3, 3)]
    assert run_of(4, [50, 90, 100], dynamicStableScale=True)[-1] == (4, 1)   # stable keeps one pod to go back to
    down = release(replicas=10, strategy="canary", status={
        "phase": "RolledBack", "stable": V1, "weight": 0, "rolledBack": {**V2, "retry": 0, "reason": "x"}})
    down.doc["spec"]["strategy"] = canary([10, 20, 50], 10, dynamicStableScale=True)
    assert replicas(down) == {"v1": 10, "v2": 0}
    retiring = release(replicas=10, strategy="canary", status={
        "phase": "Promoted", "stable": V2, "weight": 100, "retiring": {**V1, "until": "2026-11-22T10:00:00Z"}})
    retiring.doc["spec"]["strategy"] = canary([10, 20, 50], 10, dynamicStableScale=True)
    assert replicas(retiring) == {"v1": 5, "v2": 10}   # keeps its last-step count until it retires


def test_blue_green_runs_full_size_before_the_switch():
    for step in (0, 1, 2, 3):
        assert replicas(release(replicas=5, strategy="blueGreen", status=status(step, 0))) == {"v1": 5, "v2": 5}


def test_ab_and_dark_launch_keep_full_size_unless_replicas_says_and_go_full_before_promotion():
    assert replicas(release(replicas=6, strategy="abTesting", status=status(1, 0))) == {"v1": 6, "v2": 6}
    ab = release(replicas=6, strategy="abTesting", status=status(1, 0))
    ab.doc["spec"]["strategy"]["abTesting"]["replicas"] = 2
    assert replicas(ab) == {"v1": 6, "v2": 2}
    ab.doc["status"] = status(3, 0)   # the last iteration: promotion is next
    assert replicas(ab) == {"v1": 6, "v2": 6}
    dark = release(replicas=6, strategy="darkLaunch", status=status(1, 0, "WaitingApproval", waitingFor="promotion"))
    dark.doc["spec"]["strategy"]["darkLaunch"]["replicas"] = 1
    assert replicas(dark) == {"v1": 6, "v2": 1}   # waits for a person at 1 pod
    dark.doc["spec"]["approve"] = "v2"
    assert replicas(dark) == {"v1": 6, "v2": 6}   # approved: full before the switch


def hpas(rel):
    return {o["metadata"]["labels"]["version"]: o for o in render(rel) if o["kind"] == "HorizontalPodAutoscaler"}


def test_autoscaling_renders_one_valid_hpa_per_version_with_scaled_bounds_and_no_replicas():
    auto = {"minReplicas": 4, "maxReplicas": 20, "metrics": CPU}
    rel = release(strategy="canary", autoscaling=auto, status=status(1, 10))
    rel.doc["spec"]["strategy"] = canary([10, 20, 50], 0, dynamicStableScale=True)
    got = hpas(rel)
    assert {v: (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) for v, h in got.items()} == \
        {"v2": (1, 4), "v1": (4, 20)}   # stable shrinks one step behind: full while 0% was live before
    rel.doc["status"] = status(2, 20)
    assert hpas(rel)["v1"]["spec"]["minReplicas"] == 4 and hpas(rel)["v1"]["spec"]["maxReplicas"] == 18
    rel.doc["status"] = status(1, 10)
    assert replicas(rel) == {"v1": None, "v2": None}
    for version, hpa in got.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": f"reviews-{version}"}
        assert hpa["spec"]["metrics"] == CPU and hpa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sluice"
        for k8s in sorted({"1.30.0", kubernetes_validate.latest_version()}):
            kubernetes_validate.validate(hpa, k8s, strict=True)
    bad = {**got["v1"], "spec": {**got["v1"]["spec"], "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.30.0", strict=True)
    # the last step: the new version's HPA is full size; a rolled-back version has no HPA and 0 pods
    rel.doc["status"] = status(3, 50)
    assert hpas(rel)["v2"]["spec"]["minReplicas"] == 4
    rel.doc["status"] = {"phase": "RolledBack", "stable": V1, "weight": 0, "rolledBack": {**V2, "retry": 0}}
    assert set(hpas(rel)) == {"v1"} and replicas(rel) == {"v1": None, "v2": 0}


def test_an_outside_scaler_gets_no_hpa_and_no_replicas():
    rel = release(strategy="rolling", autoscaling={"scalerRef": {"kind": "ScaledObject", "name": "reviews"}})
    assert hpas(rel) == {} and [o["spec"].get("replicas") for o in render(rel) if o["kind"] == "Deployment"] == [None]
    plain = release(strategy="rolling", autoscaling={"minReplicas": 2, "maxReplicas": 5})
    assert [o["spec"].get("replicas") for o in render(plain) if o["kind"] == "Deployment"] == [None]
    assert [h["spec"]["minReplicas"] for h in render(plain) if h["kind"] == "HorizontalPodAutoscaler"] == [2]


def dep(spec_replicas, ready):
    return {"metadata": {"generation": 2}, "spec": {"replicas": spec_replicas},
            "status": {"observedGeneration": 2, "replicas": ready, "updatedReplicas": ready,
                       "readyReplicas": ready, "availableReplicas": ready}}


def test_ready_means_the_pods_the_status_asks_for_are_available():
    assert deployment_readiness("v2", dep(5, 5), need=5, serving=2).ready
    # the Deployment not yet scaled up (an applier behind, an HPA not at its new minimum) is not ready
    assert deployment_readiness("v2", dep(2, 2), need=5, serving=2).state == "scaling"
    assert deployment_readiness("v2", dep(5, 3), need=5, serving=2).state == "scaling"
    assert deployment_readiness("v2", dep(5, 1), need=5, serving=2).state == "progressing"
    sizes = sizing.sizes(release(replicas=10, strategy="canary", status=status(1, 10)))
    assert (sizes["v2"].need, sizes["v2"].serving) == (2, 1)


def obs(state, verdict=None):
    analysis = None if verdict is None else (MetricResult("request-success-rate", "ok" if verdict == "pass"
                                                          else "failed", 99.9 if verdict == "pass" else 90),)
    return Observations(readiness={"v2": Readiness("v2", state, "3/5 ready")}, analysis=analysis, verdict=verdict)


def test_no_step_moves_while_the_next_weights_pods_are_starting_and_a_failure_still_counts():
    rel = release(replicas=10, strategy="canary", status=status(1, 10))
    held = decide(rel, obs("scaling", "pass"), NOW)
    assert held.event is None and held.status["step"] == 1 and held.status["weight"] == 10
    assert decide(rel, obs("ready", "pass"), NOW).status["weight"] == 20
    failed = decide(rel, obs("scaling", "fail"), NOW)
    assert failed.event.action == "check-failed" and failed.status["failedChecks"] == 1
    # before the first step nothing is served: scaling there is not ready, the rollout does not start
    start = release(replicas=10, strategy="canary", status=status(0, 0))
    assert decide(start, obs("scaling"), NOW).status["step"] == 0


def test_plan_shows_pods_at_each_step():
    rel = release(replicas=10, strategy="canary", status={"phase": "Promoted", "stable": V1, "weight": 100})
    rel.doc["spec"]["strategy"] = canary([10, 20, 50], 10)
    assert [(s["weight"], s["new"], s["stable"]) for s in sizing.at_stages(rel)] == \
        [(0, 1, 10), (10, 2, 10), (20, 5, 10), (50, 10, 10), (100, 10, None)]


# --- on the API emulator, with the real controller and the kubernetes target ---------------------------
def hpa_controller(emu, ns="bookinfo"):
    """What kube-controller-manager does for each HPA with no load: keep its target within min..max
    (an Update of spec.replicas, recorded in managedFields as a real API server does). Like the real
    one it does nothing for a target at 0 replicas (scaling is disabled: ScalingActive=False)."""
    for (_, hns, name), hpa in emu.objects("horizontalpodautoscalers").items():
        target = emu.get("deployments", hns, hpa["spec"]["scaleTargetRef"]["name"])
        low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
        if target is not None and target["spec"]["replicas"] and not low <= target["spec"]["replicas"] <= high:
            want = min(max(target["spec"]["replicas"], low), high)
            emu.update_as("kube-controller-manager", "deployments", hns, target["metadata"]["name"],
                          lambda d: d["spec"].update(replicas=want))
    emu.all_ready()


def test_an_hpa_scaling_a_release_is_never_overwritten_across_100_passes_of_a_rollout(tmp_path, emu):
    doc = promoted(autoscaling={"minReplicas": 2, "maxReplicas": 10, "metrics": CPU})
    doc["spec"]["strategy"] = canary([10, 20, 50], 0)
    doc["spec"]["strategy"]["canary"]["interval"] = "20m"   # 100 passes of 30s see every step
    env = Env(tmp_path, emu, [doc])
    env.tick()
    assert emu.get("horizontalpodautoscalers", "bookinfo", "reviews-v1")["spec"]["minReplicas"] == 2
    assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 1   # the server's default
    # the HPA (kube-controller-manager, as a real API server records it) scales stable to 7
    emu.update_as("kube-controller-manager", "deployments", "bookinfo", "reviews-v1",
                  lambda d: d["spec"].update(replicas=7))
    weights, news = set(), set()
    for i in range(100):
        env.tick(seconds=30)
        hpa_controller(emu)
        weights.add(env.weights().get("v2", 0))
        assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 7, i
        news.add(emu.get("horizontalpodautoscalers", "bookinfo", "reviews-v2")["spec"]["minReplicas"])
    assert weights == {10, 20, 50} and env.status()["weight"] == 50
    assert news == {1, 2}   # the canary's HPA: 1 pod for 10% and 20%, full size (2) at the last step
    assert not any("drift" in s for s in env.subjects())
    for version in ("v1", "v2"):   # Sluice never applied replicas: the HPA owned them from the first apply
        mine = [e for e in emu.get("deployments", "bookinfo", f"reviews-{version}")["metadata"]["managedFields"]
                if e["manager"] == "sluice"]
        assert mine and all("f:replicas" not in e["fieldsV1"].get("f:spec", {}) for e in mine)


def test_kubectl_scale_without_an_hpa_is_put_back_to_the_steps_count(tmp_path, emu):
    doc = promoted(replicas=10)
    doc["spec"]["strategy"] = canary([10, 20, 50], 10)
    env = Env(tmp_path, emu, [doc])
    env.tick()
    env.tick()
    assert env.weights() == {"v1": 90, "v2": 10}
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] == 2   # ready for 20%
    emu.update_as("kubectl", "deployments", "bookinfo", "reviews-v2", lambda d: d["spec"].update(replicas=9))
    env.tick(seconds=1)
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] == 2   # put back
    assert any("drift" in s for s in env.subjects())


def test_min_replicas_above_max_is_refused_at_its_line():
    from reconciler.core.loader import load_files
    from tests.support.specs import dump, release_doc
    doc = release_doc(autoscaling={"minReplicas": 9, "maxReplicas": 3})
    text = dump(doc)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "minReplicas" in row)
    got = [str(p) for p in load_files({"releases/bookinfo/reviews.yaml": text.encode()}).problems]
    assert len(got) == 1 and f"reviews.yaml:{line}:" in got[0] and "minReplicas 9 is above maxReplicas 3" in got[0], got


def test_switching_a_running_release_to_autoscaling_keeps_its_pods_until_the_hpa_takes_over(tmp_path, emu):
    """Sluice owned replicas (5); autoscaling is added in git: dropping the field would let the
    server default it to 1 pod. Sluice keeps applying the live count until the HPA changes it."""
    import yaml as pyyaml
    env = Env(tmp_path, emu, [promoted(replicas=5)])
    env.tick()
    assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 5

    def autoscale(text):
        doc = pyyaml.safe_load(text)
        doc["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 9, "metrics": CPU}
        return pyyaml.safe_dump(doc, sort_keys=False)
    env.edit("reviews", autoscale, "autoscale reviews")
    for _ in range(3):
        env.tick(seconds=30)
        assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 5
    assert emu.get("horizontalpodautoscalers", "bookinfo", "reviews-v1")["spec"]["minReplicas"] == 3
    emu.update_as("kube-controller-manager", "deployments", "bookinfo", "reviews-v1",
                  lambda d: d["spec"].update(replicas=8))
    for _ in range(3):
        env.tick(seconds=30)
        assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 8
    mine = [e for e in emu.get("deployments", "bookinfo", "reviews-v1")["metadata"]["managedFields"]
            if e["manager"] == "sluice"]
    assert mine and all("f:replicas" not in e["fieldsV1"].get("f:spec", {}) for e in mine)
    assert not any("drift" in s for s in env.subjects())


# --- review of 71b141c: stable under a refused VirtualService, scalers, replicas ownership ----------------
import yaml as pyyaml   # noqa: E402  (kept with the tests that edit release files)


def spec_edit(fn):
    def edit(text):
        doc = pyyaml.safe_load(text)
        fn(doc["spec"])
        return pyyaml.safe_dump(doc, sort_keys=False)
    return edit


def available(emu, version):
    dep = emu.get("deployments", "bookinfo", f"reviews-{version}")
    return (dep.get("status") or {}).get("availableReplicas", 0) if dep else 0


def test_a_refused_virtualservice_leaves_stable_the_pods_of_the_traffic_still_live(tmp_path, emu):
    doc = promoted(replicas=10)
    doc["spec"]["strategy"] = canary([50, 90], 10, dynamicStableScale=True)
    env = Env(tmp_path, emu, [doc])
    env.tick()
    env.tick()
    assert env.weights() == {"v1": 50, "v2": 50}
    # Istio's validation webhook refuses every VirtualService patch from now on: traffic stays at 50/50
    emu.fail_next("patch", "virtualservices", 400, n=10 ** 6, reason="BadRequest",
                  message='admission webhook "validation.istio.io" denied the request')
    for _ in range(4):
        env.tick()
        assert env.weights() == {"v1": 50, "v2": 50}
        assert available(emu, "v1") >= 5, emu.get("deployments", "bookinfo", "reviews-v1")["spec"]


def test_scaler_ref_is_refused_for_per_version_deployments_and_kept_for_rolling():
    from reconciler.core.loader import load_files
    from tests.support.specs import dump, release_doc
    for strategy in ("canary", "blueGreen", "abTesting", "darkLaunch", "mirror"):
        text = dump(release_doc(strategy=strategy, autoscaling={"scalerRef": {"name": "reviews"}}))
        line = next(i for i, row in enumerate(text.splitlines(), 1) if "scalerRef" in row)
        got = [str(p) for p in load_files({"releases/bookinfo/reviews.yaml": text.encode()}).problems]
        assert len(got) == 1 and f"reviews.yaml:{line}:" in got[0] and "spec.autoscaling" in got[0] \
            and "HPA per version" in got[0], (strategy, got)
    for strategy in ("rolling", "recreate"):
        text = dump(release_doc(strategy=strategy, autoscaling={"scalerRef": {"name": "reviews"}}))
        assert load_files({"releases/bookinfo/reviews.yaml": text.encode()}).problems == []


def test_replicas_zero_is_refused_at_its_line():
    from reconciler.core.loader import load_files
    from tests.support.specs import dump, release_doc
    for strategy, words in (("canary", "a version with 0 pods cannot take traffic"),
                            ("rolling", "never becomes ready")):
        text = dump(release_doc(strategy=strategy, replicas=0))
        line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip() == "replicas: 0")
        got = [str(p) for p in load_files({"releases/bookinfo/reviews.yaml": text.encode()}).problems]
        assert len(got) == 1 and f"reviews.yaml:{line}:" in got[0] and words in got[0], got


def test_switching_autoscaling_off_takes_replicas_back_from_the_hpa(tmp_path, emu):
    doc = promoted(autoscaling={"minReplicas": 2, "maxReplicas": 10, "metrics": CPU})
    doc["spec"]["strategy"] = canary([10, 20, 50], 0)
    env = Env(tmp_path, emu, [doc])
    env.retarget("reviews", "v2", "v1")
    env.tick()
    hpa_controller(emu)
    assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 2
    env.edit("reviews", spec_edit(lambda s: (s.pop("autoscaling"), s.update(replicas=10))), "no autoscaling")
    env.tick(seconds=1)
    assert emu.get("horizontalpodautoscalers", "bookinfo", "reviews-v1") is None
    assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 10
    mine = [e for e in emu.get("deployments", "bookinfo", "reviews-v1")["metadata"]["managedFields"]
            if e["manager"] == "sluice"]
    assert any("f:replicas" in e["fieldsV1"].get("f:spec", {}) for e in mine)


def test_an_aborted_autoscaled_canary_retried_scales_up_from_the_hpa_minimum(tmp_path, emu):
    doc = promoted(autoscaling={"minReplicas": 3, "maxReplicas": 10, "metrics": CPU})
    doc["spec"]["strategy"] = canary([10, 20, 50], 0)
    env = Env(tmp_path, emu, [doc])
    for _ in range(3):
        env.tick(ready=False)
        hpa_controller(emu)
    env.edit("reviews", spec_edit(lambda s: s.update(abort=True)), "abort")
    env.tick(seconds=1)
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] == 0
    env.edit("reviews", spec_edit(lambda s: (s.pop("abort"), s.update(retry=1))), "retry")
    for _ in range(12):
        env.tick(ready=False)
        hpa_controller(emu)
        if env.status().get("phase") == "Promoted":
            break
    assert env.status()["phase"] == "Promoted" and env.status()["stable"]["version"] == "v2", env.status()
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] >= 3


def test_rollback_to_a_retired_revision_moves_traffic_once_its_pods_are_back(tmp_path, emu):
    doc = promoted(replicas=10)
    doc["spec"]["strategy"] = canary([50], 10)
    env = Env(tmp_path, emu, [doc])
    for _ in range(4):
        env.tick()
    env.retarget("reviews", "v2", "v3")
    for _ in range(4):
        env.tick()
    for _ in range(4):
        env.tick(seconds=600)   # past scaleDownDelay: v2's Deployment is gone
    assert env.status()["stable"]["version"] == "v3" and emu.get("deployments", "bookinfo", "reviews-v2") is None
    env.edit("reviews", spec_edit(lambda s: s.update(rollback="v2@1")), "rollback --to v2")
    env.tick(seconds=1, ready=False)
    assert env.weights() == {"v3": 100}   # v3 keeps serving while v2 starts
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] == 10
    assert env.status()["rollbackTo"] == "v2@1" and "full size" in env.status()["message"]
    env.tick(seconds=1, ready=False)
    assert env.weights() == {"v3": 100}   # still not ready: nothing moves
    emu.all_ready()
    env.tick(seconds=1)
    assert env.weights() == {"v2": 100} and available(emu, "v2") == 10
    assert env.status()["phase"] == "Promoted" and env.status()["stable"]["version"] == "v2"
    assert "rollbackTo" not in env.status() and env.status()["rollbackDone"] == "v2@1"


def test_a_retarget_with_dynamic_stable_scale_waits_for_stable_at_full_size(tmp_path, emu):
    doc = promoted(replicas=10)
    doc["spec"]["strategy"] = canary([10, 20, 50], 10, dynamicStableScale=True)
    env = Env(tmp_path, emu, [doc])
    while env.status().get("weight") != 50:
        env.tick()
    assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 8
    env.retarget("reviews", "v2", "v3")
    env.tick(seconds=1, ready=False)
    # the old canary keeps its 50% while stable scales back to full
    assert env.weights() == {"v1": 50, "v2": 50} and env.status()["heldBy"] == "stable"
    assert emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"] == 10
    env.tick(seconds=1, ready=False)
    assert env.weights() == {"v1": 50, "v2": 50}
    emu.all_ready()
    env.tick(seconds=1)
    assert env.weights() == {"v1": 100} and available(emu, "v1") == 10
    assert env.status()["canary"]["version"] == "v3" and "heldBy" not in env.status()
