"""Adopting what already runs (core/adopt.py): an existing Deployment (spec.workloadRef)
and an existing VirtualService (spec.service.virtualServiceRef), on the API emulator with
the real controller and the kubernetes target. Every field Sluice does not own stays
byte-identical at every pass; what it owns follows the steps; drift on it is put back."""

import copy

import kubernetes_validate
import pytest

from reconciler.core import adopt
from reconciler.core.loader import load_files
from reconciler.core.render import render
from tests.support import istio
from tests.support.cluster_env import Env
from tests.support.specs import dump, release, release_doc

NS = "bookinfo"


def adopted_deployment():
    """reviews-v1 as a team wrote it with kubectl: annotations, extra labels, resources, env, probes."""
    labels = {"app": "reviews", "version": "v1", "team": "books"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reviews-v1", "namespace": NS, "labels": {"app": "reviews", "team": "books"},
                         "annotations": {"owner.example.com/contact": "books@example.com"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
                     "template": {"metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                                  "spec": {"containers": [{
                                      "name": "reviews", "image": "example.com/reviews:v1",
                                      "ports": [{"containerPort": 9080}],
                                      "env": [{"name": "LOG_LEVEL", "value": "info"}],
                                      "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                    "limits": {"memory": "256Mi"}},
                                      "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}},
                                      "livenessProbe": {"httpGet": {"path": "/live", "port": 9080}}}]}}}}


def adopted_vs():
    """A VirtualService with three routes: Sluice's (primary) and two its owner configures."""
    host = "reviews.bookinfo.svc.cluster.local"
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews-routes", "namespace": NS, "annotations": {"team": "books"}},
            "spec": {"hosts": ["reviews"], "gateways": ["mesh"], "http": [
                {"name": "legacy", "match": [{"uri": {"prefix": "/legacy"}}],
                 "route": [{"destination": {"host": "legacy.bookinfo.svc.cluster.local"}}],
                 "timeout": "3s", "retries": {"attempts": 2, "perTryTimeout": "1s"}},
                {"name": "primary", "route": [{"destination": {"host": host, "subset": "v1"}, "weight": 100}],
                 "timeout": "5s"},
                {"name": "chaos", "match": [{"headers": {"x-chaos": {"exact": "1"}}}],
                 "route": [{"destination": {"host": host, "subset": "v1"}}],
                 "fault": {"abort": {"percentage": {"value": 50}, "httpStatus": 503}}}]}}


def doc_for(workload=True, vs=True, **kw):
    doc = release_doc(**kw)
    doc["spec"]["analysis"] = {"metrics": []}
    doc["spec"]["replicas"] = 4
    if workload:
        del doc["spec"]["template"]
        doc["spec"]["workloadRef"] = {"name": "reviews-v1"}
    if vs:
        doc["spec"]["service"]["virtualServiceRef"] = {"name": "reviews-routes", "route": "primary"}
        doc["spec"]["service"]["create"] = False
    return doc


