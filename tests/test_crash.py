"""Crash safety: SIGKILL ``sluice run`` at random moments during rollouts,
50 times, restarting it each time, while a human retargets now and then. In
the end the cluster's weights equal git's, no step is skipped or repeated,
no step commit is duplicated, and no human commit is lost."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from reconciler.adapters.cluster import Cluster, KubernetesTarget
from reconciler.adapters.gitrepo import GitRepo
from reconciler.controller import Controller
from reconciler.core.messages import parse_commit
from tests.support.gitserver import clone_work, human_edit, make_bare, run
from tests.support.kube_emulator import Emulator, kubeconfig
from tests.support.specs import dump, release_doc

REPO = pathlib.Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("SLUICE_CRASH_KILLS", "50"))
NAMES = ("reviews", "ratings")


def spec(name):
    doc = release_doc(name=name, status={"phase": "Promoted", "weight": 100,
                                         "stable": {"version": "v1", "image": f"example.com/{name}:v1"}})
    doc["spec"]["analysis"] = {"metrics": []}
    doc["spec"]["strategy"]["canary"] = {"steps": [10, 20, 30, 40, 50, 60, 70, 80, 90], "interval": "1s"}
    doc["spec"]["scaleDownDelay"] = "1s"
    return doc


@pytest.mark.timeout(600)
def test_sigkill_during_rollouts(tmp_path):
    rng = random.Random(1234)
    bare = make_bare(tmp_path, seed={f"releases/bookinfo/{n}.yaml": dump(spec(n)) for n in NAMES})
    human = clone_work(str(bare), tmp_path / "human")
    humans = []
    with Emulator() as emu:
        cfg = kubeconfig(tmp_path / "kubeconfig", emu.url)
        stop = threading.Event()

        def pods_come_up():   # the kubelet's part
            while not stop.is_set():
                try:
                    emu.all_ready()
                except KeyError:
                    pass
                time.sleep(0.1)
        kubelet = threading.Thread(target=pods_come_up, daemon=True)
        kubelet.start()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "reconciler.cli.main", "run", "--repo", str(bare), "--target", "kubernetes",
               "--kubeconfig", str(cfg), "--interval", "1s", "--no-watch", "--listen", "127.0.0.1:0",
               "--workdir", str(tmp_path / "work")]
        version = 2   # the seed's target; retargets go to v3, v4, ...
        for i in range(KILLS):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            if i % 10 == 5:   # a human retargets one release mid-flight
                version += 1
                name = NAMES[i % 2]

                def retarget(w, name=name, v=version):
                    p = w / f"releases/bookinfo/{name}.yaml"
                    text = p.read_text()
                    old = text.split("target:\n    version: ")[1].split("\n")[0]
                    p.write_text(text.replace(f"target:\n    version: {old}\n    image: example.com/{name}:{old}",
                                              f"target:\n    version: v{v}\n    image: example.com/{name}:v{v}"))
                humans.append(human_edit(human, retarget, f"{name}: target v{version}"))
        # let it converge: a controller that is not killed, until nothing changes
        ctl = Controller(GitRepo(str(bare), tmp_path / "work"), KubernetesTarget(Cluster(emu.api_client())))
        for _ in range(120):
            report = ctl.run_pass()
            if not report.commits and all(o.phase == "Promoted" for o in report.outcomes.values()):
                statuses = [yaml.safe_load(run("show", f"main:releases/bookinfo/{n}.yaml", cwd=bare))["status"]
                            for n in NAMES]
                if all("retiring" not in s for s in statuses):
                    break
            time.sleep(0.5)
        stop.set()
        kubelet.join(5)
        tip = run("rev-parse", "main", cwd=bare).strip()
        for sha in humans:                       # no human commit lost
            run("merge-base", "--is-ancestor", sha, tip, cwd=bare)
        for name in NAMES:
            status = yaml.safe_load(run("show", f"main:releases/bookinfo/{name}.yaml", cwd=bare))["status"]
            vs = emu.get("virtualservices", "bookinfo", name)
            weights = {d["destination"]["subset"]: d["weight"] for d in vs["spec"]["http"][-1]["route"]}
            assert weights == {status["stable"]["version"]: 100}, (name, weights, status)   # cluster == git
        # every step exactly once and in order, per version
        log = run("log", "--reverse", "--format=%H%x1f%B%x1e", "main", cwd=bare)
        steps: dict[tuple, list[int]] = {}
        for chunk in filter(str.strip, log.split("\x1e")):
            sha, msg = chunk.strip().split("\x1f", 1)
            parsed = parse_commit(msg)
            if parsed and parsed.action == "advance":
                key = (parsed.release, parsed.get("Sluice-Version"))
                steps.setdefault(key, []).append(int(parsed.get("Sluice-Step").split("/")[0]))
        assert steps, "no rollout step was ever committed"
        for key, seq in steps.items():
            assert seq == list(range(1, len(seq) + 1)), (key, seq)   # none skipped, none repeated


ROLLBACK_KILLS = int(os.environ.get("SLUICE_CRASH_ROLLBACK_KILLS", "6"))


@pytest.mark.timeout(600)
def test_sigkill_between_an_urgent_rollback_and_its_commit(tmp_path):
    """Bad canaries judged on a real Prometheus are rolled back; ``sluice run`` is
    killed just after the rollback reached the API server and before its (slowed)
    push landed. Traffic never returns to a rolled-back version, no step is skipped
    or repeated, and git and the cluster agree once the controller is back."""
    from datetime import datetime, timezone

    from reconciler.core.observed import ROLLBACK_ANNOTATION
    from tests.support import prometheus as promsupport

    rng = random.Random(99)
    now = int(datetime.now(timezone.utc).timestamp())
    history = promsupport.History()
    history.traffic("reviews-v1", now - 900, now + 900, rps=20, p99_ms=100)
    versions = [f"v{i}" for i in range(2, 2 + ROLLBACK_KILLS)]
    for v in versions:   # every new version answers half its requests with 503
        history.traffic(f"reviews-{v}", now - 900, now + 900, rps=20, error_ratio=0.5, p99_ms=100)
    doc = spec("reviews")
    doc["spec"]["analysis"] = {"metrics": [{"name": "request-success-rate", "min": 99, "interval": "1m"}]}
    doc["spec"]["strategy"]["canary"] = {"steps": [10, 20, 50], "interval": "1s", "maxFailedChecks": 1}
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(doc)})
    hook = bare / "hooks" / "pre-receive"   # every push takes a while: the window to kill in
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 1.5\n")
    hook.chmod(0o755)
    human = clone_work(str(bare), tmp_path / "human")

    def status():
        return yaml.safe_load(run("show", "main:releases/bookinfo/reviews.yaml", cwd=bare))["status"]

    with promsupport.start(history) as prom_url, Emulator() as emu:
        cfg = kubeconfig(tmp_path / "kubeconfig", emu.url)
        stop = threading.Event()
        rolled_back: set[str] = set()
        violations: list[tuple] = []

        def watch():   # the kubelet's part, and an eye on what the mesh routes
            while not stop.is_set():
                try:
                    emu.all_ready()
                    vs = emu.get("virtualservices", "bookinfo", "reviews")
                except KeyError:
                    vs = None
                if vs:
                    mark = (vs["metadata"].get("annotations") or {}).get(ROLLBACK_ANNOTATION)
                    weights = {d["destination"]["subset"]: d.get("weight", 100) for d in vs["spec"]["http"][-1]["route"]}
                    for v in list(rolled_back):
                        if weights.get(v, 0) > 0:
                            violations.append((v, weights))
                    if mark:
                        rolled_back.add(yaml.safe_load(mark)["version"])
                time.sleep(0.02)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "reconciler.cli.main", "run", "--repo", str(bare), "--target", "kubernetes",
               "--kubeconfig", str(cfg), "--interval", "1s", "--no-watch", "--listen", "127.0.0.1:0",
               "--workdir", str(tmp_path / "work"), "--prometheus", prom_url]
        previous = "v2"
        kills = 0
        for version in versions:
            if version != "v2":
                def retarget(w, old=previous, new=version):
                    p = w / "releases/bookinfo/reviews.yaml"
                    p.write_text(p.read_text().replace(f"version: {old}\n    image: example.com/reviews:{old}",
                                                       f"version: {new}\n    image: example.com/reviews:{new}"))
                human_edit(human, retarget, f"reviews {version}")
            previous = version
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                end = time.monotonic() + 60
                while version not in rolled_back and time.monotonic() < end:
                    time.sleep(0.01)
                assert version in rolled_back, f"{version} was never rolled back"
                time.sleep(rng.uniform(0, 0.8))   # inside the 1.5 s push
                if status().get("phase") not in ("RolledBack", "Failed"):
                    kills += 1
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            finally:
                if proc.poll() is None:
                    proc.kill()
            # back up: the rollback's commit lands, and nothing moves forward for the bad version
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                end = time.monotonic() + 60
                while time.monotonic() < end and not (
                        status().get("phase") == "RolledBack" and status()["rolledBack"]["version"] == version):
                    time.sleep(0.1)
                assert status()["rolledBack"]["version"] == version, status()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        ctl = Controller(GitRepo(str(bare), tmp_path / "work"), KubernetesTarget(Cluster(emu.api_client())))
        ctl.run_pass()
        stop.set()
        watcher.join(5)
        assert kills >= 1, "no kill landed inside the window"
        assert violations == [], violations[:5]
        vs = emu.get("virtualservices", "bookinfo", "reviews")
        assert {d["destination"]["subset"]: d.get("weight", 100) for d in vs["spec"]["http"][-1]["route"]} == {"v1": 100}
        assert ROLLBACK_ANNOTATION not in (vs["metadata"].get("annotations") or {})
        log = run("log", "--reverse", "--format=%H%x1f%B%x1e", "main", cwd=bare)
        seen: dict[str, list] = {}
        for chunk in filter(str.strip, log.split("\x1e")):
            parsed = parse_commit(chunk.strip().split("\x1f", 1)[1])
            if parsed and parsed.release == "bookinfo/reviews":
                seen.setdefault(parsed.get("Sluice-Version"), []).append(parsed.action)
        for version in versions:
            actions = seen[version]
            assert actions.count("rollback") == 1 and actions.count("advance") == 1, (version, actions)
            assert "promote" not in actions
