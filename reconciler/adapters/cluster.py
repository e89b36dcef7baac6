"""The cluster: live state, server-side apply, prune, readiness.

On the official ``kubernetes`` client. Reads are one LIST per kind per
namespace with the label selector ``app.kubernetes.io/managed-by=sluice``,
never a GET per object. Writes are server-side apply under the field manager
``sluice`` (force: Sluice owns the fields it renders) and deletes of objects
whose labels say they are ours.

API errors are translated here: 409 re-read and re-applied, 429 and 5xx
retried with bounded backoff (Retry-After honoured), 403 is a permanent
ClusterForbidden naming the verb and resource, an unreachable server is a
temporary ClusterError. A failure half-way leaves objects the next pass
compares and repairs.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from reconciler.core import revision, sizing
from reconciler.core.diff import APPLIED_ANNOTATION, Action, ObjRef, diff, ref_of, release_of, stamp
from reconciler.core.model import (
    Applied, DEFAULT_INSTANCE, FIELD_MANAGER, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_VERSION, MANAGED_BY_VALUE, Readiness,
    Release,
)
from reconciler.core.readiness import deployment_readiness
from reconciler.errors import ClusterError, ClusterForbidden

log = logging.getLogger("sluice.cluster")
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
# (apiVersion, kind) -> (group, version, plural)
KINDS = {
    ("v1", "Service"): ("", "v1", "services"),
    ("v1", "ConfigMap"): ("", "v1", "configmaps"),
    ("apps/v1", "Deployment"): ("apps", "v1", "deployments"),
    ("networking.istio.io/v1", "DestinationRule"): ("networking.istio.io", "v1", "destinationrules"),
    ("networking.istio.io/v1", "VirtualService"): ("networking.istio.io", "v1", "virtualservices"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("autoscaling", "v2", "horizontalpodautoscalers"),
}


class ClusterConflict(ClusterError):
    """409: someone else changed the object; retried."""


class ClusterInvalid(ClusterError):
    """422: the server refuses the object as written (e.g. an immutable field changed)."""


def _reason(data: bytes | None) -> str:
    try:
        return json.loads(data or b"{}").get("message", "")
    except (ValueError, AttributeError):
        return ""


class Cluster:
    """Reads and writes Sluice's objects through one ApiClient."""

    def __init__(self, api: kubernetes.client.ApiClient, *, attempts: int = 5, backoff: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep):
        self.api, self.attempts, self.backoff, self.sleep = api, attempts, backoff, sleep

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> "Cluster":
        try:
            if kubeconfig or context:
                kubernetes.config.load_kube_config(config_file=kubeconfig, context=context)
            else:
                try:
                    kubernetes.config.load_incluster_config()
                except kubernetes.config.ConfigException:
                    kubernetes.config.load_kube_config()
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ClusterError(f"no usable Kubernetes configuration: {exc}") from exc
        return cls(kubernetes.client.ApiClient())

    # --- raw calls with error translation --------------------------------------
    def _path(self, group: str, version: str, plural: str, namespace: str, name: str | None = None) -> str:
        base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        return f"{base}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    def _call(self, verb: str, what: str, namespace: str, method: str, path: str, *, query=None, body=None,
              content_type: str = "application/json") -> Any:
        """One API call with retries; returns the parsed body (None for a 404 on get/delete)."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            method_, url, headers, body_, _ = self.api.param_serialize(
                method, path, query_params=query or [], header_params={"Content-Type": content_type,
                                                                       "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"])
            try:
                resp = self.api.call_api(method_, url, header_params=headers, body=body_, _request_timeout=(5, 30))
                data = resp.read()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt < self.attempts:
                    self.sleep(delay)
                    delay = min(delay * 2, 5)
                    continue
                raise ClusterError(f"Kubernetes API unreachable ({type(exc).__name__})") from exc
            status = resp.status
            if 200 <= status < 300:
                return json.loads(data) if data else {}
            reason = _reason(data) or resp.reason
            if status == 403:
                raise ClusterForbidden(f"forbidden: cannot {verb} {what} in namespace {namespace} "
                                       f"(grant it in deploy/rbac.yaml): {reason}")
            if status == 404 and verb in ("delete", "get"):
                return None
            if status == 409:
                raise ClusterConflict(f"{verb} {what} in {namespace}: conflict: {reason}")
            if status == 422:
                raise ClusterInvalid(f"{verb} {what} in {namespace}: invalid: {reason}")
            if status in (429, 500, 502, 503, 504) and attempt < self.attempts:
                retry = resp.headers.get("Retry-After") if resp.headers else None
                self.sleep(min(float(retry), 10) if retry and retry.isdigit() else delay)
                delay = min(delay * 2, 5)
                continue
            raise ClusterError(f"{verb} {what} in {namespace}: HTTP {status}: {reason}")
        raise ClusterError(f"{verb} {what} in {namespace}: gave up after {self.attempts} attempts")

    @staticmethod
    def _what(group: str, plural: str) -> str:
        return f"{plural}.{group}" if group else plural

    # --- reads --------------------------------------------------------------------
    def list_managed(self, namespaces: Iterable[str], instance: str = DEFAULT_INSTANCE) -> dict[ObjRef, dict]:
        """Every object this Sluice instance owns: one LIST per kind per namespace."""
        out: dict[ObjRef, dict] = {}
        for ns in sorted(set(namespaces)):
            for (api_version, kind), (group, version, plural) in KINDS.items():
                data = self._call("list", self._what(group, plural), ns, "GET",
                                  self._path(group, version, plural, ns), query=[("labelSelector", SELECTOR)])
                for item in (data or {}).get("items") or []:
                    if not _of_instance(item, instance):
                        continue
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                    out[ref_of(item)] = item
        return out

    # --- writes -------------------------------------------------------------------
    def apply(self, obj: Mapping[str, Any]) -> dict:
        """Server-side apply of ``obj`` (creates it when missing)."""
        group, version, plural = KINDS[(obj["apiVersion"], obj["kind"])]
        ref = ref_of(obj)
        for attempt in range(3):
            try:
                return self._call("patch", self._what(group, plural), ref.namespace, "PATCH",
                                  self._path(group, version, plural, ref.namespace, ref.name),
                                  query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                                  body=dict(obj), content_type="application/apply-patch+yaml")
            except ClusterConflict:
                if attempt == 2:
                    raise
                # a concurrent writer: apply again on the new version
        raise ClusterError(f"apply {ref}: conflicts kept coming")

    def delete(self, ref: ObjRef) -> None:
        group, version, plural = KINDS[(ref.api_version, ref.kind)]
        self._call("delete", self._what(group, plural), ref.namespace, "DELETE",
                   self._path(group, version, plural, ref.namespace, ref.name))

    # --- the inventory: what this instance applied, kept in the cluster ---------------
    def read_inventory(self, namespace: str, name: str) -> set[str] | None:
        """Namespaces recorded in the inventory ConfigMap; None when there is none yet."""
        data = self._call("get", "configmaps", namespace, "GET", self._path("", "v1", "configmaps", namespace, name))
        if data is None:
            return None
        try:
            names = json.loads((data.get("data") or {}).get("namespaces") or "[]")
        except (ValueError, AttributeError, TypeError):
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            log.error("inventory %s/%s is not a list of namespaces; pruning only where git has releases "
                      "until the next write repairs it", namespace, name)
            return set()
        return set(names)

    def write_inventory(self, namespace: str, name: str, instance: str, namespaces: set[str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_INSTANCE: instance}},
                "data": {"namespaces": json.dumps(sorted(namespaces))}}
        self._call("patch", "configmaps", namespace, "PATCH", self._path("", "v1", "configmaps", namespace, name),
                   query=[("fieldManager", FIELD_MANAGER), ("force", "true")], body=body,
                   content_type="application/apply-patch+yaml")


def _of_instance(obj: Mapping[str, Any], instance: str) -> bool:
    """Ours: labelled with our instance, or (the default instance only) labelled by a
    Sluice from before instances, which it adopts on its first apply."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_INSTANCE, DEFAULT_INSTANCE if instance == DEFAULT_INSTANCE else None) == instance


