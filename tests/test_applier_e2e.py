"""``sluice run --target git`` end to end with a GitOps applier between git and the
cluster: Sluice (the real CLI, a subprocess) follows a repo on a git daemon;
the test applier (tests/support/applier.py) fetches it and, with a lag,
applies ``rendered/`` to the API emulator and reports through an Argo CD
Application (first test) or a Flux Kustomization (second); a real Prometheus
scrapes traffic that follows the weights LIVE in the emulator, so a check
whose window opened before the applier applied the weight sees no canary
traffic (``onNoData: fail`` counts that as a failed check).

Shown for both appliers: no analysis window opens before the applier
applied the step's weight (each check's time and window against the moment
the applier applied it; not one failed check for a healthy canary), a stuck
applier holds the rollout with a message naming it, and a rollback (a
person's abort; a failing canary) happens while the applier is stuck. The
third test measures push -> applied -> next step with the nudge and without.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest
import yaml

from reconciler.core.messages import parse_commit
from tests.support.applier import LiveTraffic, ScrapingPrometheus, TestApplier
from tests.support.gitserver import clone_work, free_port, git_daemon, human_edit, make_bare, run
from tests.support.kube_emulator import Emulator, kubeconfig
from tests.support.specs import dump, release_doc

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)
INTERVAL = 3     # seconds from a step's routing being live to its check
LAG = 4          # the applier applies this long after it fetched a commit: longer than INTERVAL
POLL = 30        # the applier's own poll interval (Argo CD's default is 3m): only a nudge beats it
DEADLINE = 8     # --applier-deadline
FILE = "releases/bookinfo/reviews.yaml"
RENDERED = "rendered/bookinfo/reviews.yaml"


def spec(steps=(30, 60), interval=f"{INTERVAL}s"):
    doc = release_doc(status={"phase": "Promoted", "weight": 100,
                              "stable": {"version": "v1", "image": "example.com/reviews:v1"}})
    doc["spec"]["strategy"]["canary"].update(steps=list(steps), interval=interval, maxFailedChecks=2)
    doc["spec"]["analysis"] = {"metrics": [{"name": "request-success-rate", "min": 99}]}
    return doc


def wait(pred, timeout=60.0, every=0.2):
    """Bounded polling of a condition (git state a subprocess writes)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return pred()


