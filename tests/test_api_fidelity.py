"""The kubernetes target against an API server that behaves like a real one
(immutable selectors, defaults, canonical quantities, server-side apply with
managedFields; tests/support/kube_emulator.py): upgrades of in-place
Deployments never hit a 422, removed fields are removed, normalised values
are no drift, a scaler keeps its replicas, a person's git change is applied
not "repaired", and the inventory prunes after a restart without touching
another installation's objects."""

import pytest

from tests.support.cluster_env import Env as BaseEnv
from tests.support.gitserver import human_edit
from tests.support.specs import release_doc

pytestmark = pytest.mark.timeout(180)


def spec(name="reviews", namespace="bookinfo", strategy="canary", target="v2", **kw):
    doc = release_doc(name=name, namespace=namespace, strategy=strategy,
                      status={"phase": "Promoted", "stable": {"version": "v1", "image": f"example.com/{name}:v1"},
                              "weight": 100}, **kw)
    doc["spec"]["target"] = {"version": target, "image": f"example.com/{name}:{target}"}
    doc["spec"]["analysis"] = {"metrics": []}
    return doc


class Env(BaseEnv):
    def tick(self, seconds=61, ready=True):
        report = super().tick(seconds, ready)
        assert report.error is None, report.error
        assert not (report.applied and report.applied.errors), report.applied.errors
        return report

    def settle(self, name="reviews", ns="bookinfo", passes=12):
        for _ in range(passes):
            self.tick()
            if self.status(name, ns).get("phase") == "Promoted" and "retiring" not in self.status(name, ns):
                return
        raise AssertionError(self.status(name, ns))


@pytest.mark.parametrize("strategy", ["rolling", "recreate"])
def test_in_place_upgrades_never_change_the_selector(tmp_path, emu, strategy):
    env = Env(tmp_path, emu, [spec(strategy=strategy)])
    env.settle()
    for old, new in (("v2", "v3"), ("v3", "v4")):
        env.retarget("reviews", old, new)
        env.settle()
        dep = emu.get("deployments", "bookinfo", "reviews")
        assert dep["spec"]["template"]["metadata"]["labels"]["version"] == new
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"example.com/reviews:{new}"
        assert dep["spec"]["selector"] == {"matchLabels": {"app": "reviews"}}


def test_a_removed_field_is_removed_live_and_normalised_values_are_no_drift(tmp_path, emu):
    doc = spec(target="v1")
    doc["spec"]["template"]["containers"][0]["resources"] = {"requests": {"cpu": "1000m", "memory": "1024Mi"},
                                                             "limits": {"cpu": 2, "memory": "2Gi"}}
    env = Env(tmp_path, emu, [doc])
    env.tick()
    env.tick()
    live = emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["template"]["spec"]["containers"][0]
    assert live["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}   # the server canonicalised them
    emu.reset_counts()
    commits = len(env.subjects())
    for _ in range(100):
        env.tick(seconds=30, ready=False)
    assert emu.writes() == 0 and len(env.subjects()) == commits          # no write, no drift commit
    def drop_limits(text):
        lines = text.splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.strip() == "limits:")
        indent = len(lines[at]) - len(lines[at].lstrip())
        end = next(j for j in range(at + 1, len(lines)) if len(lines[j]) - len(lines[j].lstrip()) <= indent)
        return "".join(lines[:at] + lines[end:])
    env.edit("reviews", drop_limits, "drop the limits")
    env.settle()   # a template change is a new revision, rolled out like any other
    deps = [d for d in emu.objects("deployments").values() if d["spec"].get("replicas")]
    assert len(deps) == 1, [d["metadata"]["name"] for d in deps]
    live = deps[0]["spec"]["template"]["spec"]["containers"][0]
    assert "limits" not in live["resources"] and live["resources"]["requests"]["memory"] == "1Gi"
    # a person's change in git is applied as such: no "repair drift" commit
    assert not any("drift" in s for s in env.subjects())


def test_mirror_is_gone_after_a_mirror_rollout_is_aborted(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(strategy="mirror")])
    env.tick()
    env.tick()
    vs = emu.get("virtualservices", "bookinfo", "reviews")
    assert "mirror" in vs["spec"]["http"][-1]
    env.edit("reviews", lambda t: t.replace("spec:\n", "spec:\n  abort: true\n", 1), "abort")
    env.tick()
    vs = emu.get("virtualservices", "bookinfo", "reviews")
    assert "mirror" not in vs["spec"]["http"][-1] and "mirrorPercentage" not in vs["spec"]["http"][-1]


def test_replicas_follow_the_spec_an_undeclared_scaler_is_fought(tmp_path, emu):
    """No spec.autoscaling: Sluice owns replicas, whoever changes them (an HPA it was not told
    about included) is put back; declared autoscaling: Sluice never writes them (test_sizing.py)."""
    env = Env(tmp_path, emu, [spec(target="v1")])
    env.tick()
    env.tick()
    want = emu.get("deployments", "bookinfo", "reviews-v1")["spec"]["replicas"]

    def hpa_scales(dep):
        dep["spec"]["replicas"] = 7
    emu.update_as("kube-controller-manager", "deployments", "bookinfo", "reviews-v1", hpa_scales)
    env.tick(seconds=30, ready=False)
    dep = emu.get("deployments", "bookinfo", "reviews-v1")
    assert dep["spec"]["replicas"] == want != 7
    assert any("drift" in s for s in env.subjects())
    mine = [e for e in dep["metadata"]["managedFields"] if e["manager"] == "sluice"]
    assert any("f:replicas" in e["fieldsV1"].get("f:spec", {}) for e in mine)