def _fingerprint_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION)


def version_readiness(rel: Release, live: Mapping[ObjRef, dict], now=None) -> dict[str, Readiness]:
    """Readiness of each live revision of ``rel`` (by revision name) from the listed Deployments,
    against the pods its status asks for (sizing.sizes)."""
    out = {}
    pods = sizing.sizes(rel) if rel.is_mesh else {}
    for ver in (rel.status.get("canary"), rel.status.get("stable"), revision.target(rel)):
        if not ver or not ver.get("version"):
            continue
        v = revision.name_of(ver)
        if rel.is_mesh:
            dep = live.get(ObjRef("apps/v1", "Deployment", rel.namespace, f"{rel.name}-{v}"))
        else:
            dep = live.get(ObjRef("apps/v1", "Deployment", rel.namespace, rel.name))
            labels = ((((dep or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if labels.get("version") != v:
                dep = None if dep is None else {**dep, "status": {}}   # not rolled to this version yet
        size = pods.get(v) if rel.is_mesh else None
        out[v] = deployment_readiness(v, dep, need=size.need if size else None, serving=size.serving if size else 0)
    return out


class KubernetesTarget:
    """The ``kubernetes`` target of the controller.

    ``instance`` names this installation: every object it applies carries the
    label ``sluice.dev/instance=<instance>``, it lists and prunes only objects
    with that label, and it keeps the namespaces it applied to in the
    ConfigMap ``sluice-inventory-<instance>`` (in ``inventory_namespace``), so a
    release whose folder was deleted while Sluice was down is still pruned
    after a restart, and two installations never prune each other.
    """

    name = "kubernetes"

    def __init__(self, cluster: Cluster, *, instance: str = DEFAULT_INSTANCE,
                 inventory_namespace: str = "sluice-system"):
        self.cluster, self.instance, self.inventory_namespace = cluster, instance, inventory_namespace
        self.inventory_name = f"sluice-inventory-{instance}"
        self.live: dict[ObjRef, dict] = {}
        self._by_release: dict[str | None, list[dict]] | None = None
        self.namespaces: set[str] | None = None   # from the inventory, read once per process
        # VirtualService -> (fingerprint, live since, whether that is only when this process first saw it)
        self._routed: dict[ObjRef, tuple[str | None, datetime, bool]] = {}
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)   # the controller sets its own

    def observe(self, releases: list[Release]) -> None:
        if self.namespaces is None:
            self.namespaces = self.cluster.read_inventory(self.inventory_namespace, self.inventory_name) or set()
        wanted = {r.namespace for r in releases}
        self.live = self.cluster.list_managed(self.namespaces | wanted, self.instance)
        self._by_release = None

    def readiness(self, rel: Release) -> dict[str, Readiness]:
        return version_readiness(rel, self.live)

    def objects_of(self, release: str) -> list[dict]:
        if self._by_release is None:   # indexed once per observation: a pass asks once per release
            self._by_release = {}
            for obj in self.live.values():
                self._by_release.setdefault(release_of(obj), []).append(obj)
        return self._by_release.get(release, [])

    def applied(self, rel: Release, desired: list[dict], settings: Mapping[str, Any]) -> Applied:
        """The routing of ``desired`` is live once every VirtualService in it is, as
        last observed, what Sluice would apply (no action left). Since when: the
        moment this process's apply of it returned (by the controller's clock);
        for routing another process applied (a restart, a new leader), the first
        time this process saw it live: later than it went live, never earlier
        (the API server's clock, in ``managedFields``, may be skewed from ours),
        so a restart costs an in-flight step at most one interval (``estimated``:
        guard checks still count failures meanwhile)."""
        routes = [o for o in desired if o.get("kind") == "VirtualService"]
        if not routes:
            return Applied(None, known=False)
        since, estimated = [], False
        for obj in routes:
            ref = ref_of(obj)
            live = self.live.get(ref)
            if live is None or any(a.op != "delete" for a in diff(self._stamped([obj]), {ref: live})):
                return Applied(None, waiting=f"VirtualService {ref.namespace}/{ref.name} does not carry this "
                                             "step's routing yet")
            fp, at, guessed = self._routed.get(ref, (None, None, False))
            if fp != _fingerprint_of(live):
                at, guessed = self.clock(), True
                self._routed[ref] = (_fingerprint_of(live), at, True)   # kept: the same answer next pass
            since.append(at)
            estimated = estimated or guessed
        return Applied(max(since), estimated=estimated)

    def after_push(self, commits: list[str], settings: Mapping[str, Any]) -> None:
        return None   # Sluice applies itself, right after the push

    def _stamped(self, objs: list[dict]) -> list[dict]:
        return [stamp(o, instance=self.instance, live=self.live.get(ref_of(o))) for o in objs]

    def _actions(self, key: str, objs: list[dict], report) -> list[Action] | None:
        """One release's actions (create/update), or None when working them out failed
        (that release is then left as it runs, and nothing of it is pruned)."""
        try:
            live = {ref_of(o): o for o in self.objects_of(key)}
            return [a for a in diff(self._stamped(objs), live) if a.op != "delete"]
        except Exception as exc:   # noqa: BLE001 - one release's bad data must not stop the rest
            report.errors.append(f"{key}: {type(exc).__name__}: {exc}")
            log.error("release=%s cannot compare with the cluster: %s", key, exc, exc_info=True)
            return None

    def detect_drift(self, key: str, objs: list[dict]) -> list[tuple[str, str]]:
        """(object, who) of ``key``'s objects someone other than Sluice changed (not git changes)."""
        if not self.objects_of(key):
            return []   # never applied yet: creation, not drift
        live = {ref_of(o): o for o in self.objects_of(key)}
        return [(f"{a.ref.kind}/{a.ref.name}", a.by or "unknown")
                for a in diff(self._stamped(objs), live) if a.why == "drift"]

    def apply(self, desired: Mapping[str, list[dict]], *, keep: set[str], urgent: bool = False):
        from reconciler.controller import ApplyReport
        report = ApplyReport()
        keep = set(keep)
        actions: list[Action] = []
        for key, objs in desired.items():
            mine = self._actions(key, objs, report)
            if mine is None:
                keep.add(key)
            else:
                actions += mine
        if not urgent:   # prune: ours, of no desired or held release (never in an urgent apply)
            wanted = {ref_of(o) for objs in desired.values() for o in objs}
            actions += diff([], {r: o for r, o in self.live.items() if r not in wanted}, keep=keep)
        self._by_release = None   # the apply changes what is live
        for action in actions:
            try:
                self._do(action, report)
            except (ClusterError, ClusterForbidden) as exc:
                report.errors.append(str(exc))
                log.error("release=%s %s %s failed: %s", release_of(action.desired or action.live) or "-",
                          action.op, action.ref, exc)
        if not urgent:
            self._record_inventory(desired, report)
        return report

    def _record_inventory(self, desired: Mapping[str, list[dict]], report) -> None:
        """Keep the namespaces that hold this instance's objects now (what remains after
        prune, failed deletes included), written only when they change."""
        holding = {ref_of(o).namespace for objs in desired.values() for o in objs} | {r.namespace for r in self.live}
        if holding == self.namespaces:
            return
        try:
            self.cluster.write_inventory(self.inventory_namespace, self.inventory_name, self.instance, holding)
            self.namespaces = holding
        except (ClusterError, ClusterForbidden) as exc:   # kept in memory; written again next pass
            report.errors.append(f"inventory: {exc}")
            self.namespaces = (self.namespaces or set()) | holding

    def _do(self, action: Action, report) -> None:
        if action.op == "delete":
            self.cluster.delete(action.ref)
            self.live.pop(action.ref, None)
            report.deleted += 1
            return
        try:
            applied = self.cluster.apply(action.desired)
        except ClusterInvalid as exc:
            if not _legacy_selector(action.live, action.desired) or not _immutable(exc):
                raise
            # a rolling/recreate Deployment applied by a Sluice before 0.2 has the version
            # in its immutable selector: replace it once (its pods restart)
            log.warning("%s: %s; replacing a Deployment with a pre-0.2 selector", action.ref, exc)
            self.cluster.delete(action.ref)
            applied = self.cluster.apply(action.desired)
        if action.op == "create":
            report.created += 1
        else:
            report.updated += 1
        if action.why == "drift":
            report.drifted.append(f"{action.ref.kind}/{action.ref.name}")
        self.live[action.ref] = applied or action.desired
        if action.ref.kind == "VirtualService":   # when this routing went live, by the controller's clock
            self._routed[action.ref] = (_fingerprint_of(self.live[action.ref]), self.clock(), False)


def _immutable(exc: Exception) -> bool:
    return "field is immutable" in str(exc)


def _legacy_selector(live: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> bool:
    """Live selector = desired selector + the version label: what older Sluice wrote."""
    def sel(obj):
        return (((obj or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    old, new = sel(live), sel(desired)
    return bool(live) and LABEL_VERSION in old and LABEL_VERSION not in new and \
        {k: v for k, v in old.items() if k != LABEL_VERSION} == new
