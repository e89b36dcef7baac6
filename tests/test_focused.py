"""A pass on a new commit looks only at the releases the commit changed (Controller._focus):
it lists only their namespaces, applies and prunes only them, and leaves every other release
to the next full pass (a poll: the tip did not move), which still finds drift everywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from reconciler.adapters.cluster import Cluster, KubernetesTarget
from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from tests.support.gitserver import clone_work, human_edit, make_bare
from tests.support.specs import at_rest, dump

RELEASES = {"team-a/alpha": "team-a", "team-a/beta": "team-a", "team-b/gamma": "team-b"}


def doc_of(key: str) -> dict:
    ns, _, name = key.partition("/")
    return at_rest(name, ns)


class World:
    def __init__(self, tmp, emu):
        files = {f"releases/{k}.yaml": dump(doc_of(k)) for k in RELEASES}
        files["sluice.yaml"] = "apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"
        self.bare = make_bare(tmp, seed=files)
        self.human = clone_work(str(self.bare), tmp / "human")
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
        self.emu = emu
        self.ctl = Controller(GitRepo(str(self.bare), tmp / "clone"), KubernetesTarget(Cluster(emu.api_client())),
                              clock=lambda: self.now)
        self.ctl.full_every = 300

    def run(self, seconds: float = 10):
        self.now += timedelta(seconds=seconds)
        report = self.ctl.run_pass()
        assert report.error is None, report.error
        return report

    def edit(self, key: str, fn, message: str) -> None:
        def change(work):
            path = work / f"releases/{key}.yaml"
            path.write_text(fn(path.read_text()))
        human_edit(self.human, change, message)

    def lists(self) -> set[str]:
        return {ns for (verb, _, ns), n in self.emu.counts.items() if verb == "list" and n}


@pytest.fixture
def world(tmp_path, emu):
    w = World(tmp_path, emu)
    w.run()
    emu.all_ready()
    for _ in range(3):
        if w.run().settled == len(RELEASES):
            return w
    raise AssertionError("never settled")


def retarget(text: str) -> str:
    return text.replace("version: v1\n    image: example.com/gamma:v1", "version: v2\n    image: example.com/gamma:v2", 1)


def test_a_commit_changing_one_release_lists_its_namespace_only(world):
    world.edit("team-b/gamma", retarget, "gamma v2")
    world.emu.reset_counts()
    report = world.run()
    assert report.focused == 1
    assert world.lists() == {"team-b"}
    assert report.outcomes["team-b/gamma"].event.action == "start"
    assert world.emu.get("deployments", "team-b", "gamma-v2") is not None
    # the others are reported as they were, not looked at, not pruned
    assert {k: o.phase for k, o in report.outcomes.items()} == {
        "team-a/alpha": "Promoted", "team-a/beta": "Promoted", "team-b/gamma": "Progressing"}
    assert world.emu.get("deployments", "team-a", "alpha-v1") is not None


def test_drift_elsewhere_waits_for_the_next_full_pass(world):
    def scale(dep):
        dep["spec"]["replicas"] = 9
    world.emu.edit("deployments", "team-a", "alpha-v1", scale)
    world.edit("team-b/gamma", retarget, "gamma v2")
    focused = world.run()
    assert focused.focused == 1 and focused.applied.drifted == []
    # gamma's rollout keeps it due, so the passes that follow look at gamma; within --interval
    # (full_every) of the last full pass comes a full one, which repairs the drift
    full = world.run(world.ctl.full_every)
    assert full.focused is None
    assert "Deployment/alpha-v1" in full.applied.drifted
    assert world.emu.get("deployments", "team-a", "alpha-v1")["spec"]["replicas"] != 9


def test_a_removed_release_is_pruned_by_the_focused_pass(world):
    human_edit(world.human, lambda work: (work / "releases/team-a/beta.yaml").unlink(), "retire beta")
    report = world.run()
    assert report.focused == 1
    assert world.emu.get("deployments", "team-a", "beta-v1") is None
    assert world.emu.get("virtualservices", "team-a", "beta") is None
    assert world.emu.get("deployments", "team-a", "alpha-v1") is not None


def test_a_full_pass_when_the_last_one_is_old_or_settings_changed(world):
    world.now += timedelta(seconds=world.ctl.full_every)
    world.edit("team-b/gamma", retarget, "gamma v2")
    assert world.run(0).focused is None   # the last full pass is full_every old
    def settings(work):
        (work / "sluice.yaml").write_text("apiVersion: sluice.dev/v1alpha1\nkind: Settings\n# reviewed\n")
    human_edit(world.human, settings, "settings")
    assert world.run().focused is None


def test_due_releases_are_looked_at_with_what_a_commit_changed(world):
    world.edit("team-b/gamma", retarget, "gamma v2")
    assert world.run().focused == 1   # gamma starts: it is due again soon (its pods, its first step)
    world.emu.all_ready()
    world.edit("team-a/alpha", lambda t: t.replace("replicas: 2", "replicas: 3", 1), "alpha replicas")
    report = world.run(60)
    assert report.focused == 2   # alpha (changed) and gamma (due)
    assert report.outcomes["team-b/gamma"].weight > 0 and report.outcomes["team-b/gamma"].event is not None
    world.emu.reset_counts()
    report = world.run(120)   # no commit: gamma due again, the others not looked at
    assert report.focused == 1 and world.lists() == {"team-b"}


def test_a_poll_with_nothing_due_is_a_full_pass(world):
    world.edit("team-a/alpha", lambda t: t.replace("replicas: 2", "replicas: 3", 1), "alpha replicas")
    assert world.run().focused == 1
    world.emu.all_ready()
    world.run()   # alpha's new size settles
    report = world.run()
    assert report.focused is None and report.settled == len(RELEASES)


def test_a_changed_config_file_is_a_change_of_its_release(tmp_path, emu):
    """spec.config.files are part of the release (a .yaml one sits under releases/ too)."""
    w = World(tmp_path, emu)
    doc = doc_of("team-a/alpha")
    doc["spec"]["config"] = {"files": ["app.yaml"], "mountPath": "/etc/alpha"}

    def add(work):
        (work / "releases/team-a/alpha.yaml").write_text(dump(doc))
        (work / "releases/team-a/alpha").mkdir(parents=True, exist_ok=True)
        (work / "releases/team-a/alpha/app.yaml").write_text("mode: fast\n")
    human_edit(w.human, add, "alpha reads a config file")
    w.run()
    emu.all_ready()
    for _ in range(3):
        w.run()
    human_edit(w.human, lambda work: (work / "releases/team-a/alpha/app.yaml").write_text("mode: slow\n"), "config")
    report = w.run()
    assert report.focused == 1
    assert report.outcomes["team-a/alpha"].event is not None
    assert report.outcomes["team-a/alpha"].event.action == "start"


def alpha_replicas(n: int):
    return lambda t: t.replace(f"replicas: {n}", f"replicas: {n + 1}", 1)


def test_a_clock_stepped_back_still_gets_a_full_pass(world):
    """Times are the controller's clock: after a step back (NTP), the last full pass is not
    'recent' for an hour - the next commit pass is a full one, which repairs drift."""
    world.now -= timedelta(hours=1)

    def scale(dep):
        dep["spec"]["replicas"] = 9
    world.emu.edit("deployments", "team-a", "alpha-v1", scale)
    world.edit("team-a/beta", alpha_replicas(2), "beta 3")
    report = world.run()
    assert report.focused is None and "Deployment/alpha-v1" in report.applied.drifted


def test_after_invalid_settings_the_next_commit_pass_is_full(world):
    good = (world.human / "sluice.yaml").read_text()
    human_edit(world.human, lambda w: (w / "sluice.yaml").write_text("apiVersion: [\n"), "break settings")
    assert world.run().outcomes == {}   # everything held
    human_edit(world.human, lambda w: (w / "sluice.yaml").write_text(good), "fix settings")
    report = world.run()
    assert report.focused is None and set(report.outcomes) == set(RELEASES)


def test_a_release_held_while_deciding_stays_reported_through_focused_passes(world):
    world.emu.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "delta", "namespace": "team-c"},
                   "spec": {"ports": [{"port": 80}]}})
    human_edit(world.human, lambda w: (w / "releases/team-c").mkdir() or (w / "releases/team-c/delta.yaml").write_text(
        dump(doc_of("team-c/delta"))), "add delta")
    world.run()
    full = world.run()
    held = [str(p) for p in full.problems if p.release == "team-c/delta"]
    assert held and "not Sluice's" in held[0]
    world.edit("team-a/alpha", alpha_replicas(2), "alpha 3")
    focused = world.run()
    assert focused.focused == 1
    assert [str(p) for p in focused.problems if p.release == "team-c/delta"] == held


def test_a_hold_that_commits_nothing_still_asks_for_its_recheck(tmp_path, emu):
    """The next weight's pods are still starting when the step is due: decide holds
    (nothing to commit) and asks for a recheck in seconds; the pass must schedule it,
    not the next interval (found by review: a focused pass looks only at what is due)."""
    w = World(tmp_path, emu)
    doc = doc_of("team-b/gamma")
    doc["spec"]["replicas"] = 10
    doc["spec"]["strategy"] = {"canary": {"steps": [10, 20, 50], "interval": "2m"}}
    human_edit(w.human, lambda work: (work / "releases/team-b/gamma.yaml").write_text(dump(doc)), "gamma 10 pods")
    w.run()
    emu.all_ready()
    w.run()
    w.edit("team-b/gamma", retarget, "gamma v2")
    w.run()
    emu.all_ready()
    advanced = w.run()
    assert advanced.outcomes["team-b/gamma"].weight == 10, advanced.outcomes["team-b/gamma"]
    w.run(5)   # sizes the new version for the next weight (20%: 2 pods)

    def one_of_two(dep):
        n = dep["spec"].get("replicas", 1)
        dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": n,
                         "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    emu.edit("deployments", "team-b", "gamma-v2", one_of_two, manager="kube-controller-manager")
    held = w.run(120)   # the step is due; its pods are not all ready
    assert held.outcomes["team-b/gamma"].weight == 10 and held.outcomes["team-b/gamma"].event is None
    assert held.next_pass_in is not None and held.next_pass_in <= 10, held.next_pass_in


def test_a_quiet_repo_is_still_looked_at_in_full_within_full_every(world):
    """Nothing due: the pass still schedules the next full pass (drift within --interval)."""
    report = world.run()
    assert report.next_pass_in is not None and 0 < report.next_pass_in <= world.ctl.full_every


def test_a_release_error_carried_through_focused_passes_is_counted_once_per_failure(tmp_path, emu):
    """A release whose adopted VirtualService is missing fails every time it is looked at;
    focused passes that do not look at it report its error (notifications stay quiet) but
    sluice_release_errors_total counts only the passes that failed."""
    from reconciler.runtime import Metrics
    w = World(tmp_path, emu)
    doc = doc_of("team-b/gamma")
    doc["spec"]["service"].update({"virtualServiceRef": {"name": "gamma-routes", "route": "primary"}, "create": False})
    human_edit(w.human, lambda work: (work / "releases/team-b/gamma.yaml").write_text(dump(doc)), "adopt routes")
    metrics = Metrics()
    first = w.run()
    emu.all_ready()
    assert "team-b/gamma" in first.release_errors, first.release_errors
    metrics.observe_pass(first, 0.1)
    for n in range(2):
        w.edit("team-a/alpha", lambda t, n=n: t.replace(f"replicas: {2 + n}", f"replicas: {3 + n}", 1), f"alpha {n}")
        report = w.run()
        assert report.focused   # alpha (and whatever is due), not gamma
        assert "team-b/gamma" in report.release_errors and "team-b/gamma" in report.carried
        metrics.observe_pass(report, 0.1)
    counted = sum(s.value for m in metrics.registry.collect() if m.name == "sluice_release_errors"
                  for s in m.samples if s.name.endswith("_total") and s.labels.get("release") == "team-b/gamma")
    assert counted == 1
