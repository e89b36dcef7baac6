"""The reconcile pass with the rendered-manifests (git) target, against a
real git remote: rollouts commit every step with rendered objects, a pass over
an unchanged repo writes nothing, an invalid release never stops the others,
and human steering commits take effect."""

import yaml

from tests.support.git_env import GitEnv
from tests.support.gitserver import human_edit, run
from tests.support.specs import dump, release_doc

V1 = {"version": "v1", "image": "example.com/reviews:v1"}


def seed(**docs):
    files = {"sluice.yaml": "apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"}
    for doc in docs.values():
        m = doc["metadata"]
        files[f"releases/{m['namespace']}/{m['name']}.yaml"] = dump(doc)
    return files


def no_metrics(doc):
    doc["spec"]["analysis"] = {"metrics": []}
    return doc


Env = GitEnv


def test_canary_to_promotion_with_rendered_manifests(tmp_path):
    doc = no_metrics(release_doc(status={"phase": "Promoted", "stable": V1, "weight": 100}))
    env = Env(tmp_path, seed(r=doc))
    weights = []
    for _ in range(10):
        report = env.tick()
        assert report.error is None
        vs = [d for d in yaml.safe_load_all(env.show("rendered/bookinfo/reviews.yaml")) if d["kind"] == "VirtualService"][0]
        weights.append({d["destination"]["subset"]: d["weight"] for d in vs["spec"]["http"][0]["route"]})
        if report.outcomes["bookinfo/reviews"].phase == "Promoted" and weights[-1] == {"v2": 100}:
            break
    assert weights[:5] == [{"v1": 100}, {"v1": 90, "v2": 10}, {"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100}]
    assert env.subjects()[:5] == [
        "bookinfo/reviews: promote v2 50% -> 100%", "bookinfo/reviews: canary v2 20% -> 50% (step 3/3)",
        "bookinfo/reviews: canary v2 10% -> 20% (step 2/3)", "bookinfo/reviews: canary v2 0% -> 10% (step 1/3)",
        "bookinfo/reviews: start canary v1 -> v2 (3 steps)"]
    # the status in git matches what was rendered
    status = yaml.safe_load(env.show("releases/bookinfo/reviews.yaml"))["status"]
    assert status["phase"] == "Promoted" and status["stable"]["version"] == "v2"


def test_unchanged_repo_pass_writes_nothing(tmp_path):
    doc = release_doc(status={"phase": "Promoted", "stable": {"version": "v2", "image": "example.com/reviews:v2"},
                              "weight": 100})
    env = Env(tmp_path, seed(r=doc))
    env.tick()   # writes the rendered manifests once
    before = run("rev-parse", "main", cwd=env.bare)
    for _ in range(3):
        report = env.tick(seconds=3600)
        assert not report.pushed and report.commits == []
    assert run("rev-parse", "main", cwd=env.bare) == before


def test_invalid_release_is_reported_and_others_go_on(tmp_path):
    good = no_metrics(release_doc(name="ratings", status={"phase": "Promoted", "weight": 100,
                                                          "stable": {"version": "v1", "image": "r:1"}}))
    files = seed(g=good)
    files["releases/bookinfo/broken.yaml"] = "apiVersion: sluice.dev/v1alpha1\nkind: Release\nspec: [\n"
    env = Env(tmp_path, files)
    report = env.tick()
    assert [str(p).split(":")[0] for p in report.problems] == ["releases/bookinfo/broken.yaml"]
    assert report.outcomes["bookinfo/ratings"].event.action == "start"
    assert "broken" not in run("show", "main:releases/bookinfo/broken.yaml", cwd=env.bare).split("spec")[0]
    assert env.show("releases/bookinfo/broken.yaml") == files["releases/bookinfo/broken.yaml"]   # untouched


def test_human_pause_and_abort_take_effect(tmp_path):
    doc = no_metrics(release_doc(status={"phase": "Promoted", "stable": V1, "weight": 100}))
    env = Env(tmp_path, seed(r=doc))
    env.tick(); env.tick()
    path = env.human / "releases/bookinfo/reviews.yaml"

    def pause(w):
        p = w / "releases/bookinfo/reviews.yaml"
        p.write_text(p.read_text().replace("spec:\n", "spec:\n  paused: true\n", 1))

    human_edit(env.human, pause, "pause reviews")
    assert env.tick().outcomes["bookinfo/reviews"].event.action == "pause"
    assert env.tick().outcomes["bookinfo/reviews"].event is None

    def abort(w):
        p = w / "releases/bookinfo/reviews.yaml"
        p.write_text(p.read_text().replace("  paused: true\n", "  abort: true\n", 1))

    human_edit(env.human, abort, "abort reviews")
    report = env.tick()
    assert report.outcomes["bookinfo/reviews"].phase == "Aborted"
    vs = [d for d in yaml.safe_load_all(env.show("rendered/bookinfo/reviews.yaml")) if d["kind"] == "VirtualService"][0]
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": "reviews.bookinfo.svc.cluster.local",
                                                               "port": {"number": 9080}, "subset": "v1"}, "weight": 100}]
    assert "pause reviews" in env.subjects() and "abort reviews" in env.subjects()
    assert path.exists()


def test_removed_release_prunes_its_rendered_file(tmp_path):
    doc = release_doc(status={"phase": "Promoted", "stable": {"version": "v2", "image": "example.com/reviews:v2"},
                              "weight": 100})
    env = Env(tmp_path, seed(r=doc))
    env.tick()
    assert env.show("rendered/bookinfo/reviews.yaml")
    human_edit(env.human, lambda w: (w / "releases/bookinfo/reviews.yaml").unlink(), "retire reviews")
    env.tick()
    assert "rendered/bookinfo/reviews.yaml" not in run("ls-tree", "-r", "--name-only", "main", cwd=env.bare)
