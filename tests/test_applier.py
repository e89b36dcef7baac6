"""The git target with an applier (Argo CD, Flux) and read-only cluster access:
what an applier object says, when a step's routing counts as live, readiness
from the cluster, the nudge, per-folder appliers, and the ``sluice run``
flags. Against a real git remote, the API emulator and the test applier
(tests/support/applier.py); tests/test_applier_e2e.py runs it all end to end."""

import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from reconciler.adapters.applier import (
    Appliers, ApplierRef, argocd_state, flux_state, folder_of, ref_of,
)
from reconciler.adapters.cluster import Cluster
from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.controller import Controller
from reconciler.core.loader import load_files
from reconciler.core.render import render
from tests.support.applier import TestApplier
from tests.support.cluster_env import promoted
from tests.support.drive import T0
from tests.support.gitserver import clone_work, free_port, human_edit, make_bare, run
from tests.support.kube_emulator import kubeconfig
from tests.support.specs import dump, release

pytestmark = pytest.mark.timeout(120)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHA = "0123456789abcdef0123456789abcdef01234567"
ARGO = ApplierRef("argocd", "argocd", "shop")
FLUX = ApplierRef("flux", "flux-system", "shop")


# --- what an applier object says (pure) ------------------------------------------------
def test_argocd_application_states():
    app = {"status": {"sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Healthy"}}}
    assert argocd_state(app).done and argocd_state(app).revisions == (SHA,)
    out = argocd_state({"status": {"sync": {"status": "OutOfSync", "revision": SHA},
                                   "health": {"status": "Progressing"}}})
    assert not out.done and out.words == "OutOfSync, Progressing"
    degraded = {"status": {"sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Degraded"}}}
    assert not argocd_state(degraded).done
    multi = {"status": {"sync": {"status": "Synced", "revisions": [SHA, "1.2.3"]}, "health": {"status": "Healthy"}}}
    assert argocd_state(multi).revisions == (SHA,)          # a chart version is no commit
    for junk in ({}, {"status": "x"}, {"status": {"sync": ["a"]}}, {"status": {"sync": {"revision": "--exec=x"}}}):
        assert not argocd_state(junk).done and not argocd_state(junk).revisions


def test_flux_kustomization_states():
    def ks(rev, ready="True", gen=2, observed=2, **extra):
        return {"metadata": {"generation": gen}, "spec": extra.pop("spec", {}),
                "status": {"lastAppliedRevision": rev, "observedGeneration": observed,
                           "conditions": [{"type": "Ready", "status": ready, "reason": "ReconciliationSucceeded",
                                           "observedGeneration": observed}, *extra.pop("conditions", [])]}}
    for rev in (f"main@sha1:{SHA}", f"main/{SHA}", SHA, f"sha1:{SHA}", f"feature/x@sha1:{SHA}"):
        state = flux_state(ks(rev))
        assert state.done and state.revisions == (SHA,), rev
    assert not flux_state(ks(SHA, ready="Unknown")).done
    stale = flux_state(ks(SHA, gen=3, observed=2))
    assert not stale.done and "generation 3 not observed yet" in stale.words
    assert not flux_state(ks(SHA, spec={"suspend": True})).done
    unhealthy = flux_state(ks(SHA, conditions=[{"type": "Healthy", "status": "False"}]))
    assert not unhealthy.done and "Healthy=False" in unhealthy.words
    assert not flux_state({"status": {"conditions": "x"}}).done


def test_applier_refs_and_folders():
    assert ref_of("none", None) is None and ref_of("argocd", "argocd/shop") == ARGO
    for kind, obj in (("argocd", None), ("argocd", "shop"), ("helm", "a/b"), ("flux", "A/b")):
        with pytest.raises(ValueError):
            ref_of(kind, obj)
    rel = release(name="web", namespace="shop")
    assert folder_of(rel) == "shop"
    appliers = Appliers(ARGO)
    settings = {"appliers": {"shop": {"applier": "flux", "object": "flux-system/shop"}, "batch": {"applier": "none"}}}
    assert appliers.for_release(rel, settings) == FLUX
    assert appliers.for_release(release(namespace="batch"), settings) is None
    assert appliers.for_release(release(namespace="other"), settings) == ARGO
    assert appliers.configured(settings) == [ARGO, FLUX]


