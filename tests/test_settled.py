"""A pass does not look again at a release it found at rest while nothing it depends
on changed (controller.Settled): its blob, the repo's other files, its live objects'
resourceVersions. Each test changes one of those and checks the release is looked at
again and acted on, while the others stay settled."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from reconciler.adapters.cluster import Cluster, KubernetesTarget
from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from reconciler.core.diff import ObjRef
from tests.support.gitserver import clone_work, human_edit, make_bare
from tests.support.specs import at_rest, dump

NAMES = ("alpha", "beta", "gamma")


class World:
    def __init__(self, tmp, emu):
        files = {f"releases/bookinfo/{n}.yaml": dump(at_rest(n)) for n in NAMES}
        files["sluice.yaml"] = "apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"
        self.bare = make_bare(tmp, seed=files)
        self.human = clone_work(str(self.bare), tmp / "human")
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
        self.emu = emu
        self.cluster = Cluster(emu.api_client())
        self.ctl = Controller(GitRepo(str(self.bare), tmp / "clone"), KubernetesTarget(self.cluster),
                              clock=lambda: self.now)
        self.ctl.full_every = 0   # every pass a full one: what this file tests (test_focused.py: the others)

    def run(self):
        self.now += timedelta(seconds=30)
        report = self.ctl.run_pass()
        assert report.error is None, report.error
        return report

    def settle(self):
        """Apply, let the pods come up, and pass until every release is at rest."""
        self.run()
        self.emu.all_ready()
        for _ in range(3):
            report = self.run()
            if report.settled == len(NAMES):
                return report
        raise AssertionError(f"never settled: {report.settled}")


@pytest.fixture
def world(tmp_path, emu):
    w = World(tmp_path, emu)
    w.settle()
    return w


def test_a_settled_pass_writes_nothing_and_looks_at_nothing(world):
    world.emu.reset_counts()
    report = world.run()
    assert report.settled == 3
    assert world.emu.writes() == 0
    assert not report.pushed and report.applied.touched == set()
    assert {o.phase for o in report.outcomes.values()} == {"Promoted"}


def test_drift_on_a_settled_release_is_repaired(world):
    def scale(dep):
        dep["spec"]["replicas"] = 7
    world.emu.edit("deployments", "bookinfo", "beta-v1", scale)
    report = world.run()
    assert report.settled == 2
    assert "Deployment/beta-v1" in report.applied.drifted
    assert world.emu.get("deployments", "bookinfo", "beta-v1")["spec"]["replicas"] != 7


def test_a_deleted_object_of_a_settled_release_is_created_again(world):
    world.cluster.delete(ObjRef("networking.istio.io/v1", "VirtualService", "bookinfo", "gamma"))
    report = world.run()
    assert report.settled == 2 and report.applied.created == 1
    assert world.emu.get("virtualservices", "bookinfo", "gamma") is not None


def test_a_changed_release_file_starts_its_rollout(world):
    def retarget(w):
        path = w / "releases/bookinfo/alpha.yaml"
        path.write_text(path.read_text().replace("version: v1\n    image: example.com/alpha:v1",
                                                 "version: v2\n    image: example.com/alpha:v2", 1))
    human_edit(world.human, retarget, "alpha v2")
    report = world.run()
    assert report.settled == 2
    assert report.outcomes["bookinfo/alpha"].event.action == "start"
    assert world.emu.get("deployments", "bookinfo", "alpha-v2") is not None


def test_changed_settings_look_at_every_release_again(world):
    def instance(w):
        (w / "sluice.yaml").write_text("apiVersion: sluice.dev/v1alpha1\nkind: Settings\n# reviewed\n")
    human_edit(world.human, instance, "settings")
    report = world.run()
    assert report.settled == 0
    assert world.run().settled == 3   # and at rest again after that look


@pytest.mark.parametrize("name", ["app.yaml", "app.properties"])
def test_a_changed_config_file_of_a_settled_release_rolls_out(tmp_path, emu, name):
    """A config file is part of the revision (invariant 10), whatever its name ends with
    (a .yaml one sits where release files do, under releases/)."""
    w = World(tmp_path, emu)
    doc = at_rest("alpha")
    doc["spec"]["config"] = {"files": [name], "mountPath": "/etc/alpha"}

    def add_config(work):
        (work / "releases/bookinfo/alpha.yaml").write_text(dump(doc))
        (work / f"releases/bookinfo/alpha/{name}").parent.mkdir(parents=True, exist_ok=True)
        (work / f"releases/bookinfo/alpha/{name}").write_text("mode: fast\n")
    human_edit(w.human, add_config, "alpha reads a config file")
    w.settle()

    def change(work):
        (work / f"releases/bookinfo/alpha/{name}").write_text("mode: slow\n")
    human_edit(w.human, change, "config change")
    report = w.run()
    assert report.outcomes["bookinfo/alpha"].event is not None
    assert report.outcomes["bookinfo/alpha"].event.action == "start"
