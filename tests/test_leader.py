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
