"""A config repo on a real bare git remote, a person's clone of it, and a
controller on the kubernetes target against the API emulator, with a
simulated clock: the setting of the cluster-target tests."""

from __future__ import annotations

from datetime import timedelta

import yaml

from reconciler.adapters.cluster import Cluster, KubernetesTarget
from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from tests.support.drive import T0
from tests.support.gitserver import clone_work, human_edit, make_bare, run
from tests.support.specs import dump, release_doc


def promoted(name="reviews", status=None, **kw):
    """A release whose v1 serves 100% (unless ``status`` says otherwise), target v2, no metrics."""
    stable = {"version": "v1", "image": f"example.com/{name}:v1"}
    doc = release_doc(name=name, status=status if status is not None else
                      {"phase": "Promoted", "stable": stable, "weight": 100}, **kw)
    doc["spec"]["analysis"] = {"metrics": []}
    return doc


class Env:
    def __init__(self, tmp, emu, docs, extra=None, *, instance="sluice"):
        files = {f"releases/{d['metadata']['namespace']}/{d['metadata']['name']}.yaml": dump(d) for d in docs}
        files.update(extra or {})
        self.tmp, self.emu, self.now, self.instance = tmp, emu, T0, instance
        self.bare = make_bare(tmp, seed=files)
        self.human = clone_work(str(self.bare), tmp / "human")
        self.restart()

    def restart(self):
        """A new controller process: nothing kept in memory but its clone on disk."""
        self.target = KubernetesTarget(Cluster(self.emu.api_client(), sleep=lambda s: None), instance=self.instance)
        self.ctl = Controller(GitRepo(str(self.bare), self.tmp / "clone"), self.target, clock=lambda: self.now)

    def tick(self, seconds=61, ready=True):
        self.now += timedelta(seconds=seconds)
        report = self.ctl.run_pass()
        if ready:
            self.emu.all_ready()
        return report

    def weights(self, name="reviews", ns="bookinfo"):
        vs = self.emu.get("virtualservices", ns, name)
        return {d["destination"]["subset"]: d["weight"] for d in vs["spec"]["http"][-1]["route"]}

    def status(self, name="reviews", ns="bookinfo"):
        return yaml.safe_load(run("show", f"main:releases/{ns}/{name}.yaml", cwd=self.bare)).get("status") or {}

    def subjects(self):
        return run("log", "--format=%s", "main", cwd=self.bare).splitlines()

    def edit(self, name, fn, message, ns="bookinfo"):
        """A person edits a release file and pushes."""
        def change(w):
            p = w / f"releases/{ns}/{name}.yaml"
            p.write_text(fn(p.read_text()))
        return human_edit(self.human, change, message)

    def retarget(self, name, old, new, ns="bookinfo"):
        self.edit(name, lambda t: t.replace(f"version: {old}\n    image: example.com/{name}:{old}",
                                            f"version: {new}\n    image: example.com/{name}:{new}"), f"{name} {new}", ns)

    def block_pushes(self, on=True):
        """The remote refuses every push (a pre-receive hook) until turned off."""
        hook = self.bare / "hooks" / "pre-receive"
        if on:
            hook.write_text("#!/bin/sh\necho 'remote is read-only' >&2\nexit 1\n")
            hook.chmod(0o755)
        else:
            hook.unlink()