def test_sluice_yaml_appliers_are_validated():
    ok = b"appliers:\n  shop: {applier: argocd, object: argocd/shop}\n  batch: {applier: none}\n"
    assert not load_files({"sluice.yaml": ok}).problems
    for bad in (b"appliers:\n  shop: {applier: argocd}\n", b"appliers:\n  shop: {applier: helm, object: a/b}\n",
                b"appliers:\n  shop: {applier: flux, object: shop}\n", b"appliers:\n  shop: {object: a/b}\n"):
        problems = load_files({"sluice.yaml": bad}).problems
        assert problems and problems[0].file == "sluice.yaml" and problems[0].line == 2, bad


# --- the emulator serves the appliers' kinds as a real API server does ------------------------
def test_emulator_application_has_no_status_subresource_flux_kinds_do(emu, tmp_path):
    import kubernetes
    api = kubernetes.client.CustomObjectsApi(emu.api_client())
    TestApplier(emu, "git://unused", "argocd", "argocd", "shop", tmp_path)
    TestApplier(emu, "git://unused", "flux", "flux-system", "shop", tmp_path)
    app = api.patch_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", "shop",
                                             {"status": {"sync": {"status": "Synced"}}},
                                             _content_type="application/merge-patch+json")
    assert app["status"]["sync"]["status"] == "Synced" and app["metadata"]["generation"] == 2
    with pytest.raises(kubernetes.client.ApiException) as err:
        api.patch_namespaced_custom_object_status("argoproj.io", "v1alpha1", "argocd", "applications", "shop",
                                                  {"status": {}}, _content_type="application/merge-patch+json")
    assert err.value.status == 404
    ks = api.patch_namespaced_custom_object("kustomize.toolkit.fluxcd.io", "v1", "flux-system", "kustomizations",
                                            "shop", {"metadata": {"annotations": {"a": "b"}},
                                                     "status": {"lastAppliedRevision": "x"}},
                                            _content_type="application/merge-patch+json")
    assert "status" not in ks and ks["metadata"]["generation"] == 1
    ks = api.patch_namespaced_custom_object_status("kustomize.toolkit.fluxcd.io", "v1", "flux-system",
                                                   "kustomizations", "shop", {"status": {"lastAppliedRevision": "x"}},
                                                   _content_type="application/merge-patch+json")
    assert ks["status"] == {"lastAppliedRevision": "x"} and ks["metadata"]["generation"] == 1


# --- the git target against a real remote, the emulator and the test applier -------------------
class Setup:
    """A writer controller (no applier) that commits steps, and the target under test
    with its own clone, as a second Sluice process would have."""

    def __init__(self, tmp, emu, applier=ARGO, docs=None, settings=None, nudge=True, cluster=True):
        files = {f"releases/{d['metadata']['namespace']}/{d['metadata']['name']}.yaml": dump(d)
                 for d in (docs or [promoted()])}
        if settings:
            files["sluice.yaml"] = settings
        self.tmp, self.emu, self.now = tmp, emu, T0
        self.bare = make_bare(tmp, seed=files)
        self.writer = Controller(GitRepo(str(self.bare), tmp / "writer"), GitTarget(), clock=lambda: self.now)
        self.repo = GitRepo(str(self.bare), tmp / "reader")
        self.cluster = Cluster(emu.api_client(), sleep=lambda s: None) if cluster else None
        self.target = GitTarget(self.cluster, repo=self.repo, appliers=Appliers(applier, nudge=nudge),
                                clock=lambda: self.now)

    def step(self, seconds=61):
        self.now += timedelta(seconds=seconds)
        return self.writer.run_pass()

    def load(self):
        self.loaded = load_files(self.repo.read_files(self.repo.sync()))
        self.target.observe(self.loaded.releases)
        return self.loaded

    def look(self, name="reviews"):
        loaded = self.load()
        rel = next(r for r in loaded.releases if r.name == name)
        return self.target.applied(rel, render(rel, loaded.settings), loaded.settings)

    def applier(self, kind="argocd", **kw):
        ns = "argocd" if kind == "argocd" else "flux-system"
        return TestApplier(self.emu, str(self.bare), kind, ns, "shop", self.tmp, **kw)

    def tip(self):
        return run("rev-parse", "main", cwd=self.bare).strip()


