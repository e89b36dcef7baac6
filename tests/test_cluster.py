"""The kubernetes target over HTTP against the emulator: a rollout applied
step by step, no-op passes that only LIST, drift put back and recorded,
prune limited to what Sluice owns, readiness gating, and API errors.

Set SLUICE_TEST_KUBECONFIG to a kubeconfig of a real cluster with Istio's
CRDs to run the adapter tests there too (they are skipped otherwise)."""

import os
import pytest
import yaml

from reconciler.adapters.cluster import Cluster
from reconciler.core.diff import ObjRef
from reconciler.errors import ClusterError, ClusterForbidden
from tests.support.cluster_env import Env, promoted
from tests.support.gitserver import clone_work, human_edit, run
from tests.support.kube_emulator import Emulator
from tests.support.specs import dump

pytestmark = pytest.mark.timeout(120)
V1 = {"version": "v1", "image": "example.com/reviews:v1"}


spec = promoted


def test_rollout_applies_each_committed_step(tmp_path, emu):
    env = Env(tmp_path, emu, [spec()])
    seen = []
    for _ in range(8):
        env.tick()
        seen.append(env.weights())
        status = yaml.safe_load(run("show", "main:releases/bookinfo/reviews.yaml", cwd=env.bare))["status"]
        # git is the truth: what runs is what was committed
        if status["phase"] == "Progressing":
            assert env.weights().get("v2", 0) == status["weight"]
        if status["phase"] == "Promoted" and status["stable"]["version"] == "v2":
            break
    assert seen[-1] == {"v2": 100}
    assert {"v1": 90, "v2": 10} in seen and {"v1": 50, "v2": 50} in seen


def test_noop_pass_makes_zero_writes_and_one_list_per_kind_per_namespace(tmp_path, emu):
    docs = [spec(name=f"svc{i}", namespace=ns) for i, ns in enumerate(["a", "a", "b"])]
    for d in docs:
        d["spec"]["target"] = {"version": "v1", "image": f"example.com/{d['metadata']['name']}:v1"}
    env = Env(tmp_path, emu, docs)
    env.tick()
    env.tick()
    emu.reset_counts()
    report = env.tick(seconds=3600)
    counts = emu.counts
    assert emu.writes() == 0 and not report.pushed
    lists = {k: v for k, v in counts.items() if k[0] == "list"}
    assert set(lists.values()) == {1} and len(lists) == 6 * 2   # 6 kinds (ConfigMap, HPA too) x 2 namespaces
    assert sum(v for k, v in counts.items() if k[0] == "get") == 0


def test_drift_is_repaired_and_recorded(tmp_path, emu):
    env = Env(tmp_path, emu, [spec()])
    env.tick(); env.tick()
    assert env.weights() == {"v1": 90, "v2": 10}

    def kubectl_edit(vs):
        vs["spec"]["http"][-1]["route"][0]["weight"] = 50
        vs["spec"]["http"][-1]["route"][1]["weight"] = 50
    emu.edit("virtualservices", "bookinfo", "reviews", kubectl_edit)
    report = env.tick(seconds=1)
    assert env.weights() == {"v1": 90, "v2": 10}
    assert report.outcomes["bookinfo/reviews"].event.action == "drift"
    status = yaml.safe_load(run("show", "main:releases/bookinfo/reviews.yaml", cwd=env.bare))["status"]
    assert status["drift"]["objects"] == ["VirtualService/reviews"]
    assert env.tick(seconds=1).outcomes["bookinfo/reviews"].event is None


def test_prune_only_what_sluice_owns(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(), spec(name="ratings")],
              extra={"releases/bookinfo/broken.yaml": dump(spec(name="broken"))})
    env.tick()
    # a look-alike nobody labelled as ours
    emu.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "stranger", "namespace": "bookinfo",
                                                                 "labels": {"app": "reviews"}},
             "spec": {"ports": [{"port": 1}]}})
    assert emu.get("deployments", "bookinfo", "broken-v2")

    def change(w):
        (w / "releases/bookinfo/ratings.yaml").unlink()
        p = w / "releases/bookinfo/broken.yaml"
        p.write_text(p.read_text().replace("port: 9080", "port: nope"))
    human_edit(env.human, change, "retire ratings, break broken")
    report = env.tick()
    assert any(p.file == "releases/bookinfo/broken.yaml" for p in report.problems)
    assert emu.get("deployments", "bookinfo", "ratings-v2") is None
    assert emu.get("virtualservices", "bookinfo", "ratings") is None
    assert emu.get("services", "bookinfo", "stranger") is not None            # not ours
    assert emu.get("deployments", "bookinfo", "broken-v2") is not None        # invalid: left as it runs
    assert emu.get("virtualservices", "bookinfo", "reviews") is not None


