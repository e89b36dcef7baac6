"""Shards of releases across replicas: which replica handles which release.

Pure: no clock, no network. The adapter (reconciler.adapters.shards) reads
the Leases and the time and asks this module what to do.

- ``shard_of(key, n)``: a release (``namespace/name``) belongs to one of ``n``
  shards by a stable hash (sha256, the same in every process and version of
  Python; never ``hash()``, which is salted per process).
- Each shard has a Lease; the replica holding it handles the shard's releases.
  Each replica also renews a membership Lease, so every replica sees how many
  are alive.
- ``target_count``: with ``m`` live members, each takes ``n // m`` shards and
  the first ``n % m`` of them (by identity) one more, so the counts add up to
  ``n`` and a new replica gets its share (plain ``ceil(n / m)`` would let
  two replicas keep 2 + 2 of 4 shards while a third holds none).
- ``plan``: the shards to take (free or expired, up to the target count) and
  to hand back (held beyond it). Deterministic from what the replica sees;
  replicas that see different things meanwhile are kept apart by the Leases
  themselves (one holder per Lease, optimistic concurrency).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping

REPO_WIDE = "-"   # the "key" of what is about no one release (an invalid sluice.yaml): its shard's owner speaks


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_of(key: str, n: int) -> int:
    """The shard (0 .. n-1) of release ``key`` (``namespace/name``)."""
    if n < 1:
        raise ValueError(f"the number of shards must be at least 1, not {n}")
    return _digest(key) % n


@dataclass(frozen=True)
class Holding:
    """What a Lease says: who holds it, since when it was renewed, for how long.

    ``unreadable``: why the Lease could not be read (a renewTime that is no
    timestamp with a zone, ...). Such a Lease fails closed: it counts as held by
    someone unknown, nobody's and never free, until it is fixed."""

    holder: str | None
    renewed: datetime | None
    duration: float
    unreadable: str | None = None

    def live(self, now: datetime) -> bool:
        """Held, and renewed within its duration (Kubernetes' own rule for a Lease); an unreadable one: held."""
        if self.unreadable:
            return True
        return bool(self.holder) and self.renewed is not None and now < self.renewed + timedelta(seconds=self.duration)


def live_members(members: Iterable[Holding], me: str, now: datetime) -> list[str]:
    """The identities of the replicas alive now (always including ``me``), sorted."""
    return sorted({m.holder for m in members if m.holder and not m.unreadable and m.live(now)} | {me})


def target_count(n: int, members: list[str], me: str) -> int:
    """How many of ``n`` shards ``me`` should hold among the sorted live ``members``."""
    share, extra = divmod(n, len(members))
    return share + (1 if members.index(me) < extra else 0)


def fair_share(n: int, live: int) -> int:
    """The most shards any one of ``live`` replicas holds once balanced: ceil(n / live)."""
    return -(-n // max(live, 1))


@dataclass(frozen=True)
class Plan:
    take: tuple[int, ...]   # free or expired shards to try to take, best first
    give: tuple[int, ...]   # held shards to hand back (between passes)
    keep: tuple[int, ...]   # held shards to renew


def plan(me: str, n: int, shards: Mapping[int, Holding | None], members: Iterable[Holding], now: datetime,
         *, blocked: bool = False) -> Plan:
    """What ``me`` should do with the ``n`` shard Leases it sees (None: no Lease yet).

    A shard held by someone else and live is theirs; one whose holder is ``me`` is
    renewed (unless beyond the target count: handed back); an unreadable one is
    nobody's and never taken; a free or expired one is taken while ``me`` holds fewer than its target. ``blocked``: replicas started with
    another number of shards still hold some; take nothing until they are gone.
    Each replica tries free shards in its own order (a hash of identity and shard), so
    several replicas starting together rarely race for the same Lease."""
    mine = sorted(i for i in range(n) if (h := shards.get(i)) is not None and h.holder == me and not h.unreadable)
    want = 0 if blocked else target_count(n, live_members(members, me, now), me)
    order = sorted(mine, key=lambda i: _digest(f"{me}/{i}"))
    keep, give = tuple(sorted(order[:want])), tuple(sorted(order[want:]))
    free = [i for i in range(n) if i not in mine and not ((h := shards.get(i)) is not None and h.live(now))]
    take = tuple(sorted(free, key=lambda i: _digest(f"{me}/{i}"))[:max(want - len(keep), 0)])
    return Plan(take, give, keep)
