"""deploy/gitops/ and the docs that explain it: the git target's RBAC is read-only
but for one annotation on the appliers' objects, and it grants every request
the git target really makes (counted on the API emulator while the examples
under deploy/gitops/ are installed and applied by the test applier); the
Application and Kustomization in docs/argocd.md and docs/flux.md are the
files under deploy/gitops/."""

import pathlib
import re
import textwrap

import pytest
import yaml

from reconciler.adapters.applier import Appliers, ref_of
from reconciler.adapters.cluster import Cluster
from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.controller import Controller
from reconciler.core.loader import load_files
from reconciler.core.render import render
from tests.support.applier import TestApplier
from tests.support.cluster_env import promoted
from tests.support.drive import T0
from tests.support.gitserver import make_bare
from tests.support.specs import dump

pytestmark = pytest.mark.timeout(120)
ROOT = pathlib.Path(__file__).resolve().parents[1]
GITOPS = ROOT / "deploy" / "gitops"
WRITES = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def docs(name):
    return [d for d in yaml.safe_load_all((GITOPS / name).read_text()) if d]


def rules(*names):
    return [(role["metadata"].get("namespace"), rule) for name in names for role in docs(name)
            if role["kind"] in ("Role", "ClusterRole") for rule in role["rules"]]


def test_read_only_but_one_annotation_on_the_appliers():
    for name in ("readiness.yaml", "argocd.yaml", "flux.yaml"):
        assert not [d for d in docs(name) if d["kind"] == "ClusterRoleBinding"], name
    patchable = {"applications", "kustomizations", "gitrepositories"}
    for ns, rule in rules("readiness.yaml", "argocd.yaml", "flux.yaml"):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if set(rule["verbs"]) & WRITES:
            assert set(rule["verbs"]) & WRITES == {"patch"} and set(rule["resources"]) <= patchable, rule
            assert rule.get("resourceNames"), rule   # only the objects named
    readiness = rules("readiness.yaml")
    assert [r for _, r in readiness] == [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}]


def allowed(verb, plural, namespace, name, granted):
    for ns, rule in granted:
        if ns not in (None, namespace) or plural not in rule["resources"] or verb not in rule["verbs"]:
            continue
        if rule.get("resourceNames") and name not in rule["resourceNames"]:
            continue
        return True
    return False


@pytest.mark.parametrize("kind,manifests,rbac", [("argocd", "argocd-application.yaml", "argocd.yaml"),
                                                  ("flux", "flux-sync.yaml", "flux.yaml")])
def test_the_examples_work_and_the_rbac_grants_every_request(tmp_path, emu, kind, manifests, rbac):
    objects = docs(manifests)
    main = next(o for o in objects if o["kind"] in ("Application", "Kustomization"))
    ns, name = main["metadata"]["namespace"], main["metadata"]["name"]
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(promoted())})
    now = [T0]
    writer = Controller(GitRepo(str(bare), tmp_path / "writer"), GitTarget(), clock=lambda: now[0])
    repo = GitRepo(str(bare), tmp_path / "reader")
    target = GitTarget(Cluster(emu.api_client(), sleep=lambda s: None), repo=repo,
                       appliers=Appliers(ref_of(kind, f"{ns}/{name}")), clock=lambda: now[0])
    with TestApplier(emu, str(bare), kind, ns, name, tmp_path, poll=0.2, lag=0.0, objects=objects) as applier:
        requests = []
        for _ in range(3):   # start, step 1, step 2: each pushed, nudged, applied, seen
            now[0] = now[0].replace(minute=now[0].minute + 1)
            report = writer.run_pass()
            emu_log_start = len(emu._sync(lambda: list(emu.emu.log)))
            loaded = load_files(repo.read_files(repo.sync()))
            target.observe(loaded.releases)
            rel = loaded.releases[0]
            target.readiness(rel)
            target.applied(rel, render(rel, {}), {})
            target.after_push(report.commits, {})
            requests += emu._sync(lambda: list(emu.emu.log))[emu_log_start:]
            assert applier.wait_for(lambda a: a.current == repo.tip(), 10)
        loaded = load_files(repo.read_files(repo.sync()))
        target.observe(loaded.releases)
        assert target.applied(loaded.releases[0], render(loaded.releases[0], {}), {}).at == now[0]
        assert not applier.errors
    granted = rules("readiness.yaml", rbac)
    granted = [(r_ns if r_ns else "bookinfo", r) for r_ns, r in granted]   # the ClusterRole, bound in bookinfo
    assert requests
    for verb, plural, namespace, obj in requests:
        assert allowed(verb, plural, namespace, obj, granted), (verb, plural, namespace, obj)
    assert {(v, p) for v, p, _, _ in requests} >= {("list", "deployments"), ("get", main["kind"].lower() + "s"),
                                                   ("patch", main["kind"].lower() + "s")}


def test_the_docs_show_the_files_under_deploy():
    for doc, name in (("argocd.md", "argocd-application.yaml"), ("flux.md", "flux-sync.yaml")):
        text = (ROOT / "docs" / doc).read_text()
        blocks = [b for b in re.findall(r"```yaml\n(.*?)^ *```", text, re.S | re.M) if "kind: Settings" not in b]
        shown = [d for b in blocks for d in yaml.safe_load_all(textwrap.dedent(b)) if d]
        assert shown == docs(name), doc
        for path in re.findall(r"`(deploy/gitops/[a-z-]+\.yaml)`", text):
            assert (ROOT / path).exists(), path
