"""A whole rollout against a real Kubernetes API server with Istio's CRDs: the
first step of every strategy, a rollback, and a prune, through the same
controller and adapter as production. Skipped unless SLUICE_TEST_KUBECONFIG
names a cluster (README: "Tests against a real cluster" shows kind).

The namespace (SLUICE_TEST_NAMESPACE, default ``sluice-test``) is created if
missing and Sluice's objects in it are deleted at the end. Pods run
SLUICE_TEST_IMAGE (default ``registry.k8s.io/pause:3.9``: it pulls fast and
is ready at once); readiness comes from the cluster, so the test waits for it.
"""

import os
import time
from datetime import datetime, timezone

import pytest
import yaml

from reconciler.adapters.cluster import Cluster, KubernetesTarget
from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from tests.support.gitserver import clone_work, human_edit, make_bare, run
from tests.support.specs import dump, release_doc

KUBECONFIG = os.environ.get("SLUICE_TEST_KUBECONFIG")
NAMESPACE = os.environ.get("SLUICE_TEST_NAMESPACE", "sluice-test")
IMAGE = os.environ.get("SLUICE_TEST_IMAGE", "registry.k8s.io/pause:3.9")
pytestmark = [pytest.mark.timeout(900),
              pytest.mark.skipif(not KUBECONFIG, reason="set SLUICE_TEST_KUBECONFIG to a kubeconfig of a cluster "
                                                        "with Istio's CRDs to run a rollout against it")]
STRATEGIES = ("canary", "blueGreen", "abTesting", "darkLaunch", "mirror", "rolling", "recreate")


def doc_for(strategy):
    name = f"rc-{strategy.lower()}"
    doc = release_doc(name=name, namespace=NAMESPACE, strategy=strategy,
                      status={"phase": "Promoted", "stable": {"version": "v1", "image": IMAGE}, "weight": 100})
    doc["spec"]["replicas"] = 1
    doc["spec"]["target"] = {"version": "v2", "image": IMAGE}
    doc["spec"]["template"]["containers"][0].pop("readinessProbe")
    doc["spec"]["analysis"] = {"metrics": []}
    doc["spec"]["progressDeadline"] = "5m"
    return doc


@pytest.fixture(scope="module")
def cluster():
    import kubernetes
    cl = Cluster.connect(kubeconfig=KUBECONFIG)
    core = kubernetes.client.CoreV1Api(cl.api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    yield cl
    for ref in cl.list_managed([NAMESPACE]):
        cl.delete(ref)


def test_every_strategy_steps_rolls_back_and_prunes_on_a_real_cluster(tmp_path, cluster):
    docs = [doc_for(s) for s in STRATEGIES]
    bare = make_bare(tmp_path, seed={f"releases/{NAMESPACE}/{d['metadata']['name']}.yaml": dump(d) for d in docs})
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), KubernetesTarget(cluster, inventory_namespace=NAMESPACE),
                     clock=lambda: datetime.now(timezone.utc))

    def status(name):
        return yaml.safe_load(run("show", f"main:releases/{NAMESPACE}/{name}.yaml", cwd=bare)).get("status") or {}

    def until(pred, what, timeout=300):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            report = ctl.run_pass()
            assert report.error is None and not (report.applied and report.applied.errors), (report.error, report.applied)
            if pred():
                return
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}")

    # each mesh strategy reaches its first step; rolling and recreate promote in place
    until(lambda: all(status(d["metadata"]["name"]).get("step", 0) >= 1 or status(d["metadata"]["name"]).get(
        "stable", {}).get("version") == "v2" for d in docs), "every first step")
    # a rollback: abort the canary
    human = clone_work(str(bare), tmp_path / "human")
    human_edit(human, lambda w: (w / f"releases/{NAMESPACE}/rc-canary.yaml").write_text(
        (w / f"releases/{NAMESPACE}/rc-canary.yaml").read_text().replace("spec:\n", "spec:\n  abort: true\n", 1)),
        "abort")
    until(lambda: status("rc-canary").get("phase") == "Aborted", "the rollback")
    vs = next(o for r, o in cluster.list_managed([NAMESPACE]).items() if r.kind == "VirtualService"
              and r.name == "rc-canary")
    assert [d["destination"]["subset"] for d in vs["spec"]["http"][-1]["route"]] == ["v1"]
    # a prune: remove the recreate release from git
    human_edit(human, lambda w: (w / f"releases/{NAMESPACE}/rc-recreate.yaml").unlink(), "retire rc-recreate")
    until(lambda: not any(r.name == "rc-recreate" for r in cluster.list_managed([NAMESPACE])), "the prune")
