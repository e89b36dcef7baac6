"""Leader election on a coordination.k8s.io/v1 Lease.

Only the leader writes to git or the cluster; the controller asks
``is_leader()`` before every write. A small loop of our own rather than
``kubernetes.leaderelection``: that module runs its own blocking loop and
callbacks, while the controller needs a cheap check it can make mid-pass and
a clean release on SIGTERM. Optimistic concurrency through resourceVersion:
a 409 on update means someone else got there first.

Timing: the holder renews every ``renew_every`` seconds; a standby takes
over once ``lease_duration`` passed since the last renewal; a leader that
could not renew for ``lease_duration`` stops counting itself as leader
before anyone else may take over (no two writers).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("sluice.leader")


class Renewing:
    """A background thread that renews Leases until stopped (``_loop``), then hands them
    back (``release``): the leader election and the shards share it."""

    thread_name = "sluice-lease"
    _stop: threading.Event
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if release:
            self.release()


class LeaderElector(Renewing):
    thread_name = "sluice-leader"

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_every: float = 2.0):
        self.coord = kubernetes.client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_every = lease_duration, renew_every
        self._renewed_at = 0.0          # monotonic time of our last successful renewal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change = lambda leading: None

    def is_leader(self) -> bool:
        # renewed recently enough that nobody else can have taken over yet
        return time.monotonic() - self._renewed_at < self.lease_duration * 0.9

    def _spec(self, transitions: int, acquire: datetime | None = None) -> kubernetes.client.V1LeaseSpec:
        now = datetime.now(timezone.utc)
        return kubernetes.client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(self.lease_duration),
                                             renew_time=now, acquire_time=acquire or now, lease_transitions=transitions)

    def try_acquire(self) -> bool:
        """One attempt to take or renew the lease; True when we hold it."""
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = kubernetes.client.V1Lease(metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                                             spec=self._spec(0))
            try:
                self.coord.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            self._renewed_at = time.monotonic()
            return True
        spec = lease.spec
        holder = spec.holder_identity
        renew = spec.renew_time
        expired = renew is None or (datetime.now(timezone.utc) - renew).total_seconds() > (spec.lease_duration_seconds or self.lease_duration)
        if holder and holder != self.identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if holder == self.identity else None)
        try:
            self.coord.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._renewed_at = time.monotonic()
        return True

    def release(self) -> None:
        """Give the lease up at once so a standby takes over without waiting."""
        if not self.is_leader():
            return
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.coord.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("releasing the lease failed: %s", exc.reason)
        self._renewed_at = 0.0

    def _loop(self) -> None:
        leading = False
        while not self._stop.is_set():
            try:
                self.try_acquire()
            except (ApiException, OSError) as exc:   # API down: keep trying, leadership lapses by itself
                log.warning("lease %s/%s: %s", self.namespace, self.name, getattr(exc, "reason", exc))
            now_leading = self.is_leader()
            if now_leading != leading:
                leading = now_leading
                log.info("identity=%s leader=%s", self.identity, leading)
                self.on_change(leading)
            self._stop.wait(self.renew_every)