@pytest.mark.parametrize("kind", ["argocd", "flux"])
def test_the_window_opens_when_the_applier_applied_the_step(tmp_path, emu, kind):
    s = Setup(tmp_path, emu, ARGO if kind == "argocd" else FLUX)
    s.step()                                   # start: the canary's Deployment at weight 0
    s.step()                                   # step 1: 10%
    step_commit = s.tip()
    with s.applier(kind, poll=0.2, lag=0.1) as applier:
        applier.stuck = True
        assert applier.wait_for(lambda a: a.target == step_commit and a._reported == ("progress", step_commit))
        waiting = s.look()
        assert waiting.at is None and waiting.pending and waiting.deadline == 600
        name = "argocd Application argocd/shop" if kind == "argocd" else "flux Kustomization flux-system/shop"
        assert waiting.waiting.startswith(f"{name}: ") and waiting.waiting.endswith(f"waiting for {step_commit[:7]}")
        assert "(OutOfSync" in waiting.waiting if kind == "argocd" else "Ready=Unknown" in waiting.waiting
        applier.stuck = False
        assert applier.wait_for(lambda a: a.current == step_commit)
        first = s.look()
        assert first.at == s.now and not first.pending
        s.now += timedelta(seconds=30)
        assert s.look().at == first.at             # the first moment seen, kept
        # a restarted controller that finds it applied starts the window now, never earlier
        s.target = GitTarget(s.cluster, repo=s.repo, appliers=s.target.appliers, clock=lambda: s.now)
        assert s.look().at == s.now
        # readiness comes from the Deployments the applier applied
        rel = next(r for r in s.loaded.releases if r.name == "reviews")
        assert {v: r.state for v, r in s.target.readiness(rel).items()} == {"v1": "ready", "v2": "ready"}
        assert not applier.errors


def test_a_later_commit_counts_and_an_unfetched_one_is_said(tmp_path, emu):
    s = Setup(tmp_path, emu)
    s.step()
    s.step()
    human = clone_work(str(s.bare), tmp_path / "human")
    later = human_edit(human, lambda w: (w / "README.md").write_text("notes\n"), "notes")
    with s.applier(poll=0.2, lag=0.1) as applier:
        assert applier.wait_for(lambda a: a.current == later)
        assert s.look().at == s.now                # the applier is at a descendant of the step's commit
    # an applier at a commit this clone has not fetched: said, not guessed
    (tmp_path / "b").mkdir()
    s2 = Setup(tmp_path / "b", emu, ApplierRef("argocd", "argocd", "other"))
    s2.step()
    s2.step()
    emu.put({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "other",
             "namespace": "argocd"}, "spec": {}, "status": {"sync": {"status": "Synced", "revision": SHA},
                                                          "health": {"status": "Healthy"}}})
    got = s2.look()
    assert got.at is None and f"at {SHA[:7]} (not fetched by Sluice yet) (Synced, Healthy)" in got.waiting


def test_an_unreadable_applier_waits_and_never_raises(tmp_path, emu):
    s = Setup(tmp_path, emu)
    s.step()
    s.step()
    assert s.look().waiting.startswith("argocd Application argocd/shop: not found, waiting for ")
    s.applier()   # installed, never started: no status yet
    assert "no status yet" in s.look().waiting
    emu.fail_next("get", "applications", 403)
    assert "forbidden to read it: grant get on applications.argoproj.io in namespace argocd" in s.look().waiting
    emu.fail_next("get", "applications", 500, n=5)
    assert "cannot read it" in s.look().waiting
    no_cluster = GitTarget(None, repo=s.repo, appliers=Appliers(ARGO))
    rel = s.loaded.releases[0]
    assert "no cluster access" in no_cluster.applied(rel, render(rel, {}), {}).waiting


def test_routing_not_in_git_yet_is_waited_for(tmp_path, emu):
    s = Setup(tmp_path, emu)
    s.step()
    s.step()
    loaded = s.load()
    rel = loaded.releases[0]
    ahead = rel.with_status({**rel.status, "weight": 20, "step": 2})   # a status whose routing is not committed
    got = s.target.applied(ahead, render(ahead, {}), {})
    assert got.at is None and "rendered/bookinfo/reviews.yaml at" in got.waiting and "does not carry" in got.waiting
    gone = release(name="nothere", status={"phase": "Progressing", "weight": 10, "step": 1,
                                           "stable": {"version": "v1", "image": "i"}})
    assert "rendered/bookinfo/nothere.yaml is not in git yet" in s.target.applied(gone, [], {}).waiting


