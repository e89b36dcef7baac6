"""A config repo on a real bare git remote, a person's clone of it, and a
controller on the rendered-manifests (git) target with a simulated clock."""

from __future__ import annotations

from datetime import timedelta

from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from tests.support.drive import T0
from tests.support.gitserver import clone_work, make_bare, run


class GitEnv:
    def __init__(self, tmp, files):
        self.bare = make_bare(tmp, seed=files)
        self.now = T0
        self.ctl = Controller(GitRepo(str(self.bare), tmp / "clone"), GitTarget(), clock=lambda: self.now)
        self.human = clone_work(str(self.bare), tmp / "human")

    def tick(self, seconds=61):
        self.now += timedelta(seconds=seconds)
        return self.ctl.run_pass()

    def show(self, path):
        return run("show", f"main:{path}", cwd=self.bare)

    def subjects(self):
        return run("log", "--format=%s", "main", cwd=self.bare).splitlines()

    def sync(self):
        """The person's clone catches up with the remote (what the controller pushed)."""
        run("fetch", "-q", "origin", cwd=self.human)
        run("reset", "-q", "--hard", "origin/main", cwd=self.human)
