"""While a step's routing is not live (its applier has not applied the step's
commit), the canary is still judged at the weight that is, at that weight's
cadence: a metric out of bounds rolls it back, a pass never advances it, a
hotfix (skipAnalysis) is never judged, and a step's own long pause does not
slow the guard. The controller runs on the git target against the API
emulator, with an Argo CD Application whose status the test sets, and a real
`web` metric provider on loopback."""

from datetime import timedelta

import pytest
import yaml

from reconciler.adapters.applier import ApplierRef, Appliers
from reconciler.adapters.cluster import Cluster
from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.controller import Controller
from tests.support.drive import T0
from tests.support.gitserver import make_bare, run
from tests.support.specs import dump, release_doc
from tests.support.webserver import Server

pytestmark = pytest.mark.timeout(120)
ARGO = ApplierRef("argocd", "argocd", "shop")


def spec(steps, **kw):
    doc = release_doc(status={"phase": "Promoted", "weight": 100,
                              "stable": {"version": "v1", "image": "example.com/reviews:v1"}}, **kw)
    doc["spec"]["strategy"]["canary"].update(steps=steps, interval="1m", maxFailedChecks=2)
    doc["spec"]["analysis"] = {"metrics": [{"name": "success", "provider": "health", "min": 99}]}
    return doc


class World:
    def __init__(self, tmp, emu, server, doc):
        settings = (f"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nproviders:\n  health:\n    type: web\n"
                    f"    url: {server.url}/rate\n    jsonPath: $.value\n")
        self.server, self.emu, self.now = server, emu, T0
        self.set_rate(100)
        self.bare = make_bare(tmp, seed={"releases/bookinfo/reviews.yaml": dump(doc), "sluice.yaml": settings})
        repo = GitRepo(str(self.bare), tmp / "clone")
        self.target = GitTarget(Cluster(emu.api_client(), sleep=lambda s: None), repo=repo,
                                appliers=Appliers(ARGO, deadline=300))
        self.target.read_readiness = False   # readiness is not what these tests are about
        self.ctl = Controller(repo, self.target, clock=lambda: self.now)
        self.argo(None)

    def set_rate(self, value):
        self.server.answer("/rate", {"value": value})

    def argo(self, revision):
        sync = {"status": "Synced", "revision": revision} if revision else {"status": "OutOfSync"}
        obj = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "shop", "namespace": "argocd"}, "spec": {"project": "default"},
               "status": {"sync": sync, "health": {"status": "Healthy"}}}
        if self.emu.get("applications", "argocd", "shop") is None:
            self.emu.put(obj)
        else:
            self.emu.edit("applications", "argocd", "shop", lambda o: o.update(status=obj["status"]))

    def applied_now(self):
        self.argo(run("rev-parse", "main", cwd=self.bare).strip())

    def tick(self, seconds=61):
        self.now += timedelta(seconds=seconds)
        return self.ctl.run_pass()

    def status(self):
        return yaml.safe_load(run("show", "main:releases/bookinfo/reviews.yaml", cwd=self.bare))["status"]

    def asked(self):
        return len([r for r in self.server.seen if r["path"].startswith("/rate")])

    def to_step(self, step):
        """Walk the rollout to ``step`` committed, the applier applying each commit at once."""
        for _ in range(10):
            if self.status().get("step", 0) >= step:
                return
            self.applied_now()
            self.tick()
        raise AssertionError(self.status())


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_a_canary_going_bad_while_the_applier_is_stuck_is_rolled_back(tmp_path, emu, server):
    w = World(tmp_path, emu, server, spec([10, 20, 50]))
    w.to_step(2)                                    # 20% committed; the applier stays at the 10% commit
    w.set_rate(50)                                  # the canary, at the 10% still live, goes bad
    w.tick()
    assert w.status()["failedChecks"] == 1 and w.status()["step"] == 2
    w.tick()
    st = w.status()
    assert st["phase"] == "RolledBack" and st["weight"] == 0, st
    assert "not applied yet" in st["rolledBack"]["reason"]


def test_a_guard_pass_never_advances_and_nothing_is_judged_at_step_one(tmp_path, emu, server):
    w = World(tmp_path, emu, server, spec([10, 20, 50]))
    w.tick()                                        # start: 0%
    w.applied_now()
    w.tick()                                        # step 1 (10%) committed; never applied
    before = w.asked()
    for _ in range(3):
        w.tick()
    assert w.asked() == before                      # the weight still live is 0%: nothing to judge
    w.applied_now()
    w.tick()                                        # live now: judged an interval later
    w.tick()
    assert w.status()["step"] == 2                  # 20% committed, not applied
    for _ in range(3):
        w.tick()                                    # guard checks at 10% pass ...
    assert w.status()["step"] == 2 and w.asked() > before   # ... and never advance the step


def test_the_guard_keeps_the_live_weights_cadence_not_the_next_steps_pause(tmp_path, emu, server):
    w = World(tmp_path, emu, server, spec([10, {"weight": 20, "pause": "2h"}, 50]))
    w.to_step(2)
    w.set_rate(50)
    w.tick()
    w.tick()
    assert w.status()["phase"] == "RolledBack"      # two minutes, not four hours


def test_a_hotfix_is_never_judged_while_its_step_is_not_live(tmp_path, emu, server):
    w = World(tmp_path, emu, server, spec([10, 20, 50], skipAnalysis=True))
    w.to_step(2)
    w.set_rate(50)
    before = w.asked()
    for _ in range(4):
        w.tick()
    assert w.asked() == before and w.status()["phase"] == "Progressing" and not w.status().get("failedChecks")