def theirs(obj):
    """An adopted object minus what Sluice may change or the server keeps."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for key in ("managedFields", "resourceVersion", "generation"):
        meta.pop(key, None)
    out.pop("status", None)
    out.get("spec", {}).pop("replicas", None)
    return out


def others(vs):
    """A VirtualService minus the destinations of its primary route (and server metadata)."""
    out = theirs(vs)
    for route in out["spec"]["http"]:
        if route["name"] == "primary":
            route.pop("route")
    return out


def primary(emu):
    vs = emu.get("virtualservices", NS, "reviews-routes")
    return {d["destination"]["subset"]: d.get("weight") for d in adopt.route_of(vs, "primary")}


@pytest.fixture
def adopted(emu):
    emu.put(adopted_deployment(), manager="kubectl-create")
    emu.put(adopted_vs(), manager="kubectl-create")
    emu.all_ready()
    return emu


def test_adopted_deployment_and_vs_run_a_canary_to_promotion_keeping_every_field_of_their_owner(tmp_path, adopted):
    emu = adopted
    dep0, vs0 = theirs(emu.get("deployments", NS, "reviews-v1")), others(emu.get("virtualservices", NS, "reviews-routes"))
    env = Env(tmp_path, emu, [doc_for()])
    env.tick()
    st = env.status()
    assert st["phase"] == "Promoted" and st["stable"]["version"] == "v1" and st["adopted"]["name"] == "reviews-v1"
    assert st["adopted"]["template"]["containers"][0]["env"] == [{"name": "LOG_LEVEL", "value": "info"}]
    seen, replicas = [], []
    for _ in range(12):
        env.tick()
        assert theirs(emu.get("deployments", NS, "reviews-v1")) == dep0   # template untouched: no restart
        assert others(emu.get("virtualservices", NS, "reviews-routes")) == vs0
        seen.append(primary(emu))
        replicas.append(emu.get("deployments", NS, "reviews-v1")["spec"]["replicas"])
        if env.status().get("phase") == "Promoted" and env.status()["stable"]["version"] == "v2" \
                and "retiring" not in env.status():
            break
    assert {"v1": 90, "v2": 10} in seen and {"v1": 50, "v2": 50} in seen and seen[-1] == {"v2": 100}
    assert replicas[0] == 4 and replicas[-1] == 0             # stable full while it serves, 0 once promoted past
    canary = emu.get("deployments", NS, "reviews-v2")["spec"]["template"]
    assert canary["metadata"]["labels"]["team"] == "books" and canary["metadata"]["labels"]["version"] == "v2"
    assert canary["spec"]["containers"][0]["image"] == "example.com/reviews:v2"
    assert canary["spec"]["containers"][0]["env"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert emu.get("deployments", NS, "reviews-v1") is not None   # kept, never deleted
    assert emu.get("virtualservices", NS, "reviews") is None        # no VirtualService of Sluice's own
    assert istio.errors(theirs(emu.get("virtualservices", NS, "reviews-routes"))) == []
    subsets = emu.get("destinationrules", NS, "reviews")["spec"]["subsets"]
    assert {"name": "v2", "labels": {"version": "v2"}} in subsets
    env.tick()   # a pass over unchanged state writes nothing
    emu.reset_counts()
    env.tick()
    assert emu.writes() == 0


def test_owner_editing_another_route_is_kept_and_someone_moving_the_weights_is_drift(tmp_path, emu):
    emu.put(adopted_vs(), manager="kubectl-create")   # (no owner's reviews-v1: the release renders its own)
    emu.all_ready()
    stable = {"version": "v1", "image": "example.com/reviews:v1"}
    env = Env(tmp_path, emu, [doc_for(workload=False, status={"phase": "Promoted", "stable": stable, "weight": 100})])
    for _ in range(5):   # bounded: start, then the first step
        env.tick()
        if primary(emu) == {"v1": 90, "v2": 10}:
            break
    assert primary(emu) == {"v1": 90, "v2": 10}
    emu.edit("virtualservices", NS, "reviews-routes",
             lambda vs: vs["spec"]["http"][0].update(timeout="9s"), manager="books-team")
    env.tick(seconds=1)
    assert emu.get("virtualservices", NS, "reviews-routes")["spec"]["http"][0]["timeout"] == "9s"
    assert not any("drift" in s for s in env.subjects())
    emu.edit("virtualservices", NS, "reviews-routes",
             lambda vs: vs["spec"]["http"][1].update(route=[vs["spec"]["http"][1]["route"][0] | {"weight": 100}]),
             manager="someone")
    env.tick(seconds=1)
    assert primary(emu) == {"v1": 90, "v2": 10}
    assert any("drift" in s and "someone" in s for s in env.subjects()), env.subjects()
    assert emu.get("virtualservices", NS, "reviews-routes")["spec"]["http"][0]["timeout"] == "9s"


def test_a_failing_canary_rolls_back_to_the_adopted_deployment_scaled_as_stable(tmp_path, adopted):
    emu = adopted
    dep0 = theirs(emu.get("deployments", NS, "reviews-v1"))
    env = Env(tmp_path, emu, [doc_for()])
    env.tick()
    env.tick()
    assert primary(emu) == {"v1": 100}
    env.edit("reviews", lambda t: t.replace("spec:\n", "spec:\n  abort: true\n", 1), "abort")
    env.tick(seconds=1)
    assert env.status()["phase"] == "Aborted"
    assert primary(emu) == {"v1": 100}
    assert emu.get("deployments", NS, "reviews-v1")["spec"]["replicas"] == 4
    assert theirs(emu.get("deployments", NS, "reviews-v1")) == dep0


def test_a_missing_deployment_or_route_holds_the_release_with_a_clear_message(tmp_path, emu):
    emu.put(adopted_vs(), manager="kubectl-create")
    env = Env(tmp_path, emu, [doc_for(vs=False), doc_for(workload=False, name="ratings")])
    report = env.tick()
    text = " ".join(str(p) for p in report.problems) + " ".join(report.release_errors.values())
    assert "Deployment reviews-v1 was not found" in text and "reviews.yaml:" in text
    assert "no http route named 'primary'" not in text
    assert env.status() == {}   # held: nothing committed for it


def test_template_and_workload_ref_together_are_refused_at_the_line():
    doc = doc_for()
    doc["spec"]["template"] = {"containers": [{"name": "reviews"}]}
    text = dump(doc)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip() == "template:")
    got = [str(p) for p in load_files({"releases/bookinfo/reviews.yaml": text.encode()}).problems]
    assert any(f"reviews.yaml:{line}:" in g and "exclude each other" in g for g in got), got


def test_rendered_objects_validate_and_the_intent_names_only_what_sluice_owns():
    status = {"phase": "Progressing", "stable": {"version": "v1", "image": "example.com/reviews:v1",
                                                 "revision": "v1", "hash": "0" * 16},
              "canary": {"version": "v2", "image": "example.com/reviews:v2"}, "weight": 20, "step": 2,
              "stepStartedAt": "2026-11-22T09:00:00Z",
              "adopted": {"kind": "Deployment", "name": "reviews-v1", "revision": "v1",
                          "template": {"containers": [{"name": "reviews", "image": "example.com/reviews:v1"}],
                                       "labels": {"app": "reviews", "version": "v1"}}}}
    objs = render(release(doc_for(status=status)))
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "Deployment", "DestinationRule"], kinds   # the canary's; none of the adopted
    for obj in objs:
        if obj["kind"] in ("Deployment", "ConfigMap"):
            kubernetes_validate.validate(obj, "1.29", strict=True)
        else:
            assert istio.errors(obj) == [] and istio.pruned(obj) == []
    intent = next(o for o in objs if adopt.is_intent(o))
    dep, route = adopt.read_intent(intent)
    assert dep == {"name": "reviews-v1", "replicas": 4}
    assert [(d["destination"]["subset"], d["weight"]) for d in route["destinations"]] == [("v1", 80), ("v2", 20)]


def test_the_git_target_holds_an_adopting_release_at_its_line(tmp_path):
    """An applier cannot patch one route of a VirtualService, and the git target cannot read a
    Deployment: such a release is held with file:line, the others go on (fail closed)."""
    from reconciler.adapters.gitrepo import GitRepo
    from reconciler.adapters.gittarget import GitTarget
    from reconciler.controller import Controller
    from tests.support.cluster_env import promoted
    from tests.support.gitserver import make_bare
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(doc_for()),
                                     "releases/bookinfo/ratings.yaml": dump(promoted(name="ratings"))})
    report = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget()).run_pass()
    held = [str(p) for p in report.problems if p.release == "bookinfo/reviews"]
    assert any("workloadRef" in p and "--target kubernetes" in p for p in held), held
    assert any("virtualServiceRef" in p and "reviews.yaml:" in p for p in held), held
    assert "bookinfo/reviews" not in report.outcomes
    assert report.outcomes["bookinfo/ratings"].phase == "Progressing"   # the other release goes on


def shared_vs():
    """One ingress VirtualService routing /reviews (primary) and /ratings (ratings)."""
    vs = adopted_vs()
    vs["spec"]["http"].append({"name": "ratings", "match": [{"uri": {"prefix": "/ratings"}}],
                               "route": [{"destination": {"host": "ratings.bookinfo.svc.cluster.local",
                                                          "subset": "v1"}, "weight": 100}]})
    return vs


def promoted_on_route(name, route):
    doc = doc_for(workload=False, name=name, status={"phase": "Promoted", "weight": 100, "stable": {
        "version": "v1", "image": f"example.com/{name}:v1"}})
    doc["spec"]["service"]["virtualServiceRef"]["route"] = route
    return doc


def test_two_releases_on_different_routes_of_one_virtualservice_both_progress(tmp_path, emu):
    """'routing live since' is kept per release route, not per VirtualService: one
    release's patch never restarts the other's step clock (H2)."""
    emu.put(shared_vs(), manager="kubectl-create")
    emu.all_ready()
    env = Env(tmp_path, emu, [promoted_on_route("reviews", "primary"), promoted_on_route("ratings", "ratings")])
    weights = {"reviews": set(), "ratings": set()}
    for _ in range(8):
        env.tick()
        for name in weights:
            weights[name].add(env.status(name).get("weight"))
        if all(len(w) > 2 for w in weights.values()):
            break
    assert all({10, 20} <= w for w in weights.values()), weights


def _line_of(text, key, nth=1):
    return [i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith(key)][nth - 1]


@pytest.mark.parametrize("what", ["route", "deployment"])
def test_two_releases_claiming_one_route_or_one_deployment_are_both_refused_at_their_lines(what):
    """Two writers of one route's destinations (H3) or one Deployment's replicas (M3) would
    flip it every pass: both files get a problem at their line naming the other."""
    a = doc_for(vs=what == "route", workload=what == "deployment", name="reviews")
    b = doc_for(vs=what == "route", workload=what == "deployment", name="ratings")
    files = {"releases/bookinfo/reviews.yaml": dump(a), "releases/bookinfo/ratings.yaml": dump(b)}
    load = load_files({p: t.encode() for p, t in files.items()})
    assert load.releases == []
    key = "route:" if what == "route" else "name: reviews-v1"
    for path, text in files.items():
        other = next(p for p in files if p != path)
        line = _line_of(text, key)
        got = [str(p) for p in load.problems if str(p).startswith(path)]
        assert any(f"{path}:{line}:" in g and other in g for g in got), got


def test_a_lost_status_after_promotion_past_the_adopted_deployment_holds_at_the_line(tmp_path, adopted):
    """Adoption only on a true first adoption (the adopted Deployment serves, no revision of
    Sluice's runs): a status lost after promoting v2 never routes to the scaled-down
    adopted Deployment nor prunes the serving revision; it holds with file:line (H1)."""
    import yaml
    emu = adopted
    env = Env(tmp_path, emu, [doc_for()])
    for _ in range(12):
        env.tick()
        if env.status().get("stable", {}).get("revision") == "v2" and "retiring" not in env.status():
            break
    assert primary(emu) == {"v2": 100} and emu.get("deployments", NS, "reviews-v1")["spec"]["replicas"] == 0

    def lose(text):
        doc = yaml.safe_load(text)
        doc.pop("status")
        return dump(doc)
    env.edit("reviews", lose, "status lost")
    env.restart()
    for _ in range(3):
        report = env.tick()
        held = [str(p) for p in report.problems if p.release == "bookinfo/reviews"]
        assert any("reviews.yaml:" in p and "status" in p and "reviews-v2" in p for p in held), held
        assert primary(emu) == {"v2": 100}
        assert emu.get("deployments", NS, "reviews-v2")["spec"]["replicas"] == 4
        assert env.status() == {}


def _promote_past_adopted(env, emu):
    for _ in range(12):
        env.tick()
        if env.status().get("stable", {}).get("revision") == "v2" and "retiring" not in env.status():
            return
    raise AssertionError(env.status())


def test_rollback_to_the_adopted_revision_scales_it_back_to_full_and_routes_to_it(tmp_path, adopted):
    """Adoption records a snapshot of the adopted revision, as for any revision, so
    spec.rollback (sluice rollback --to) finds it and scales the adopted Deployment back (H5)."""
    emu = adopted
    dep0 = theirs(emu.get("deployments", NS, "reviews-v1"))
    env = Env(tmp_path, emu, [doc_for()])
    env.tick()
    assert "v1" in env.status()["snapshots"]
    _promote_past_adopted(env, emu)
    assert emu.get("deployments", NS, "reviews-v1")["spec"]["replicas"] == 0
    env.edit("reviews", lambda t: t.replace("spec:\n", "spec:\n  rollback: v1@1\n", 1), "rollback --to v1")
    for _ in range(4):
        env.tick()
        if env.status().get("stable", {}).get("revision") == "v1":
            break
    assert env.status()["stable"]["revision"] == "v1" and primary(emu) == {"v1": 100}
    assert emu.get("deployments", NS, "reviews-v1")["spec"]["replicas"] == 4
    assert theirs(emu.get("deployments", NS, "reviews-v1")) == dep0


def test_a_rollback_to_a_revision_outside_the_window_is_reported_at_its_line(tmp_path, adopted):
    """spec.rollback naming a revision Sluice cannot return to is never ignored silently."""
    emu = adopted
    env = Env(tmp_path, emu, [doc_for()])
    _promote_past_adopted(env, emu)
    env.edit("reviews", lambda t: t.replace("spec:\n", "spec:\n  rollback: v0@1\n", 1), "rollback --to v0")
    report = env.tick()
    held = [str(p) for p in report.problems if p.release == "bookinfo/reviews"]
    assert any("reviews.yaml:" in p and "v0" in p and "rollback" in p for p in held), held
    assert primary(emu) == {"v2": 100}


@pytest.mark.parametrize("kind", ["DestinationRule", "Service"])
def test_an_owners_object_with_the_rendered_name_is_never_taken_over(tmp_path, adopted, kind):
    """Before Sluice creates an object it reads it: an owner's DestinationRule (subsets v1..v3
    their routes use) or Service named as Sluice would name its own is left byte-identical,
    nothing of the release is applied, and it is held at file:line (H4). When the release
    leaves git, nothing of the owner's is pruned."""
    from tests.support.gitserver import human_edit
    emu = adopted
    host = "reviews.bookinfo.svc.cluster.local"
    if kind == "DestinationRule":
        emu.put({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                 "metadata": {"name": "reviews", "namespace": NS, "labels": {"team": "books"}},
                 "spec": {"host": host, "subsets": [{"name": n, "labels": {"version": n}} for n in ("v1", "v2", "v3")]}},
                manager="kubectl-client-side-apply")
        doc, plural = doc_for(), "destinationrules"
    else:
        emu.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": NS,
                                                                     "labels": {"team": "books"}},
                 "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]}},
                manager="kubectl-client-side-apply")
        doc, plural = doc_for(vs=False), "services"
        doc["spec"]["service"].pop("create", None)
    before = theirs(emu.get(plural, NS, "reviews"))
    env = Env(tmp_path, emu, [doc])
    held = []
    for _ in range(3):
        report = env.tick()
        held += [str(p) for p in report.problems if p.release == "bookinfo/reviews"]
        assert theirs(emu.get(plural, NS, "reviews")) == before
    assert any("reviews.yaml:" in p and f"{kind} bookinfo/reviews exists and is not Sluice's" in p for p in held), held
    human_edit(env.human, lambda w: (w / "releases/bookinfo/reviews.yaml").unlink(), "remove release")
    env.tick()
    assert theirs(emu.get(plural, NS, "reviews")) == before