def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class World:
    """The git daemon, the emulator, live traffic + Prometheus, the test applier and
    ``sluice run`` (a subprocess) wired together in ``tmp``."""

    def __init__(self, tmp: pathlib.Path, emu, kind: str, *, nudge: bool = True, lag: float = LAG,
                 poll: float = POLL, doc=None):
        self.tmp, self.emu, self.kind, self.nudge = tmp, emu, kind, nudge
        self.obj = ("argocd", "shop") if kind == "argocd" else ("flux-system", "shop")
        self.bare = make_bare(tmp, seed={FILE: dump(doc or spec())})
        self.pushes = tmp / "pushes.log"
        hook = self.bare / "hooks" / "post-receive"   # when each push landed, to the microsecond
        hook.write_text(f"#!/bin/sh\nwhile read old new ref; do echo \"$new $(date +%s.%N)\" >> {self.pushes}; done\n")
        hook.chmod(0o755)
        self.lag, self.poll = lag, poll

    def __enter__(self):
        self._daemon = git_daemon(self.tmp)
        base = self._daemon.__enter__()
        self.url = f"{base}/config.git"
        self.traffic = LiveTraffic(self.emu, "bookinfo", "reviews").__enter__()
        self.prom = ScrapingPrometheus(self.traffic.address, self.tmp).__enter__()
        self.applier = TestApplier(self.emu, self.url, self.kind, *self.obj, self.tmp, poll=self.poll, lag=self.lag,
                                   tick=0.05).__enter__()
        cfg = kubeconfig(self.tmp / "kubeconfig", self.emu.url)
        self.out, self.err = open(self.tmp / "sluice.out", "w+"), open(self.tmp / "sluice.err", "w+")
        env = {**os.environ, "PYTHONPATH": str(REPO), "SLUICE_WORKDIR": str(self.tmp / "work"),
               "SLUICE_INTERVAL": "1s", "SLUICE_APPLIER": self.kind,
               "SLUICE_APPLIER_OBJECT": "/".join(self.obj)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli.main", "run", "--repo", self.url, "--target", "git",
             "--kubeconfig", str(cfg), "--applier-deadline", f"{DEADLINE}s", "--prometheus", self.prom.url,
             "--listen", f"127.0.0.1:{free_port()}", "--applier-nudge" if self.nudge else "--no-applier-nudge"],
            env=env, stdout=self.out, stderr=self.err, text=True)
        self.human = clone_work(self.url, self.tmp / "human")
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.applier.stop()
        self.prom.__exit__()
        self.traffic.__exit__()
        self._daemon.__exit__(None, None, None)
        self.out.close()
        self.err.close()

    def log(self) -> str:
        return (self.tmp / "sluice.err").read_text()

    # --- git ------------------------------------------------------------------------
    def status(self, rev: str = "main") -> dict:
        return yaml.safe_load(run("show", f"{rev}:{FILE}", cwd=self.bare)).get("status") or {}

    def commits(self) -> list[tuple[str, dict, dict]]:
        """(sha, trailers, status) of Sluice's commits on main that changed the release, oldest first."""
        out = []
        for sha in run("log", "--reverse", "--format=%H", "--author=Sluice", "main", "--", FILE,
                       cwd=self.bare).split():
            parsed = parse_commit(run("show", "-s", "--format=%B", sha, cwd=self.bare))
            out.append((sha, {k: v[-1] for k, v in parsed.trailers.items()}, self.status(sha)))
        return out

    def pushed_at(self) -> dict[str, float]:
        if not self.pushes.exists():
            return {}
        return {sha: float(t) for sha, t in (line.split() for line in self.pushes.read_text().splitlines())}

    def applied_at(self, commit: str) -> float | None:
        """When the applier applied ``commit`` or a later commit, first."""
        times = [t for rev, t in self.applier.applied.items()
                 if subprocess.run(["git", "merge-base", "--is-ancestor", commit, rev], cwd=self.bare).returncode == 0]
        return min(times) if times else None

    def retarget(self, version: str) -> str:
        def edit(w):
            p = w / FILE
            p.write_text(p.read_text().replace("version: v2\n    image: example.com/reviews:v2",
                                               f"version: {version}\n    image: example.com/reviews:{version}"))
        return human_edit(self.human, edit, f"reviews {version}")

    def canary_weight(self, rev: str) -> int:
        """The canary's weight in the rendered VirtualService at ``rev`` (what the applier would apply)."""
        docs = yaml.safe_load_all(self.applier.read(rev, RENDERED) or "")
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "VirtualService":
                routes = doc["spec"]["http"][-1]["route"]
                return sum(r.get("weight", 0) for r in routes if r["destination"]["subset"] != "v2")
        return 0


def check_windows(w: World, weights=(30, 60)) -> list[dict]:
    """Each step's check ran no earlier than INTERVAL after the applier applied the
    step's commit, over a window that started no earlier than that; returns the
    numbers per step."""
    commits = w.commits()
    pushed = w.pushed_at()
    rows = []
    for weight in weights:
        step = next(sha for sha, t, st in commits if t.get("Sluice-Weight") == str(weight)
                    and t.get("Sluice-Action") != "hold" and st.get("step"))
        nxt, trailers, status = next((sha, t, st) for sha, t, st in commits
                                     if t.get("Sluice-Previous-Weight") == str(weight)
                                     and int(t.get("Sluice-Weight", 0)) > weight)
        applied = w.applied_at(step)
        assert applied is not None, f"the applier never applied the {weight}% step"
        check = status["lastAnalysis"]
        at = iso_epoch(check["at"])   # whole seconds, truncated
        assert at + 1 >= applied + INTERVAL, (weight, at, applied)
        for result in check["results"]:
            assert result["ok"], result
            window = float(str(result["window"]).rstrip("s"))
            assert at + 1 - window >= applied - 0.01, ("window opened before the weight was applied", weight, result)
        assert "Sluice-Applied-After" in trailers, trailers
        rows.append({"weight": weight, "push->applied": applied - pushed[step],
                     "applied->next step": pushed[nxt] - applied, "push->next step": pushed[nxt] - pushed[step],
                     "applied after (commit)": trailers["Sluice-Applied-After"]})
    for _, _, st in commits:
        assert not st.get("failedChecks"), st   # a healthy canary never collects a failed check
    return rows


