"""Shards across replicas on coordination.k8s.io/v1 Leases (``sluice run --shards N``).

Kubernetes' own coordination is the engine: plain Leases, optimistic
concurrency through resourceVersion (a 409 on create or update means another
replica got there first), ``holderIdentity``/``renewTime``/
``leaseDurationSeconds`` as Kubernetes defines them. In ``--lease-namespace``:

- ``<lease-name>-shard-<i>-of-<n>``: one per shard; its holder handles the
  shard's releases (reconciler.core.shards.shard_of). The name carries ``n``,
  so replicas started with another number of shards never share a Lease;
  while such replicas still hold shards, a replica takes none (two configs
  never write at once, see docs/operations.md for changing N).
- ``<lease-name>-member-<identity>``: each replica's own, renewed with its
  shards, so every replica sees how many are alive and its share.

All carry the label ``sluice.dev/lease-group=<lease-name>``: one LIST per
renewal reads them all. What to take and hand back is decided by the pure
reconciler.core.shards.plan. Each Lease of the LIST is read on its own: one
that cannot be read (a renewTime that is no timestamp with a zone) is held by
someone unknown, never taken (fail closed, logged), and stops no other; a
Lease with no spec is free, as one with no ``holderIdentity``. Only replicas
of the same ``n`` are counted as members to share with. A replica counts a shard as its own only while
its last renewal of it is recent enough that nobody else can have taken it
(as LeaderElector.is_leader does), and drops it as soon as a LIST shows
another holder. Extra shards are handed back only between
passes (``passing()`` is held around each pass): the replica forgets the shard
first (stops writing), then clears ``holderIdentity`` so another replica takes
it at once. A killed replica's shards are taken once its ``renewTime`` plus
``leaseDurationSeconds`` passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from reconciler.adapters.leader import Renewing
from reconciler.core.shards import Holding, plan, shard_of
from reconciler.errors import ClusterError

log = logging.getLogger("sluice.shards")

GROUP, ROLE, SHARDS, SHARD = "sluice.dev/lease-group", "sluice.dev/lease-role", "sluice.dev/shards", "sluice.dev/shard"
STALE_MEMBER = timedelta(minutes=10)   # a dead replica's membership Lease is deleted after this


def shard_lease(name: str, i: int, n: int) -> str:
    return f"{name}-shard-{i}-of-{n}"


def member_lease(name: str, identity: str) -> str:
    """A DNS-subdomain name for ``identity``'s membership Lease (pod names already are)."""
    safe = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.") or "replica"
    return f"{name}-member-{safe}"[:253].rstrip("-.")


def holding(lease) -> Holding:
    """What ``lease`` says. No spec: nobody holds it (as no ``holderIdentity``, Kubernetes' own rule)."""
    spec = lease.spec
    if spec is None:
        return Holding(None, None, 0.0)
    if spec.renew_time is not None and spec.renew_time.tzinfo is None:
        return Holding(None, None, 0.0, unreadable=f"renewTime {spec.renew_time.isoformat()} has no time zone")
    return Holding(spec.holder_identity or None, spec.renew_time, float(spec.lease_duration_seconds or 0))


def _read(item: dict) -> tuple[kubernetes.client.V1Lease, Holding]:
    """One Lease of a LIST as the client's model and what it says; one the model refuses is unreadable."""
    try:
        lease = kubernetes.client.V1Lease.from_dict(item)
    except (ValueError, TypeError) as exc:   # pydantic's ValidationError is a ValueError
        meta = item.get("metadata") or {}
        lease = kubernetes.client.V1Lease(metadata=kubernetes.client.V1ObjectMeta(
            name=meta.get("name"), resource_version=meta.get("resourceVersion"), labels=meta.get("labels")))
        return lease, Holding(None, None, 0.0, unreadable=" ".join(str(exc).split()))
    return lease, holding(lease)


def list_leases(coord: kubernetes.client.CoordinationV1Api, namespace: str, selector: str,
                timeout: float) -> list[tuple[kubernetes.client.V1Lease, Holding]]:
    """The Leases matching ``selector``, each read on its own (see _read): one bad Lease spoils no other."""
    resp = coord.list_namespaced_lease(namespace, label_selector=selector, _request_timeout=timeout,
                                       _preload_content=False)
    return [_read(item) for item in json.loads(resp.data).get("items") or []]


def _labels(lease) -> dict:
    return lease.metadata.labels or {}