def test_each_applier_object_is_read_once_and_deployments_listed_once_per_pass(tmp_path, emu):
    docs = [promoted("reviews"), promoted("ratings"), promoted("details")]
    s = Setup(tmp_path, emu, docs=docs)
    s.step()
    s.step()
    with s.applier(poll=0.2, lag=0.1) as applier:
        assert applier.wait_for(lambda a: a.current == s.tip())
    loaded = s.load()
    emu.reset_counts()
    s.target.observe(loaded.releases)
    for rel in loaded.releases:
        assert s.target.applied(rel, render(rel, {}), {}).at == s.now
        s.target.readiness(rel)
    counts = emu.counts
    assert counts[("get", "applications", "argocd")] == 1
    assert counts[("list", "deployments", "bookinfo")] == 1
    assert sum(counts.values()) == 2
    emu.reset_counts()
    for rel in loaded.releases:   # seen applied: not read again
        s.target.applied(rel, render(rel, {}), {})
    assert sum(emu.counts.values()) == 0


def test_readiness_without_a_cluster_counts_every_version_ready(tmp_path, emu):
    s = Setup(tmp_path, emu, applier=None, cluster=False)
    s.step()
    s.step()
    loaded = s.load()
    rel = loaded.releases[0]
    assert {v: r.state for v, r in s.target.readiness(rel).items()} == {"v1": "ready", "v2": "ready"}
    assert s.target.applied(rel, render(rel, {}), {}).known is False
    assert "readiness NOT checked" in s.target.describe() and "no applier" in s.target.describe()
    with_cluster = GitTarget(Cluster(emu.api_client()), repo=s.repo)
    with_cluster.observe(loaded.releases)
    assert {v: r.state for v, r in with_cluster.readiness(rel).items()} == {"v1": "missing", "v2": "missing"}


def test_per_folder_appliers_from_sluice_yaml(tmp_path, emu):
    settings = ("appliers:\n  bookinfo: {applier: flux, object: flux-system/shop}\n"
                "  batch: {applier: none}\n")
    s = Setup(tmp_path, emu, docs=[promoted(), promoted("jobs", namespace="batch")], settings=settings)
    s.step()
    s.step()
    assert s.look().waiting.startswith("flux Kustomization flux-system/shop: not found")
    assert s.look("jobs").known is False
    with s.applier("flux", poll=0.2, lag=0.1) as applier:
        assert applier.wait_for(lambda a: a.current == s.tip())
        assert s.look().at == s.now


@pytest.mark.parametrize("kind", ["argocd", "flux"])
def test_after_push_nudges_the_applier_and_it_acts_at_once(tmp_path, emu, kind):
    s = Setup(tmp_path, emu, ARGO if kind == "argocd" else FLUX)
    s.step()
    with s.applier(kind, poll=3600, lag=0.0) as applier:   # after its first fetch it polls only hourly
        assert applier.wait_for(lambda a: a.current == s.tip())
        report = s.step()
        assert report.pushed
        assert not applier.wait_for(lambda a: a.current == report.tip, timeout=0.5)   # no poll in sight
        s.target.after_push(report.commits, {})
        if kind == "argocd":
            assert (emu.get("applications", "argocd", "shop")["metadata"].get("annotations") or {}).get(
                "argocd.argoproj.io/refresh") in ("normal", None)   # None: already handled and removed
        else:
            for plural, name in (("kustomizations", "shop"), ("gitrepositories", "shop-config")):
                stamp = emu.get(plural, "flux-system", name)["metadata"]["annotations"][
                    "reconcile.fluxcd.io/requestedAt"]
                assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) == s.now
        assert applier.wait_for(lambda a: a.current == report.tip, timeout=10)
        assert applier.nudged and not applier.errors


def test_nudges_off_none_without_commits_and_failures_are_only_logged(tmp_path, emu, caplog):
    s = Setup(tmp_path, emu, nudge=False)
    s.applier()
    emu.reset_counts()
    s.target.after_push(["x"], {})
    s.target = GitTarget(s.cluster, repo=s.repo, appliers=Appliers(ARGO))
    s.target.after_push([], {})
    assert not [k for k in emu.counts if k[0] == "patch"]
    emu.fail_next("patch", "applications", 403)
    s.target.after_push(["x"], {})            # logged, not raised
    assert "cannot nudge argocd Application argocd/shop" in caplog.text
    emu.fail_next("get", "kustomizations", 500, n=10)
    GitTarget(s.cluster, repo=s.repo, appliers=Appliers(FLUX)).after_push(["x"], {})
    assert "cannot nudge flux Kustomization flux-system/shop" in caplog.text


def test_a_refused_source_nudge_still_nudges_the_kustomization(tmp_path, emu, caplog):
    s = Setup(tmp_path, emu, FLUX)
    s.applier("flux")
    emu.fail_next("patch", "gitrepositories", 403)   # its source is named otherwise in the Role
    s.target.after_push(["x"], {})
    assert "cannot nudge GitRepository flux-system/shop-config" in caplog.text
    stamp = emu.get("kustomizations", "flux-system", "shop")["metadata"]["annotations"]
    assert stamp["reconcile.fluxcd.io/requestedAt"]