def show(kind: str, nudge: bool, rows: list[dict]) -> None:
    for r in rows:
        print(f"{kind} nudge={'on' if nudge else 'off'} poll={POLL}s lag={LAG}s step {r['weight']}%: "
              f"push->applied {r['push->applied']:.2f}s, applied->next step {r['applied->next step']:.2f}s, "
              f"push->next step {r['push->next step']:.2f}s (commit says applied after {r['applied after (commit)']})")


def stuck_at_the_next_weight(version: str, weight: int):
    """Stuck on every revision whose rendered routing gives ``version`` ``weight``% or more."""
    def stuck(applier, rev):
        for doc in yaml.safe_load_all(applier.read(rev, RENDERED) or ""):
            if isinstance(doc, dict) and doc.get("kind") == "VirtualService":
                routes = doc["spec"]["http"][-1]["route"]
                return any(r["destination"]["subset"] == version and r.get("weight", 0) >= weight for r in routes)
        return False
    return stuck


def test_argocd_end_to_end(tmp_path, emu):
    with World(tmp_path, emu, "argocd") as w:
        assert wait(lambda: w.status().get("phase") == "Promoted" and w.status()["stable"]["version"] == "v2", 120), \
            w.log()[-3000:]
        rows = check_windows(w)
        show("argocd", True, rows)
        assert all(r["push->applied"] < POLL / 2 for r in rows)   # the nudge, not the poll

        # a stuck applier: v3 starts, its 30% step is never applied -> held with a message, no check
        w.applier.stuck = stuck_at_the_next_weight("v3", 30)
        w.retarget("v3")
        assert wait(lambda: w.status().get("canary", {}).get("version") == "v3" and w.status().get("weight") == 30,
                    90), w.log()[-3000:]
        step = run("rev-parse", "main", cwd=w.bare).strip()
        assert wait(lambda: w.status().get("heldBy") == "applier", DEADLINE + 30), w.status()
        held = w.status()
        assert held["phase"] == "Progressing" and held["weight"] == 30
        assert "argocd Application argocd/shop" in held["message"] and step[:7] in held["message"], held["message"]
        assert f"for more than {DEADLINE}s" in held["message"], held["message"]
        assert "lastAnalysis" not in held or held["lastAnalysis"]["at"] < held["stepStartedAt"]   # no window opened
        assert w.applier.applied.get(step) is None

        # a person aborts while the applier is still stuck: rolled back at once, it never waits for the applier
        t0 = time.monotonic()
        for _ in range(20):   # as a person would: pull, abort, push; again if Sluice pushed meanwhile
            run("pull", "-q", "--ff-only", cwd=w.human)
            out = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "abort", "bookinfo/reviews", "--repo",
                                  str(w.human), "--push"], env={**os.environ, "PYTHONPATH": str(REPO)},
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0:
                break
            run("reset", "-q", "--hard", "origin/main", cwd=w.human)
        assert out.returncode == 0, out.stderr
        assert wait(lambda: w.status().get("phase") == "Aborted", 30), w.status()
        print(f"argocd: abort -> Aborted in git {time.monotonic() - t0:.1f}s with the applier stuck")
        assert w.status()["weight"] == 0 and w.status()["stable"]["version"] == "v2"
        assert not w.applier.errors
    assert w.proc.returncode == 0, w.log()[-3000:]
    assert "analysis waits for argocd Application argocd/shop" in w.log()


