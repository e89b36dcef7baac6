"""Shards across replicas (``sluice run --shards N``): the pure assignment
(reconciler.core.shards), the Leases against the emulator, and several real
``sluice run`` processes: every release handled by one replica at a time, a
killed replica's releases moving within the lease duration, a new replica
taking its share without a gap."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from reconciler.adapters.shards import Sharder, read_owners
from reconciler.core import shards
from reconciler.core.messages import parse_commit
from reconciler.core.shards import Holding, plan, shard_of, target_count
from tests.support.kube_emulator import Emulator

pytestmark = pytest.mark.timeout(120)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def all_ready(emu):
    """Every Deployment ready (the emulator runs no pods); one deleted meanwhile is skipped."""
    for _, ns, name in emu.objects("deployments"):
        try:
            emu.set_ready(ns, name, True)
        except KeyError:
            pass


def wait_for(pred, timeout, what="condition", every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- the pure core ------------------------------------------------------------------------------
def test_shard_of_is_the_same_in_every_process():
    keys = [f"ns{i % 7}/release-{i}" for i in range(200)]
    here = [shard_of(k, 13) for k in keys]
    code = ("import json,sys; from reconciler.core.shards import shard_of; "
            "print(json.dumps([shard_of(k, 13) for k in json.loads(sys.argv[1])]))")
    for seed in ("1", "2"):   # salted str hashes differ per process: the shard must not
        out = subprocess.run([sys.executable, "-c", code, json.dumps(keys)], capture_output=True, text=True,
                             check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == here
    assert len(set(here)) == 13


@pytest.mark.parametrize("n", [1, 4, 16])
def test_spread_is_even_at_10000_keys(n):
    counts = Counter(shard_of(f"team-{i % 50}/svc-{i}", n) for i in range(10_000))
    assert set(counts) == set(range(n))
    mean = 10_000 / n
    sigma = (mean * (1 - 1 / n)) ** 0.5   # binomial: what a uniform hash gives
    assert all(abs(c - mean) <= 5 * sigma for c in counts.values()), counts


def test_shard_of_refuses_no_shards():
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("a/b", 0)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 16])
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_target_counts_add_up_and_differ_by_at_most_one(n, m):
    members = sorted(f"pod-{i}" for i in range(m))
    counts = [target_count(n, members, me) for me in members]
    assert sum(counts) == n
    assert max(counts) - min(counts) <= 1
    assert max(counts) == shards.fair_share(n, m)


def held(holder, ago=0.0, duration=3.0):
    return Holding(holder, T0 - timedelta(seconds=ago), duration)


def test_plan_takes_free_and_expired_shards_never_live_ones():
    view = {0: None, 1: held("b"), 2: held("b", ago=5), 3: Holding(None, None, 3.0)}
    p = plan("a", 4, view, [held("b")], T0)
    assert p.give == () and p.keep == ()
    assert set(p.take) == {0, 2} or set(p.take) == {0, 3} or set(p.take) == {2, 3}   # its share: 2 of 4
    assert 1 not in p.take and len(p.take) == 2


def test_plan_hands_back_what_a_new_member_should_get():
    view = {i: held("a") for i in range(4)}
    alone = plan("a", 4, view, [], T0)
    assert alone.keep == (0, 1, 2, 3) and alone.give == ()
    joined = plan("a", 4, view, [held("b")], T0)
    assert len(joined.keep) == 2 and len(joined.give) == 2 and set(joined.keep) | set(joined.give) == {0, 1, 2, 3}
    other = plan("b", 4, view, [held("a")], T0)
    assert other.take == ()   # all live elsewhere: b waits until a hands back
    freed = {**view, **{i: Holding(None, None, 3.0) for i in joined.give}}
    assert set(plan("b", 4, freed, [held("a")], T0).take) == set(joined.give)


def test_plan_ignores_dead_members_and_takes_nothing_while_blocked():
    view = {i: None for i in range(4)}
    assert len(plan("a", 4, view, [held("b", ago=10)], T0).take) == 4   # b is dead: a takes all
    assert plan("a", 4, view, [], T0, blocked=True) == shards.Plan((), (), ())
    mine = {0: held("a")}
    assert plan("a", 4, mine, [], T0, blocked=True).give == (0,)


# --- the Leases, in process ------------------------------------------------------------------------
def sharders(emu, names, n=6, duration=2.0):
    out = []
    for name in names:
        s = Sharder(emu.api_client(), "sluice-system", "sluice", name, n, lease_duration=duration, renew_every=0.2)
        s.start()
        out.append(s)
    return out


def partition(group, n=6):
    owned = [s.owned() for s in group]
    return sum(len(o) for o in owned) == n and len(frozenset().union(*owned)) == n


def test_leases_partition_the_shards_and_move_when_a_replica_dies_or_joins():
    with Emulator() as emu:
        a, b = sharders(emu, ["pod-a", "pod-b"])
        try:
            wait_for(lambda: partition([a, b]) and len(a.owned()) == 3, 10, "a 3 + 3 split")
            for _ in range(20):   # never one shard on two replicas
                assert not (a.owned() & b.owned())
                time.sleep(0.05)
            n, owners = read_owners(emu.api_client(), "sluice-system", "sluice")
            assert n == 6 and {owners[i] for i in a.owned()} == {"pod-a"}
            (c,) = sharders(emu, ["pod-c"])
            wait_for(lambda: partition([a, b, c]) and len(c.owned()) == 2, 10, "c to get its 2")
            assert not (a.owned() & b.owned()) and not (b.owned() & c.owned()) and not (a.owned() & c.owned())
            gone = a.owned()
            died = time.monotonic()
            a.stop(release=False)   # killed: its Leases expire by themselves
            wait_for(lambda: gone <= (b.owned() | c.owned()), 6, "a's shards to move")
            took = time.monotonic() - died
            print(f"in-process takeover after {took:.2f}s (lease 2s)")
            assert took < 2.0 + 1.0
            assert not a.owned()
            c.stop(release=True)   # a clean stop: b takes everything at once, not after the lease
            t0 = time.monotonic()
            wait_for(lambda: len(b.owned()) == 6, 5, "b to take all")
            assert time.monotonic() - t0 < 2.0
        finally:
            for s in (a, b):
                s.stop(release=False)


def test_replicas_with_another_number_of_shards_never_write_together():
    with Emulator() as emu:
        (a,) = sharders(emu, ["pod-a"], n=4)
        try:
            wait_for(lambda: len(a.owned()) == 4, 5, "a to hold 4")
            (b,) = sharders(emu, ["pod-b"], n=6)
            for _ in range(10):
                b.tick()
                assert not b.owned()   # a, started with 4, still holds its shards
            a.stop(release=True)
            wait_for(lambda: len(b.owned()) == 6, 5, "b to take over with 6")
            b.stop()
        finally:
            a.stop(release=False)


def test_plan_never_takes_nor_keeps_an_unreadable_lease():
    bad = Holding("a", None, 3.0, unreadable="renewTime yesterday")
    p = plan("a", 2, {0: bad, 1: None}, [bad], T0)
    assert p.take == (1,) and p.keep == () and p.give == ()   # not free, not ours, not a member
    assert shards.live_members([bad, held("b")], "a", T0) == ["a", "b"]


def lease_of(name, spec, labels):
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "sluice-system", "labels": {"sluice.dev/lease-group": "sluice", **labels}},
            **({"spec": spec} if spec is not None else {})}


def shard_labels(i, n):
    return {"sluice.dev/lease-role": "shard", "sluice.dev/shards": str(n), "sluice.dev/shard": str(i)}


def test_malformed_leases_stop_no_renewal_and_are_never_taken():
    with Emulator() as emu:
        emu.put(lease_of("stray", None, {}))   # a real API server takes a Lease with no spec
        emu.put(lease_of("sluice-member-ghost", None, {"sluice.dev/lease-role": "member"}))
        emu.put(lease_of("sluice-shard-0-of-4", {"holderIdentity": "x", "leaseDurationSeconds": 1,
                                                 "renewTime": "2026-01-01T00:00:00.000000"}, shard_labels(0, 4)))
        emu.put(lease_of("sluice-shard-1-of-4", {"holderIdentity": "x", "leaseDurationSeconds": 1,
                                                 "renewTime": "yesterday"}, shard_labels(1, 4)))
        emu.put(lease_of("sluice-shard-2-of-4", None, shard_labels(2, 4)))   # no spec: nobody holds it
        (a,) = sharders(emu, ["pod-a"], n=4)
        try:
            wait_for(lambda: a.owned() == {2, 3}, 5, "a to take the readable shards")
            assert a._thread.is_alive()
            n, owners = read_owners(emu.api_client(), "sluice-system", "sluice")
            assert n == 4 and owners == {0: None, 1: None, 2: "pod-a", 3: "pod-a"}

            def fix(lease):
                lease["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"   # long expired, now readable
            emu.edit("leases", "sluice-system", "sluice-shard-0-of-4", fix)
            wait_for(lambda: a.owned() == {0, 2, 3}, 5, "a to take the fixed shard")
            assert 1 not in a.owned() and a._thread.is_alive()
        finally:
            a.stop(release=False)


def test_a_replica_of_another_number_of_shards_makes_nobody_hand_back():
    with Emulator() as emu:
        a = Sharder(emu.api_client(), "sluice-system", "sluice", "pod-a", 4, lease_duration=2.0, renew_every=0.2)
        a.tick()
        assert a.owned() == {0, 1, 2, 3}
        (b,) = sharders(emu, ["pod-b"], n=6)
        try:
            wait_for(lambda: any(name == "sluice-member-pod-b" for _, _, name in emu.objects("leases")), 5, "b's member")
            for _ in range(3):
                a.tick()
                assert a.owned() == {0, 1, 2, 3} and not b.owned()   # b (6) is blocked: a must not give up any
        finally:
            b.stop(release=False)


def test_a_shard_the_leases_give_to_another_is_dropped_at_the_next_list():
    with Emulator() as emu:
        a = Sharder(emu.api_client(), "sluice-system", "sluice", "pod-a", 1, lease_duration=5.0, renew_every=0.5)
        a.tick()
        assert a.owned() == {0}

        def give(lease):
            lease["spec"]["holderIdentity"] = "pod-z"
            lease["spec"]["renewTime"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        emu.edit("leases", "sluice-system", "sluice-shard-0-of-1", give)
        a.tick()
        assert not a.owned() and not a.owns("team/app")


# --- several `sluice run` processes ---------------------------------------------------------
LEASE = 2.0
RELEASES = 12


def history(bare):
    """(sha, release, replica, action, step) of every Sluice commit, oldest first."""
    from tests.support.gitserver import run
    out = []
    for raw in run("log", "--reverse", "--format=%H%x00%B%x1e", "main", cwd=bare).split("\x1e"):
        if "\x00" not in raw:
            continue
        sha, body = raw.strip().split("\x00", 1)
        parsed = parse_commit(body)
        if parsed and parsed.release != "-":
            replica = (parsed.trailers.get("Sluice-Replica") or ("",))[-1]
            step = (parsed.trailers.get("Sluice-Step") or ("",))[-1]
            out.append((sha, parsed.release, replica, parsed.action, step))
    return out


def test_several_replicas_one_writer_per_release_failover_and_rebalance(tmp_path):
    from tests.support.gitserver import make_bare
    from tests.support.kube_emulator import kubeconfig
    from tests.support.specs import dump, release_doc
    seed = {}
    for i in range(RELEASES):
        doc = release_doc(name=f"svc-{i}", namespace=f"team-{i % 3}",
                          status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
        doc["spec"]["analysis"] = {"metrics": []}
        doc["spec"]["strategy"]["canary"] = {"steps": list(range(1, 100)), "interval": "1s"}
        seed[f"releases/team-{i % 3}/svc-{i}.yaml"] = dump(doc)
    keys = {f"team-{i % 3}/svc-{i}" for i in range(RELEASES)}
    bare = make_bare(tmp_path, seed=seed)
    seen: dict[str, float] = {}      # commit -> when this test first saw it (monotonic)
    commits: list[tuple] = []

    def look():
        got = history(bare)
        now = time.monotonic()
        for c in got:
            seen.setdefault(c[0], now)
        commits[:] = got
        return got

    with Emulator() as emu:
        cfg = kubeconfig(tmp_path / "kc", emu.url)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs, logs = {}, {}

        def start(name):
            logs[name] = tmp_path / f"{name}.log"
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli.main", "run", "--repo", str(bare), "--target", "kubernetes",
                 "--kubeconfig", str(cfg), "--interval", "1s", "--no-watch", "--listen", "127.0.0.1:0",
                 "--shards", "6", "--lease-namespace", "sluice-system", "--lease-duration", f"{LEASE:g}s",
                 "--identity", name, "--author-name", name, "--workdir", str(tmp_path / name)],
                env=env, stdout=subprocess.DEVNULL, stderr=logs[name].open("w"))

        def metrics_of(name):
            port = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", logs[name].read_text()), 10,
                            f"{name} to listen")
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            return {int(m.group(1)) for m in re.finditer(r'sluice_shard_owned\{shard="(\d+)"\} 1\.0', text)}

        def writers_since(mark):
            return {c[1]: c[2] for c in commits if seen[c[0]] >= mark}

        def progress(pred, timeout, what):
            def check():
                all_ready(emu)
                look()
                return pred()
            return wait_for(check, timeout, what, every=0.1)

        try:
            start("alpha")
            start("beta")
            progress(lambda: len(metrics_of("beta")) == 3 and metrics_of("alpha") == set(range(6)) - metrics_of("beta"),
                     20, "alpha and beta to hold 3 shards each")
            t = time.monotonic()
            progress(lambda: len({c[1] for c in commits if seen[c[0]] >= t and c[3] == "advance"}) == RELEASES,
                     40, "every release to advance")

            # SIGKILL the replica writing for shard 0's releases; the other takes them over
            victim = writers_since(t)[min(keys, key=lambda k: shard_of(k, 6))]
            survivor = ({"alpha", "beta"} - {victim}).pop()
            moved = {k for k, who in writers_since(t).items() if who == victim}
            assert moved and moved != keys
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            killed = time.monotonic()
            wait_for(lambda: metrics_of(survivor) == set(range(6)), LEASE + 5, "the survivor to hold every shard",
                     every=0.1)
            took_shards = time.monotonic() - killed
            progress(lambda: moved <= {k for k, who in writers_since(killed).items() if who == survivor},
                     LEASE + 10, "the killed replica's releases to move")
            took = max(min(seen[c[0]] for c in commits if c[1] == k and c[2] == survivor and seen[c[0]] >= killed)
                       for k in moved) - killed
            print(f"failover: shards taken over {took_shards:.2f}s after the kill; its {len(moved)} releases' next "
                  f"steps committed after {took:.2f}s at most (lease {LEASE:g}s, step interval 1s)")
            assert took_shards < LEASE + 1.0
            # then the step: the new owner first sees the routing live, which costs at most one step interval
            # (docs/rollout.md), plus the pass in flight and its own pass on this shared machine
            assert took < LEASE + 1.0 + 1.0 + 2.0

            # a third replica joins: it takes its share, and no release waits longer than the lease for its step
            start("gamma")
            joined = time.monotonic()
            progress(lambda: len(metrics_of("gamma")) == 3 and metrics_of(survivor) == set(range(6)) - metrics_of("gamma"),
                     20, "gamma to take its share")
            handed = {k for k in keys if shard_of(k, 6) in metrics_of("gamma")}
            assert handed and handed != keys
            progress(lambda: all(who == "gamma" for k, who in writers_since(joined).items() if k in handed)
                     and handed <= set(writers_since(joined)), 20, "gamma to write for its releases")
            settle = time.monotonic()
            progress(lambda: time.monotonic() - settle > 2, 10, "a few more steps")

            def worst_gap(group):   # the longest wait between two steps of a release since gamma joined
                out = 0.0
                for k in group:
                    times = sorted(seen[c[0]] for c in commits if c[1] == k and seen[c[0]] >= joined - 3)
                    out = max([out] + [b - a for a, b in zip(times, times[1:])])
                return out
            moved_gap, stayed_gap = worst_gap(handed), worst_gap(keys - handed)
            print(f"rebalance: longest wait for a step of a release handed to gamma {moved_gap:.2f}s, "
                  f"of one that stayed {stayed_gap:.2f}s (lease {LEASE:g}s)")
            # a handed release waits at most lease + 1 s longer than one that stayed (the pace of passes on this
            # shared machine); it includes one step interval: its new owner first sees the routing live and
            # opens the step's window then (docs/rollout.md), as after a restart
            assert moved_gap < max(stayed_gap, 1.0) + LEASE + 1.0

            # status shows who owns what
            out = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "status", f"file://{bare}", "-o", "json",
                                  "--shards", "--kubeconfig", str(cfg)], capture_output=True, text=True, env=env,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)["releases"]
            assert {r["owner"] for r in rows} == {survivor, "gamma"}
            assert all(r["shard"] == shard_of(f"{r['namespace']}/{r['name']}", 6) for r in rows)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
            for p in procs.values():
                p.wait(30)
        look()

    # from git: one writer per release at a time, no step committed twice
    by_release: dict[str, list[tuple]] = {}
    for c in commits:
        by_release.setdefault(c[1], []).append(c)
    assert set(by_release) == keys
    for key, cs in by_release.items():
        assert all(c[2] in ("alpha", "beta", "gamma") for c in cs), cs
        steps = [(c[3], c[4]) for c in cs]
        assert len(steps) == len(set(steps)), f"{key}: a step committed twice: {steps}"
        runs = [cs[0][2]] + [b[2] for a, b in zip(cs, cs[1:]) if a[2] != b[2]]
        # the writer changes only at the three hand-overs (beta joins, beta killed, gamma joins):
        # two replicas writing one release at once would alternate
        assert len(runs) <= 4, f"{key}: writers interleaved: {runs}"
        advanced = [int(c[4].split("/")[0]) for c in cs if c[3] == "advance"]
        assert advanced == sorted(set(advanced)), f"{key}: steps out of order or repeated: {advanced}"