# --- sluice run: flags, env, start-up notes ---------------------------------------------------
def sluice_run(tmp_path, *args, env=None):
    bare = tmp_path / "config.git"
    if not bare.exists():
        make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(promoted())})
    full = {**os.environ, "PYTHONPATH": REPO}
    full.pop("KUBERNETES_SERVICE_HOST", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "reconciler.cli.main", "run", "--once", "--repo", str(bare),
                           "--target", "git", "--workdir", str(tmp_path / "w"), *args], env=full,
                          capture_output=True, text=True, timeout=60)


def test_run_says_what_protects_a_step(tmp_path, emu):
    out = sluice_run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "readiness NOT checked" in out.stderr and "no applier" in out.stderr
    cfg = kubeconfig(tmp_path / "kubeconfig", emu.url)
    out = sluice_run(tmp_path, "--kubeconfig", str(cfg), env={"SLUICE_APPLIER": "argocd",
                                                              "SLUICE_APPLIER_OBJECT": "argocd/shop",
                                                              "SLUICE_APPLIER_DEADLINE": "90s"})
    assert out.returncode == 0, out.stderr
    assert "readiness from the cluster" in out.stderr
    assert "analysis waits for argocd Application argocd/shop (deadline 1m30s, nudge on)" in out.stderr
    # a cluster asked for but not answering is never "no cluster": the pass fails, nothing is decided blind
    dead = kubeconfig(tmp_path / "dead", f"http://127.0.0.1:{free_port()}")
    out = sluice_run(tmp_path, "--kubeconfig", str(dead), "--no-applier-nudge", "--applier", "flux",
                     "--applier-object", "flux-system/shop")
    assert out.returncode == 1, out.stderr
    assert "does not answer yet" in out.stderr and "passes fail until it does" in out.stderr
    assert "readiness from the cluster" in out.stderr and "nudge off" in out.stderr
    assert "readiness NOT checked" not in out.stderr
    out = sluice_run(tmp_path, "--kubeconfig", str(tmp_path / "no-such-kubeconfig"))
    assert out.returncode == 2 and "cannot use the cluster asked for" in out.stderr, out.stderr


@pytest.mark.parametrize("args,words", [
    (["--applier", "argocd"], "needs its object"),
    (["--applier", "argocd", "--applier-object", "shop"], "is not NAMESPACE/NAME"),
    (["--applier-object", "argocd/shop"], "without --applier"),
    (["--applier", "argocd", "--applier-object", "argocd/shop"], "needs read access to the cluster"),
    (["--applier-deadline", "soon"], "not a duration"),
])
def test_run_refuses_bad_applier_flags(tmp_path, args, words):
    out = sluice_run(tmp_path, *args)
    assert out.returncode == 2 and words in out.stderr, out.stderr


def test_a_forbidden_readiness_list_holds_that_namespace_and_says_which_rbac(tmp_path, emu):
    from reconciler.errors import ClusterForbidden
    other = promoted(name="ratings")
    other["metadata"]["namespace"] = "shop"
    s = Setup(tmp_path, emu, applier=None, docs=[promoted(), other])
    s.step()
    emu.fail_next("list", "deployments", 403)   # the first namespace listed: bookinfo
    loaded = s.load()
    rels = {r.key: r for r in loaded.releases}
    with pytest.raises(ClusterForbidden, match="deploy/gitops/readiness.yaml"):
        s.target.readiness(rels["bookinfo/reviews"])
    assert s.target.readiness(rels["shop/ratings"])   # the other namespace is read and decided as usual


def test_in_a_pod_without_a_service_account_the_git_target_starts_without_cluster_access(tmp_path):
    """KUBERNETES_SERVICE_HOST is set in every pod: no cluster was asked for unless its config loads."""
    out = sluice_run(tmp_path, env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"})
    assert out.returncode == 0, out.stderr
    assert "without cluster access: in a pod without a usable service account" in out.stderr


def test_argo_cd_health_does_not_hide_a_first_deployment_from_readiness():
    """Argo CD folds the new Deployment's readiness into its health: at a rollout's first
    commit Synced is applied (readiness and progressDeadline judge the rest)."""
    from reconciler.adapters.applier import argocd_state
    state = argocd_state({"status": {"sync": {"status": "Synced", "revision": "a" * 40},
                                     "health": {"status": "Progressing"}}})
    assert state.synced and not state.done