def test_a_service_port_no_longer_applied_is_removed_whole(tmp_path, emu):
    """A real API server removes a keyed-list item (a Service port) its applier stops sending."""
    import yaml as pyyaml
    ports = [{"name": "grpc-api", "port": 9090}, {"name": "tcp-admin", "port": 7000}]
    doc = spec(target="v1")
    doc["spec"]["service"] = {"name": "reviews", "ports": ports}
    env = Env(tmp_path, emu, [doc])
    env.tick()
    assert [p["name"] for p in emu.get("services", "bookinfo", "reviews")["spec"]["ports"]] == ["grpc-api", "tcp-admin"]

    def drop(text):
        d = pyyaml.safe_load(text)
        d["spec"]["service"]["ports"].pop()
        return pyyaml.safe_dump(d, sort_keys=False)
    env.edit("reviews", drop, "drop tcp-admin")
    env.tick(seconds=1)
    assert emu.get("services", "bookinfo", "reviews")["spec"]["ports"] == [
        {"name": "grpc-api", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]
    emu.reset_counts()
    env.tick(seconds=30)
    assert emu.writes() == 0   # nothing left to fight over: the next pass writes nothing


def test_a_release_deleted_while_stopped_is_pruned_at_start_and_other_instances_are_untouched(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(target="v1"), spec(name="ratings", namespace="shop", target="v1")])
    env.tick()
    assert emu.get("deployments", "shop", "ratings-v1") is not None
    # another installation's objects, in the same namespaces
    other = Env(tmp_path / "other", emu, [spec(name="details", namespace="shop", target="v1")], instance="blue")
    other.tick()
    theirs = emu.get("deployments", "shop", "details-v1")
    assert theirs["metadata"]["labels"]["sluice.dev/instance"] == "blue"
    # stopped; the shop folder is deleted; a new process starts
    human_edit(env.human, lambda w: (w / "releases/shop/ratings.yaml").unlink(), "retire ratings")
    env.restart()
    env.tick()
    assert emu.get("deployments", "shop", "ratings-v1") is None
    assert emu.get("virtualservices", "shop", "ratings") is None
    assert emu.get("deployments", "shop", "details-v1") == emu.get("deployments", "shop", "details-v1")
    again = emu.get("deployments", "shop", "details-v1")
    assert again is not None and again["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert emu.get("deployments", "bookinfo", "reviews-v1") is not None


def test_objects_of_an_older_sluice_are_adopted_replaced_once_and_pruned(tmp_path, emu):
    """Before instances and fixed selectors: no instance label, the version in a
    rolling Deployment's selector, and a leftover of a release deleted since."""
    labels = {"app.kubernetes.io/managed-by": "sluice", "sluice.dev/release": "reviews",
              "sluice.dev/release-namespace": "bookinfo", "app": "reviews", "version": "v1"}
    emu.apply_as("sluice", {"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "reviews", "namespace": "bookinfo", "labels": labels},
                            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
                                     "template": {"metadata": {"labels": {"app": "reviews", "version": "v1"}},
                                                  "spec": {"containers": [{"name": "reviews",
                                                                           "image": "example.com/reviews:v1"}]}}}})
    emu.apply_as("sluice", {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "gone", "namespace": "bookinfo", "labels": {**labels, "sluice.dev/release": "gone", "app": "gone"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "gone"}}})
    env = Env(tmp_path, emu, [spec(strategy="rolling")])
    env.settle()
    dep = emu.get("deployments", "bookinfo", "reviews")
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "reviews"}}
    assert dep["metadata"]["labels"]["sluice.dev/instance"] == "sluice"
    assert dep["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    assert emu.get("services", "bookinfo", "gone") is None


def test_kubectl_scale_is_drift_put_back_and_a_version_at_zero_is_not_ready(tmp_path, emu):
    env = Env(tmp_path, emu, [spec()])
    env.tick()
    env.tick()
    assert env.weights() == {"v1": 90, "v2": 10}
    emu.update_as("kubectl", "deployments", "bookinfo", "reviews-v2", lambda d: d["spec"].update(replicas=0))
    report = env.tick(seconds=1, ready=False)
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] == 1   # put back: what sizing asks, ceil(2 x 20% next weight)
    # and while it had no pods, the new version was not ready: held at its weight, never advanced
    assert report.outcomes["bookinfo/reviews"].event.action == "hold" and env.weights() == {"v1": 90, "v2": 10}
    emu.all_ready()
    assert env.tick(seconds=1).outcomes["bookinfo/reviews"].event.action == "ready"


def test_a_corrupted_inventory_never_stops_a_pass(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(target="v1")])
    env.tick()
    emu.edit("configmaps", "sluice-system", "sluice-inventory-sluice",
             lambda cm: cm["data"].update(namespaces="null"))
    env.restart()
    env.tick()
    cm = emu.get("configmaps", "sluice-system", "sluice-inventory-sluice")
    assert cm["data"]["namespaces"] == '["bookinfo"]'     # repaired by the next write