def test_flux_end_to_end(tmp_path, emu):
    with World(tmp_path, emu, "flux") as w:
        assert wait(lambda: w.status().get("phase") == "Promoted" and w.status()["stable"]["version"] == "v2", 120), \
            w.log()[-3000:]
        rows = check_windows(w)
        show("flux", True, rows)
        assert all(r["push->applied"] < POLL / 2 for r in rows)
        requested = emu.get("kustomizations", "flux-system", "shop")["metadata"]["annotations"]
        assert "reconcile.fluxcd.io/requestedAt" in requested
        assert "reconcile.fluxcd.io/requestedAt" in \
            emu.get("gitrepositories", "flux-system", "shop-config")["metadata"]["annotations"]

        # v3 is bad; its 30% step is held while the applier is stuck ...
        w.traffic.errors["v3"] = 0.2   # 80% success, under the 99% minimum
        w.applier.stuck = stuck_at_the_next_weight("v3", 30)
        w.retarget("v3")
        assert wait(lambda: w.status().get("heldBy") == "applier", 90 + DEADLINE), w.status()
        held = w.status()
        assert held["weight"] == 30 and "flux Kustomization flux-system/shop" in held["message"], held
        # ... goes on once the applier catches up, and is rolled back on its failing checks,
        # with the applier stuck again right after applying 30%: the rollback never waits for it
        step = run("rev-parse", "main", cwd=w.bare).strip()
        w.applier.stuck = False
        assert w.applier.wait_for(lambda a: a.has_applied(step), 30)
        w.applier.stuck = True
        applied = w.applier.current
        assert wait(lambda: w.status().get("phase") in ("RolledBack", "Failed"), 60), w.status()
        rolled = w.status()
        assert rolled["weight"] == 0 and rolled["stable"]["version"] == "v2"
        assert w.applier.current == applied   # never applied: Sluice did not wait for it
        failed = [st["lastAnalysis"]["results"][0] for _, _, st in w.commits()
                  if st.get("canary", {}).get("version") == "v3" and st.get("lastAnalysis")
                  and st["lastAnalysis"]["at"] >= held["stepStartedAt"]]
        assert failed and all(r["outcome"] == "failed" and 75 < r["value"] < 85 for r in failed), failed
        assert not w.applier.errors
    assert w.proc.returncode == 0, w.log()[-3000:]


def test_the_nudge_shortens_the_wait(tmp_path):
    """push -> applied -> next step, with and without the nudge, beside the applier's poll interval."""
    poll, lag = 8.0, 0.5
    numbers: dict[bool, list[tuple[float, float, float]]] = {}
    for nudge in (True, False):
        tmp = tmp_path / ("nudge" if nudge else "poll")
        tmp.mkdir()
        with Emulator() as cluster, World(tmp, cluster, "argocd", nudge=nudge, lag=lag, poll=poll,
                                          doc=spec(steps=(30, 60), interval="2s")) as w:
            assert wait(lambda: w.status().get("phase") == "Promoted" and w.status()["stable"]["version"] == "v2",
                        120), w.log()[-3000:]
            commits = w.commits()
            pushed = w.pushed_at()
            numbers[nudge] = []
            for weight in ("30", "60"):
                step = next(sha for sha, t, st in commits if t.get("Sluice-Weight") == weight and st.get("step"))
                nxt = next(sha for sha, t, st in commits if t.get("Sluice-Previous-Weight") == weight)
                applied = w.applied_at(step)
                numbers[nudge].append((applied - pushed[step], pushed[nxt] - applied, pushed[nxt] - pushed[step]))
        for weight, (to_applied, to_next, total) in zip((30, 60), numbers[nudge]):
            print(f"nudge={'on' if nudge else 'off'} (applier poll {poll:.0f}s, lag {lag}s, step interval 2s) "
                  f"step {weight}%: push->applied {to_applied:.2f}s, applied->next step {to_next:.2f}s, "
                  f"push->next step {total:.2f}s")
    with_nudge, without = [n[0] for n in numbers[True]], [n[0] for n in numbers[False]]
    assert max(with_nudge) < lag + 2.0              # seconds, not the poll interval
    assert max(with_nudge) < max(without)           # without it, a step waits for the applier's next poll
