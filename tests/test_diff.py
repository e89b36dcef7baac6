"""Normalised diff: server-owned and defaulted fields are never drift."""

from reconciler.core.diff import ObjRef, diff, render_diff
from reconciler.core.readiness import deployment_readiness
from reconciler.core.render import render
from tests.support.specs import release

DESIRED = render(release())


def live_version(obj):
    """What a real API server gives back: defaults and server fields added."""
    live = {**obj, "metadata": {**obj["metadata"], "uid": "u", "resourceVersion": "7", "generation": 3,
                                "creationTimestamp": "2026-01-01T00:00:00Z",
                                "managedFields": [{"manager": "sluice"}],
                                "annotations": {**(obj["metadata"].get("annotations") or {}),
                                                "deployment.kubernetes.io/revision": "4"}},
            "status": {"whatever": True}}
    if obj["kind"] == "Deployment":
        spec = dict(obj["spec"])
        spec.update(revisionHistoryLimit=10, progressDeadlineSeconds=600,
                    strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}})
        pod = dict(spec["template"]["spec"])
        pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler",
                   securityContext={}, terminationGracePeriodSeconds=30)
        pod["containers"] = [{**c, "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                              "terminationMessagePolicy": "File"} for c in pod["containers"]]
        spec["template"] = {**spec["template"], "spec": pod}
        live["spec"] = spec
    if obj["kind"] == "Service":
        live["spec"] = {**obj["spec"], "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "type": "ClusterIP",
                        "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                        "ports": [{**p, "protocol": "TCP"} for p in obj["spec"]["ports"]]}
    return live


def refs(objs):
    return {ObjRef(o["apiVersion"], o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}


def test_defaults_and_server_fields_are_not_drift():
    live = refs(live_version(o) for o in DESIRED)
    assert diff(DESIRED, live) == []


def test_a_changed_weight_is_an_update_with_a_readable_diff():
    live = refs(live_version(o) for o in DESIRED)
    vs = next(o for r, o in live.items() if r.kind == "VirtualService")
    vs["spec"] = {**vs["spec"], "http": [{**vs["spec"]["http"][0], "route": [
        {**vs["spec"]["http"][0]["route"][0], "weight": 50}]}]}
    actions = diff(DESIRED, live)
    assert [(a.op, a.ref.kind) for a in actions] == [("update", "VirtualService")]
    text = render_diff(actions)
    assert text.startswith("--- live/networking.istio.io/v1.VirtualService.bookinfo.reviews")
    assert "-      weight: 50\n" in text and "+      weight: 100\n" in text
    assert "resourceVersion" not in text


def test_readiness_rules():
    dep = {"metadata": {"generation": 2}, "spec": {"replicas": 3},
           "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}}
    assert deployment_readiness("v2", dep).state == "progressing"      # spec not observed yet
    dep["status"]["observedGeneration"] = 2
    assert deployment_readiness("v2", dep).ready
    dep["status"]["availableReplicas"] = 2
    assert deployment_readiness("v2", dep).state == "progressing"
    dep["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    assert deployment_readiness("v2", dep).state == "failed"
    assert deployment_readiness("v2", None).state == "missing"


def test_replicas_handed_to_an_autoscaler_are_held_but_never_at_zero():
    """Switching to autoscaling keeps the live count until the HPA takes it (the server would default a
    dropped field to 1 pod); a 0 (a version a rollback scaled down) is never held: an HPA does nothing
    for a target at 0 replicas, so the field is dropped and the HPA scales from its minimum."""
    from reconciler.core.diff import handed_over, stamp
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v2"},
               "spec": {"selector": {}, "template": {}}}

    def live(replicas, *managers):
        return {**desired, "spec": {**desired["spec"], "replicas": replicas}, "metadata": {
            "name": "reviews-v2", "managedFields": [{"manager": m, "fieldsV1": {"f:spec": {"f:replicas": {}}}}
                                                    for m in managers]}}
    assert handed_over(desired, live(5, "sluice")) == 5
    assert stamp(desired, instance="sluice", live=live(5, "sluice"))["spec"]["replicas"] == 5
    assert handed_over(desired, live(0, "sluice")) is None
    assert "replicas" not in stamp(desired, instance="sluice", live=live(0, "sluice"))["spec"]
    assert handed_over(desired, live(7, "sluice", "kube-controller-manager")) is None


def test_declared_replicas_are_applied_whoever_scaled_the_deployment():
    """No spec.autoscaling: replicas are Sluice's, an HPA it was not told about is fought."""
    from reconciler.core.diff import stamp
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"},
               "spec": {"replicas": 10, "selector": {}, "template": {}}}
    live = {**desired, "spec": {**desired["spec"], "replicas": 2}, "metadata": {
        "name": "reviews-v1", "managedFields": [{"manager": "kube-controller-manager",
                                                 "fieldsV1": {"f:spec": {"f:replicas": {}}}}]}}
    assert stamp(desired, instance="sluice", live=live)["spec"]["replicas"] == 10