def read_owners(api: kubernetes.client.ApiClient, namespace: str, name: str) -> tuple[int | None, dict[int, str | None]]:
    """Read-only (``sluice status --shards``): the number of shards of the Leases held now
    and the live holder of each (None: nobody). (None, {}) when no replica holds a shard."""
    coord = kubernetes.client.CoordinationV1Api(api)
    try:
        leases = list_leases(coord, namespace, f"{GROUP}={name},{ROLE}=shard", 10)
    except ApiException as exc:
        raise ClusterError(f"cannot list Leases in {namespace}: {exc.status} {exc.reason}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ClusterError(f"cannot list Leases in {namespace}: {exc}") from exc
    now = datetime.now(timezone.utc)
    by_n: dict[int, dict[int, str | None]] = {}
    for lease, h in leases:
        labels = _labels(lease)
        try:
            n, i = int(labels[SHARDS]), int(labels[SHARD])
        except (KeyError, ValueError):
            continue
        by_n.setdefault(n, {})[i] = h.holder if h.live(now) else None
    if not by_n:
        return None, {}
    n = max(by_n, key=lambda k: (sum(1 for v in by_n[k].values() if v), k))
    if not any(by_n[n].values()):
        return None, {}
    return n, {i: by_n[n].get(i) for i in range(n)}


class Sharder(Renewing):
    """This replica's shards of ``n``; ``owns(key)`` before every write of a release."""

    thread_name = "sluice-shards"

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, name: str, identity: str, n: int, *,
                 lease_duration: float = 15.0, renew_every: float | None = None):
        if n < 1:
            raise ValueError(f"--shards must be at least 1, not {n}")
        self.coord = kubernetes.client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity, self.n = namespace, name, identity, n
        # whole seconds: what leaseDurationSeconds can say, so no replica counts on more than the others see
        self.lease_duration = max(1, int(lease_duration))
        self.renew_every = renew_every if renew_every is not None else min(2.0, self.lease_duration / 10)
        self._held: dict[int, float] = {}     # shard -> monotonic time just before our last renewal was sent
        self._pass = threading.Lock()         # held during a pass: shards are handed back only between passes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owned: frozenset[int] = frozenset()
        self._warned: set[tuple[str, str]] = set()   # (name, resourceVersion) of unreadable Leases logged
        self.on_change: Callable[[frozenset[int]], None] = lambda owned: None

    # --- what the controller asks -------------------------------------------------------
    def owns_shard(self, i: int) -> bool:
        # renewed recently enough that nobody else can have taken it yet (10% margin for clocks and latency)
        at = self._held.get(i)
        return at is not None and time.monotonic() - at < self.lease_duration * 0.9

    def owns(self, key: str) -> bool:
        """Does this replica handle release ``key`` now?"""
        return self.owns_shard(shard_of(key, self.n))

    def owned(self) -> frozenset[int]:
        return frozenset(i for i in range(self.n) if self.owns_shard(i))

    def holds_any(self) -> bool:
        return bool(self.owned())

    @contextlib.contextmanager
    def passing(self) -> Iterator[None]:
        """Around each pass: no shard is handed back while it runs."""
        with self._pass:
            yield

    # --- the Leases -------------------------------------------------------------------
    def _body(self, name: str, labels: dict, spec: kubernetes.client.V1LeaseSpec) -> kubernetes.client.V1Lease:
        return kubernetes.client.V1Lease(metadata=kubernetes.client.V1ObjectMeta(
            name=name, namespace=self.namespace, labels={GROUP: self.name, **labels}), spec=spec)

    def _spec(self, old=None) -> kubernetes.client.V1LeaseSpec:
        now = datetime.now(timezone.utc)
        same = old is not None and old.holder_identity == self.identity
        transitions = (old.lease_transitions or 0) + (0 if same else 1) if old is not None else 0
        return kubernetes.client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=self.lease_duration,
                                             renew_time=now, acquire_time=old.acquire_time if same else now,
                                             lease_transitions=transitions)

    def _write(self, name: str, labels: dict, lease) -> bool:
        """Create (``lease`` None) or take/renew ``lease`` as ours; False when another replica won."""
        try:
            if lease is None:
                self.coord.create_namespaced_lease(self.namespace, self._body(name, labels, self._spec()),
                                                   _request_timeout=self._timeout)
            else:
                lease.spec = self._spec(lease.spec)
                self.coord.replace_namespaced_lease(name, self.namespace, lease, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    @property
    def _timeout(self) -> float:
        return max(0.5, self.lease_duration / 3)

    def tick(self) -> None:
        """One round: renew membership, read every Lease of the group, renew, take, hand back."""
        leases = list_leases(self.coord, self.namespace, f"{GROUP}={self.name}", self._timeout)
        now = datetime.now(timezone.utc)
        me = member_lease(self.name, self.identity)
        members, mine, blocked = [], {}, False
        for lease, h in leases:
            labels = _labels(lease)
            if h.unreadable:
                self._warn_unreadable(lease, h)
            if labels.get(ROLE) == "member":
                if lease.metadata.name == me:
                    continue
                if labels.get(SHARDS) == str(self.n):   # one of another n takes none of these: not one to share with
                    members.append(h)
                if not h.live(now) and (h.renewed is None or now - h.renewed > STALE_MEMBER):
                    self._forget_member(lease)
            elif labels.get(ROLE) == "shard":
                if labels.get(SHARDS) == str(self.n) and (labels.get(SHARD) or "").isdigit():
                    mine[int(labels[SHARD])] = (lease, h)
                elif h.live(now) and h.holder != self.identity:
                    blocked = True   # replicas with another --shards still write: wait for them to go
        for i in [i for i in self._held if i not in mine or mine[i][1].holder != self.identity or mine[i][1].unreadable]:
            self._held.pop(i)   # the Leases say it is not ours (any more): stop counting on it at once
        self._changed()
        own = next((lease for lease, _ in leases if lease.metadata.name == me), None)
        self._write(me, {ROLE: "member", SHARDS: str(self.n)}, own)
        todo = plan(self.identity, self.n, {i: h for i, (_, h) in mine.items()}, members, now, blocked=blocked)
        for i in (*todo.keep, *todo.take):
            sent = time.monotonic()
            if self._write(shard_lease(self.name, i, self.n), {ROLE: "shard", SHARDS: str(self.n), SHARD: str(i)},
                           mine[i][0] if i in mine else None):
                self._held[i] = sent
            else:
                self._held.pop(i, None)   # someone else's now: stop counting on it at once
        self._changed()
        if todo.give and self._pass.acquire(timeout=self.renew_every):   # between passes only
            try:
                for i in todo.give:
                    self._hand_back(i, mine[i][0])
            finally:
                self._pass.release()

    def _hand_back(self, i: int, lease) -> None:
        """Stop writing for shard ``i`` first, then free its Lease so another replica takes it now."""
        self._held.pop(i, None)
        self._changed()   # /metrics says so before anyone else can take it
        lease.spec.holder_identity = None
        lease.spec.renew_time = None
        try:
            self.coord.replace_namespaced_lease(lease.metadata.name, self.namespace, lease,
                                                _request_timeout=self._timeout)
            log.info("identity=%s handed back shard=%d/%d", self.identity, i, self.n)
        except ApiException as exc:   # 409: it changed meanwhile; it expires by itself anyway
            log.warning("handing back shard %d failed: %s", i, exc.reason)

    def _warn_unreadable(self, lease, h: Holding) -> None:
        seen = (lease.metadata.name, lease.metadata.resource_version)
        if seen not in self._warned:
            self._warned.add(seen)
            log.warning("Lease %s/%s cannot be read (%s): counted as held by someone unknown until it is fixed",
                        self.namespace, lease.metadata.name, h.unreadable)

    def _forget_member(self, lease) -> None:
        try:
            self.coord.delete_namespaced_lease(lease.metadata.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("deleting the stale membership Lease %s failed: %s", lease.metadata.name, exc.reason)

    def release(self) -> None:
        """On shutdown: hand every shard back and leave, so the others take over at once."""
        with self._pass:
            try:
                leases = {lease.metadata.name: (lease, h) for lease, h in list_leases(
                    self.coord, self.namespace, f"{GROUP}={self.name}", self._timeout)}
                for i in sorted(self._held):
                    lease, h = leases.get(shard_lease(self.name, i, self.n), (None, None))
                    if lease is not None and h.holder == self.identity and not h.unreadable:
                        self._hand_back(i, lease)
                own = leases.get(member_lease(self.name, self.identity))
                if own is not None:
                    self._forget_member(own[0])
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                log.warning("releasing the shard Leases failed: %s", getattr(exc, "reason", exc))
            self._held.clear()
        self._changed()

    def _changed(self) -> None:
        owned = self.owned()
        if owned != self._owned:
            self._owned = owned
            log.info("identity=%s shards=%s of %d", self.identity, ",".join(map(str, sorted(owned))) or "-", self.n)
            self.on_change(owned)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:   # shards lapse by themselves
                log.warning("shard leases %s/%s: %s", self.namespace, self.name, getattr(exc, "reason", exc))
            except Exception:   # noqa: BLE001 - the thread must live on; unrenewed shards lapse by themselves
                log.exception("shard leases %s/%s: renewal failed", self.namespace, self.name)
            self._changed()
            self._stop.wait(self.renew_every)