def test_no_traffic_to_a_version_that_is_not_ready(tmp_path, emu):
    env = Env(tmp_path, emu, [spec()])
    env.tick(ready=False)
    for _ in range(3):
        env.tick(ready=False)
        assert env.weights() == {"v1": 100}
    emu.set_ready("bookinfo", "reviews-v2")
    env.tick(ready=False)
    assert env.weights() == {"v1": 90, "v2": 10}
    emu.set_ready("bookinfo", "reviews-v2", False, failed=True)


def test_progress_deadline_fails_the_step(tmp_path, emu):
    env = Env(tmp_path, emu, [spec(progressDeadline="2m")])
    env.tick(ready=False)
    emu.set_ready("bookinfo", "reviews-v2", False, failed=True)
    report = env.tick(ready=False)
    assert report.outcomes["bookinfo/reviews"].phase == "Failed"
    assert emu.get("deployments", "bookinfo", "reviews-v2")["spec"]["replicas"] == 0


def test_api_errors(tmp_path, emu):
    cluster = Cluster(emu.api_client(), sleep=lambda s: None)
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "ns"},
           "spec": {"ports": [{"port": 80}]}}
    emu.fail_next("patch", "services", 409)
    assert cluster.apply(obj)["metadata"]["name"] == "x"          # 409: applied again
    emu.fail_next("list", "services", 429, n=2)
    emu.fail_next("list", "deployments", 500, n=2)
    assert cluster.list_managed(["ns"]) == {}                        # retried through
    emu.fail_next("patch", "virtualservices", 403)
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "v", "namespace": "ns"},
          "spec": {"hosts": ["v"]}}
    with pytest.raises(ClusterForbidden, match="cannot patch virtualservices.networking.istio.io in namespace ns"):
        cluster.apply(vs)
    emu.fail_next("list", "services", 500, n=10)
    with pytest.raises(ClusterError, match="HTTP 500"):
        cluster.list_managed(["ns"])


def test_unreachable_api_server_does_not_crash_the_pass(tmp_path):
    with Emulator() as e:
        api = e.api_client()
    env_emu = type("Dead", (), {"api_client": lambda self: api, "all_ready": lambda self: None})()
    env = Env(tmp_path, env_emu, [spec()])
    report = env.tick()
    assert report.error and "unreachable" in report.error


def test_rollback_reaches_the_cluster_even_when_git_push_fails(tmp_path, emu):
    env = Env(tmp_path, emu, [spec()])
    env.tick(); env.tick()
    assert env.weights() == {"v1": 90, "v2": 10}
    human_edit(env.human, lambda w: (w / "releases/bookinfo/reviews.yaml").write_text(
        (w / "releases/bookinfo/reviews.yaml").read_text().replace("spec:\n", "spec:\n  abort: true\n", 1)), "abort")
    run("config", "receive.denyCurrentBranch", "refuse", cwd=env.bare)
    hook = env.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'remote is read-only' >&2\nexit 1\n")
    hook.chmod(0o755)
    report = env.tick(seconds=1)
    assert report.error and not report.pushed
    assert env.weights() == {"v1": 100}        # applied before (and without) the commit


@pytest.mark.skipif(not os.environ.get("SLUICE_TEST_KUBECONFIG"),
                    reason="set SLUICE_TEST_KUBECONFIG to a kubeconfig of a cluster with Istio CRDs to run against it")
def test_adapter_against_a_real_cluster():
    cluster = Cluster.connect(kubeconfig=os.environ["SLUICE_TEST_KUBECONFIG"])
    ns = os.environ.get("SLUICE_TEST_NAMESPACE", "default")
    obj = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "sluice-adapter-test", "namespace": ns,
                        "labels": {"app.kubernetes.io/managed-by": "sluice", "sluice.dev/release": "adapter-test"}},
           "spec": {"ports": [{"port": 80}]}}
    cluster.apply(obj)
    try:
        assert ObjRef("v1", "Service", ns, "sluice-adapter-test") in cluster.list_managed([ns])
    finally:
        cluster.delete(ObjRef("v1", "Service", ns, "sluice-adapter-test"))


def test_status_live_reads_only_and_shows_sync_and_health(tmp_path, emu, capsys, monkeypatch):
    import json
    from reconciler.cli.main import main
    from tests.support.kube_emulator import kubeconfig
    env = Env(tmp_path, emu, [spec()])
    env.tick(); env.tick()
    work = clone_work(str(env.bare), tmp_path / "look")
    cfg = kubeconfig(tmp_path / "kc", emu.url)
    emu.reset_counts()
    assert main(["status", str(work), "--live", "--kubeconfig", str(cfg), "-o", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["releases"][0]
    assert row["sync"] == "Synced" and row["health"] == "Healthy"
    assert {verb for (verb, _, _) in emu.counts} <= {"list", "get", "watch"}
    emu.edit("virtualservices", "bookinfo", "reviews",
             lambda vs: vs["spec"]["http"][-1]["route"][0].update(weight=1))
    assert main(["status", str(work), "--live", "--kubeconfig", str(cfg)]) == 0
    assert "OutOfSync (1)" in capsys.readouterr().out
