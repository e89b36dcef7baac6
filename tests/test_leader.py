"""Leader election on a Lease against the emulator: one leader at a time; a
standby takes over within the lease duration when the leader dies, and at
once when it releases the lease on shutdown."""

import time

import pytest

from reconciler.adapters.leader import LeaderElector
from tests.support.kube_emulator import Emulator

pytestmark = pytest.mark.timeout(60)


def electors(emu, n=2, duration=2.0):
    out = []
    for i in range(n):
        e = LeaderElector(emu.api_client(), "sluice-system", "sluice", f"pod-{i}", lease_duration=duration, renew_every=0.2)
        e.start()
        out.append(e)
    return out


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_one_leader_and_takeover_when_it_dies():
    with Emulator() as emu:
        a, b = electors(emu)
        wait_for(lambda: a.is_leader() or b.is_leader(), 5)
        for _ in range(20):   # never two at once
            assert not (a.is_leader() and b.is_leader())
            time.sleep(0.05)
        leader, standby = (a, b) if a.is_leader() else (b, a)
        died = time.monotonic()
        leader.stop(release=False)          # killed: no release
        took = wait_for(standby.is_leader, 5)
        assert took - died <= 2.0 + 0.5      # within the lease duration (+ one renew period)
        assert not leader.is_leader()
        standby.stop()


def test_release_on_shutdown_hands_over_at_once():
    with Emulator() as emu:
        a, b = electors(emu, duration=10.0)
        wait_for(lambda: a.is_leader() or b.is_leader(), 5)
        leader, standby = (a, b) if a.is_leader() else (b, a)
        t0 = time.monotonic()
        leader.stop(release=True)
        wait_for(standby.is_leader, 3)
        assert time.monotonic() - t0 < 3      # far sooner than the 10 s lease
        standby.stop()


def test_two_controller_processes_only_the_leader_writes(tmp_path):
    import os
    import pathlib
    import signal
    import subprocess
    import sys
    from tests.support.gitserver import make_bare, run
    from tests.support.kube_emulator import kubeconfig
    from tests.support.specs import dump, release_doc
    repo = pathlib.Path(__file__).resolve().parents[1]
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["analysis"] = {"metrics": []}
    doc["spec"]["strategy"]["canary"] = {"steps": list(range(1, 100)), "interval": "1s"}
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(doc)})
    with Emulator() as emu:
        cfg = kubeconfig(tmp_path / "kc", emu.url)
        env = {**os.environ, "PYTHONPATH": str(repo)}

        def start(name):
            return subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli.main", "run", "--repo", str(bare), "--target", "kubernetes",
                 "--kubeconfig", str(cfg), "--interval", "1s", "--no-watch", "--listen", "127.0.0.1:0",
                 "--leader-election", "--lease-namespace", "sluice-system", "--lease-duration", "3s",
                 "--identity", name, "--author-name", name, "--workdir", str(tmp_path / name)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        procs = {"alpha": start("alpha"), "beta": start("beta")}
        try:
            def authors():
                return run("log", "--format=%an", "main", cwd=bare).split()

            end = time.monotonic() + 30
            while time.monotonic() < end:
                emu.all_ready()
                if len([a for a in authors() if a in procs]) >= 4:
                    break
                time.sleep(0.3)
            writers = {a for a in authors() if a in procs}
            assert len(writers) == 1, writers          # only the leader wrote
            leader = writers.pop()
            standby = ({"alpha", "beta"} - {leader}).pop()
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait(10)
            killed = time.monotonic()
            while time.monotonic() - killed < 15 and standby not in authors():
                emu.all_ready()
                time.sleep(0.2)
            took = time.monotonic() - killed
            assert standby in authors(), "the standby never took over"
            assert took < 3.0 + 2.0 + 1.5   # lease duration + one renew period + one pass
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    p.wait(30)
