"""The git target's rendered/ tree: Sluice writes and deletes only its own
files, keeps a kustomization.yaml per folder (and one on top) for Argo CD or
Flux, leaves a person's files alone, and rewrites nothing on an unchanged
repo."""

from datetime import timedelta

import yaml

from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from reconciler.core import manifests
from tests.support.drive import T0
from tests.support.gitserver import clone_work, human_edit, make_bare, run
from tests.support.specs import dump, release_doc

MINE = manifests.with_header(b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\n")
LEGACY = (b"apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: {app.kubernetes.io/managed-by: sluice, "
          b"sluice.dev/release: gone, sluice.dev/release-namespace: shop}\n")
THEIRS = b"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml, extra.yaml]\n"


def test_ownership_is_the_header_or_the_releases_labels_on_every_document():
    assert manifests.owned("rendered/x/y.yaml", MINE) and manifests.owned("rendered/shop/gone.yaml", LEGACY)
    assert not manifests.owned("rendered/shop/other.yaml", LEGACY)       # labelled as another release's
    assert not manifests.owned("rendered/other/notes.yaml", LEGACY)
    for data in (THEIRS, b"# notes\n", b"{["):
        assert not manifests.owned("rendered/shop/kustomization.yaml", data)


def test_changes_keep_what_people_wrote_and_what_is_held():
    existing = {"rendered/shop/kustomization.yaml": THEIRS, "rendered/shop/extra.yaml": b"kind: ConfigMap\n",
                "rendered/shop/gone.yaml": LEGACY, "rendered/shop/held.yaml": MINE,
                "rendered/README.md": b"hands off\n"}
    out = manifests.changes({"shop/web": b"kind: Service\n"}, existing, keep={"shop/held"})
    assert out["rendered/shop/web.yaml"] == manifests.with_header(b"kind: Service\n")
    assert out["rendered/shop/gone.yaml"] is None                       # Sluice's own, release left git
    for path in ("rendered/shop/kustomization.yaml", "rendered/shop/extra.yaml", "rendered/shop/held.yaml",
                 "rendered/README.md"):
        assert path not in out, path
    top = yaml.safe_load(out["rendered/kustomization.yaml"])
    assert top["resources"] == ["shop/"]
    again = {**existing, **{p: d for p, d in out.items() if d is not None}}
    again.pop("rendered/shop/gone.yaml")
    assert manifests.changes({"shop/web": b"kind: Service\n"}, again, keep={"shop/held"}) == {}


def test_git_target_writes_kustomizations_once_and_never_touches_a_persons_files(tmp_path):
    def doc(name):
        d = release_doc(name=name, status={"phase": "Promoted", "stable": {"version": "v2", "image": f"example.com/{name}:v2"},
                                           "weight": 100})
        d["spec"]["analysis"] = {"metrics": []}
        return d
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(doc("reviews")),
                                     "releases/bookinfo/ratings.yaml": dump(doc("ratings")),
                                     "rendered/bookinfo/notes.md": "a person's notes\n"})
    now = [T0]
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget(), clock=lambda: now[0])
    assert ctl.run_pass().pushed
    kust = yaml.safe_load(run("show", "main:rendered/bookinfo/kustomization.yaml", cwd=bare))
    assert kust["resources"] == ["ratings.yaml", "reviews.yaml"]
    tip = run("rev-parse", "main", cwd=bare)
    for _ in range(5):
        now[0] += timedelta(minutes=1)
        assert not ctl.run_pass().pushed
    assert run("rev-parse", "main", cwd=bare) == tip                     # an unchanged repo: no commit
    human = clone_work(str(bare), tmp_path / "human")
    human_edit(human, lambda w: (w / "releases/bookinfo/ratings.yaml").unlink(), "retire ratings")
    assert ctl.run_pass().pushed
    files = run("ls-tree", "-r", "--name-only", "main", "rendered/", cwd=bare).split()
    assert files == ["rendered/bookinfo/kustomization.yaml", "rendered/bookinfo/notes.md",
                     "rendered/bookinfo/reviews.yaml", "rendered/kustomization.yaml"]
    assert run("show", "main:rendered/bookinfo/notes.md", cwd=bare) == "a person's notes\n"