@pytest.mark.parametrize("route,why", [("legacy", "sends traffic to legacy.bookinfo.svc.cluster.local"),
                                       ("delegated", "has delegate")])
def test_a_route_of_another_service_or_a_delegating_route_is_never_taken(tmp_path, emu, route, why):
    """Taking it would silently move another service's traffic (or Istio would refuse a route
    beside a delegate): the release is held, the VirtualService is left as its owner wrote it."""
    vs = adopted_vs()
    vs["spec"]["http"].append({"name": "delegated", "delegate": {"name": "reviews-more", "namespace": NS}})
    emu.put(vs, manager="kubectl-create")
    before = others(emu.get("virtualservices", NS, "reviews-routes"))
    doc = doc_for(workload=False, status={"phase": "Promoted", "weight": 100,
                                          "stable": {"version": "v1", "image": "example.com/reviews:v1"}})
    doc["spec"]["service"]["virtualServiceRef"]["route"] = route
    env = Env(tmp_path, emu, [doc])
    reports = [env.tick() for _ in range(3)]
    assert any(why in (r.release_errors.get("bookinfo/reviews") or "") for r in reports), \
        [r.release_errors for r in reports]
    after = emu.get("virtualservices", NS, "reviews-routes")
    assert others(after) == before and [r.get("route") for r in after["spec"]["http"]] == \
        [r.get("route") for r in vs["spec"]["http"]]
