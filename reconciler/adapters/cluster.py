"""The cluster: live state, server-side apply, prune, readiness.

On the official ``kubernetes`` client. Reads are one LIST per kind per
namespace with the label selector ``app.kubernetes.io/managed-by=sluice``,
never a GET per object. Writes are server-side apply under the field manager
``sluice`` (force: Sluice owns the fields it renders) and deletes of objects
whose labels say they are ours.

Adopted objects (core/adopt.py) are read by a GET each, by name, and written
only where Sluice owns a field: an adopted Deployment's ``spec.replicas`` by
a server-side apply naming that field alone, an adopted VirtualService's one
route by a JSON patch (a ``test`` of the route's name at its index, then its
``route``; re-read and retried when the owner moved it meanwhile). They carry
no label of Sluice's and are never pruned or deleted.

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

from reconciler.core import adopt, revision, sizing
from reconciler.core.bulk import collector_paused
from reconciler.core.observed import ROLLBACK_ANNOTATION
from reconciler.core.diff import (
    APPLIED_ANNOTATION, Action, ObjRef, SCALERS, diff, last_writer, owners, ref_of, release_of, stamp, unified,
)
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
        with collector_paused():   # ~70,000 objects at 10,000 releases, all kept (core/bulk.py)
            return self._list_managed(namespaces, instance)

    def _list_managed(self, namespaces: Iterable[str], instance: str) -> dict[ObjRef, dict]:
        out: dict[ObjRef, dict] = {}
        for ns in sorted(set(namespaces)):
            for (api_version, kind), (group, version, plural) in KINDS.items():
                data = self._call("list", self._what(group, plural), ns, "GET",
                                  self._path(group, version, plural, ns), query=[("labelSelector", SELECTOR)])
                for item in (data or {}).get("items") or []:
                    if not _of_instance(item, instance):
                        continue
                    _compact_managed_fields(item)
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

    def get(self, ref: ObjRef) -> dict | None:
        """One object by name (None when it does not exist)."""
        group, version, plural = KINDS[(ref.api_version, ref.kind)]
        obj = self._call("get", self._what(group, plural), ref.namespace, "GET",
                         self._path(group, version, plural, ref.namespace, ref.name))
        if obj is not None:
            obj.setdefault("apiVersion", ref.api_version)
            obj.setdefault("kind", ref.kind)
        return obj

    def scale(self, ref: ObjRef, replicas: int) -> dict:
        """Apply ``spec.replicas`` alone to an adopted Deployment: Sluice's field manager
        owns that field and no other, so nothing else of the object changes."""
        body = {"apiVersion": ref.api_version, "kind": ref.kind,
                "metadata": {"name": ref.name, "namespace": ref.namespace}, "spec": {"replicas": replicas}}
        return self.apply(body)

    def patch_route(self, ref: ObjRef, route: str, destinations: list[dict], attempts: int = 3) -> dict:
        """Set the destinations of ``route`` in an adopted VirtualService by a JSON patch
        (adopt.route_patch) on the object as just read; a failed test (the owner moved
        or renamed routes meanwhile: 422) or a conflict re-reads and tries again."""
        group, version, plural = KINDS[(ref.api_version, ref.kind)]
        for attempt in range(1, attempts + 1):
            live = self.get(ref)
            if live is None:
                raise ClusterError(f"VirtualService {ref.namespace}/{ref.name} (spec.service.virtualServiceRef) "
                                   "does not exist")
            try:
                ops = adopt.route_patch(live, route, destinations)
            except ValueError as exc:
                raise ClusterError(f"{exc} (spec.service.virtualServiceRef)") from exc
            try:
                return self._call("patch", self._what(group, plural), ref.namespace, "PATCH",
                                  self._path(group, version, plural, ref.namespace, ref.name),
                                  query=[("fieldManager", FIELD_MANAGER)], body=ops,
                                  content_type="application/json-patch+json")
            except (ClusterInvalid, ClusterConflict):
                if attempt == attempts:
                    raise
        raise ClusterError(f"patch {ref}: gave up after {attempts} attempts")

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


# The fields whose owners Sluice asks about (diff.owners): an object's managedFields are a third
# of it, kept for every live object between passes; these and who wrote when are all it reads.
OWNED_PATHS = (("spec", "replicas"), ("spec", "http"), ("metadata", "annotations", ROLLBACK_ANNOTATION))


def _compact_managed_fields(obj: dict) -> None:
    """Keep of each managedFields entry its manager, operation, time and, of its fieldsV1,
    only the OWNED_PATHS it holds (what owners() and last_writer() read)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("managedFields"), list):
        return
    out = []
    for entry in meta["managedFields"]:
        if not isinstance(entry, dict):
            continue
        fields = entry.get("fieldsV1") if isinstance(entry.get("fieldsV1"), dict) else {}
        kept: dict = {}
        for path in OWNED_PATHS:
            node = fields
            for key in path:
                node = node.get(f"f:{key}") if isinstance(node, dict) else None
            if node is not None:
                at = kept
                for key in path[:-1]:
                    at = at.setdefault(f"f:{key}", {})
                at[f"f:{path[-1]}"] = {}
        out.append({k: entry[k] for k in ("manager", "operation", "time", "apiVersion") if k in entry}
                   | {"fieldsV1": kept})
    meta["managedFields"] = out


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
            name = adopt.workload_ref(rel) if v == adopt.revision_of(rel) else f"{rel.name}-{v}"
            dep = live.get(ObjRef("apps/v1", "Deployment", rel.namespace, name))
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
    settles = True   # apply(settled=...): releases the controller found at rest are not compared again
    partial = True   # observe(namespaces=...) and apply(scope=...): a pass that looks at a few releases only

    def __init__(self, cluster: Cluster, *, instance: str = DEFAULT_INSTANCE,
                 inventory_namespace: str = "sluice-system"):
        self.cluster, self.instance, self.inventory_namespace = cluster, instance, inventory_namespace
        self.inventory_name = f"sluice-inventory-{instance}"
        self.live: dict[ObjRef, dict] = {}
        self._by_release: dict[str | None, list[dict]] | None = None
        self.namespaces: set[str] | None = None   # from the inventory, read once per process
        # a VirtualService of Sluice's, or (VirtualService, route) of an adopted one (several releases may
        # each adopt one route of it) -> (fingerprint, live since, whether that is only when this process
        # first saw it)
        self._routed: dict[ObjRef | tuple[ObjRef, str], tuple[str | None, datetime, bool]] = {}
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)   # the controller sets its own
        self.adopted: dict[str, dict[ObjRef, dict | None]] = {}   # release -> its adopted objects (None: not found)
        # release -> objects it would create that exist and are not its own (someone else's): held
        self.foreign: dict[str, dict[ObjRef, str]] = {}

    def observe(self, releases: list[Release], namespaces: set[str] | None = None) -> None:
        """Read what is live: every namespace Sluice applied to or a release wants (one LIST per kind
        per namespace), or with ``namespaces`` only those, keeping the rest as last observed (a
        focused pass; ``releases`` are then the ones it looks at)."""
        if self.namespaces is None:
            self.namespaces = self.cluster.read_inventory(self.inventory_namespace, self.inventory_name) or set()
        wanted = {r.namespace for r in releases}
        adopting = {r.key: self._read_adopted(r) for r in releases if adopt_refs(r)}
        looked = None if namespaces is None else {r.key for r in releases}
        if looked is None:
            self.live = self.cluster.list_managed(self.namespaces | wanted, self.instance)
            self.adopted = adopting
        else:
            spanned = set(namespaces) | wanted
            listed = self.cluster.list_managed(spanned, self.instance)
            self.live = {**{ref: o for ref, o in self.live.items() if ref.namespace not in spanned}, **listed}
            self.adopted = {**{k: v for k, v in self.adopted.items() if k not in looked}, **adopting}
        self._by_release = None
        for key, refs in list(self.foreign.items()):   # a clash holds until its object is gone or ours
            if looked is not None and key not in looked:
                continue
            self.foreign[key] = {ref: why for ref, why in refs.items() if self._not_ours(key, ref)}
            if not self.foreign[key]:
                del self.foreign[key]

    def _not_ours(self, key: str, ref: ObjRef) -> str | None:
        """Why ``ref``, which release ``key`` is about to create, must not be applied: it exists
        and is not that release's (an owner's object of the same name: an apply would take it
        over, replace its lists, and a prune would later delete it). A read that fails counts
        as a clash (fail closed)."""
        try:
            obj = self.cluster.get(ref)
        except (ClusterError, ClusterForbidden) as exc:
            return f"{ref.kind} {ref.namespace}/{ref.name} could not be read before creating it ({exc})"
        if obj is None or (release_of(obj) == key and _of_instance(obj, self.instance)):
            return None
        hint = {"Service": "rename it, or set spec.service.create: false to use it as it is",
                "Deployment": "rename it, or adopt it with spec.workloadRef (dropping workloadRef: promote a "
                              "Sluice revision first, then drop it)"}.get(ref.kind, "rename it or the release's service")
        return (f"{ref.kind} {ref.namespace}/{ref.name} exists and is not Sluice's: applying would take it over "
                f"(and a prune would delete it); remove it, {hint}")

    def foreign_problems(self, rel: Release) -> list[tuple[tuple[Any, ...], str]]:
        """(spec path, message) of each object ``rel`` would create that exists and is not its own."""
        where = ("spec", "service", "name") if "name" in rel.service else ("spec", "service")
        return [(where if ref.kind != "Deployment" else ("spec", "target"), why)
                for ref, why in sorted(self.foreign.get(rel.key, {}).items(), key=lambda kv: str(kv[0]))]

    def _read_adopted(self, rel: Release) -> dict[ObjRef, dict | None]:
        """GET each object ``rel`` adopts; one that cannot be read counts as missing (logged),
        which holds the release, never the others."""
        out: dict[ObjRef, dict | None] = {}
        for ref in adopt_refs(rel):
            try:
                out[ref] = self.cluster.get(ref)
            except (ClusterError, ClusterForbidden) as exc:
                log.error("release=%s cannot read adopted %s: %s", rel.key, ref, exc)
                out[ref] = None
        return out

    def readiness(self, rel: Release) -> dict[str, Readiness]:
        """Readiness of ``rel``'s revisions; an adopted VirtualService without its route
        raises (the controller holds the release with this message)."""
        ref = adopt.route_ref(rel)
        if ref:
            vs = self.adopted.get(rel.key, {}).get(adopt_refs(rel)[-1])
            if vs is None:
                raise ClusterError(f"{rel.path}: spec.service.virtualServiceRef: VirtualService {ref['name']} was "
                                   f"not found in namespace {rel.namespace}: the release is held")
            if adopt.route_index(vs, ref["route"]) is None:
                raise ClusterError(f"{rel.path}: spec.service.virtualServiceRef: VirtualService {ref['name']} has "
                                   f"no http route named {ref['route']!r}: the release is held")
            why = adopt.route_problem(rel, vs, ref["route"])
            if why:
                raise ClusterError(f"{rel.path}: spec.service.virtualServiceRef: VirtualService {ref['name']}: "
                                   f"{why}: the release is held")
        found = {r: o for r, o in self.adopted.get(rel.key, {}).items() if o is not None}
        return version_readiness(rel, {**self.live, **found})

    def _own(self, release: str | None) -> list[dict]:
        """The live objects labelled as ``release``'s, indexed once per observation."""
        if self._by_release is None:
            self._by_release = {}
            for obj in self.live.values():
                self._by_release.setdefault(release_of(obj), []).append(obj)
        return self._by_release.get(release, [])

    def objects_of(self, release: str) -> list[dict]:
        """The release's own objects, then those it adopts (read by name, never ours to prune)."""
        theirs = [o for o in self.adopted.get(release, {}).values() if o is not None]
        return self._own(release) + theirs

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
        intents = [adopt.read_intent(o)[1] for o in desired if adopt.is_intent(o)]
        adopted = [r for r in intents if r is not None]   # an adopted VirtualService's one route
        if not routes and not adopted:
            return Applied(None, known=False)
        since, estimated = [], False
        carried: list[tuple[ObjRef | tuple[ObjRef, str], str | None]] = []
        for obj in routes:
            ref = ref_of(obj)
            live = self.live.get(ref)
            if live is None or any(a.op != "delete" for a in diff(self._stamped([obj]), {ref: live})):
                return Applied(None, waiting=f"VirtualService {ref.namespace}/{ref.name} does not carry this "
                                             "step's routing yet")
            carried.append((ref, _fingerprint_of(live)))
        for route in adopted:
            ref = ObjRef("networking.istio.io/v1", "VirtualService", rel.namespace, route["name"])
            live = self.adopted.get(rel.key, {}).get(ref)
            if live is None or not adopt.carries(live, route["route"], route["destinations"]):
                return Applied(None, waiting=f"route {route['route']} of VirtualService {ref.namespace}/{ref.name} "
                                             "does not carry this step's routing yet")
            carried.append(((ref, route["route"]), adopt.route_fingerprint(live, route["route"])))
        for ref, print_ in carried:
            fp, at, guessed = self._routed.get(ref, (None, None, False))
            if fp != print_:
                at, guessed = self.clock(), True
                self._routed[ref] = (print_, at, True)   # kept: the same answer next pass
            since.append(at)
            estimated = estimated or guessed
        return Applied(max(since), estimated=estimated)

    def after_push(self, commits: list[str], settings: Mapping[str, Any]) -> None:
        return None   # Sluice applies itself, right after the push

    def _stamped(self, objs: list[dict]) -> list[dict]:
        return [stamp(o, instance=self.instance, live=self.live.get(ref_of(o))) for o in objs]

    def _actions(self, key: str, objs: list[dict], report) -> list[Action] | None:
        """One release's actions (create/update, and scale/route of what it adopts), or None
        when working them out failed (that release is then left as it runs, nothing of it pruned)."""
        try:
            live = {ref_of(o): o for o in self.objects_of(key)}
            theirs = set(self.adopted.get(key, {}))
            clash = [str(ref_of(o)) for o in objs if ref_of(o) in theirs]
            if clash:
                raise ClusterError(f"{', '.join(clash)} is adopted: Sluice never applies a whole adopted object")
            stamped = self._stamped(objs)
            actions = [a for a in diff(stamped, live) if a.op != "delete"]
            # a GET only for what is about to be created: is it someone else's under the same name?
            foreign = {a.ref: why for a in actions if a.op == "create" for why in [self._not_ours(key, a.ref)] if why}
            if foreign:
                self.foreign[key] = foreign
                raise ClusterError("; ".join(foreign.values()))
            return actions + self._adopted_actions(key, stamped)
        except Exception as exc:   # noqa: BLE001 - one release's bad data must not stop the rest
            report.errors.append(f"{key}: {type(exc).__name__}: {exc}")
            log.error("release=%s cannot compare with the cluster: %s", key, exc, exc_info=True)
            return None

    def detect_drift(self, key: str, objs: list[dict]) -> list[tuple[str, str]]:
        """(object, who) of ``key``'s objects someone other than Sluice changed (not git changes)."""
        if not self.objects_of(key):
            return []   # never applied yet: creation, not drift
        live = {ref_of(o): o for o in self.objects_of(key)}
        stamped = self._stamped(objs)
        return [(f"{a.ref.kind}/{a.ref.name}", a.by or "unknown")
                for a in diff(stamped, live) + self._adopted_actions(key, stamped) if a.why == "drift"]

    def _adopted_actions(self, key: str, stamped: list[dict]) -> list[Action]:
        """What the release's intent ConfigMap (adopt.intent) asks of its adopted objects and
        live does not have: a ``scale`` of the Deployment, a ``route`` patch of the
        VirtualService. A difference while the intent is unchanged since Sluice applied it is
        drift (someone else changed the field Sluice owns), recorded with who did it."""
        intent = next((o for o in stamped if adopt.is_intent(o)), None)
        if intent is None:
            return []
        mine = self.live.get(ref_of(intent))
        unchanged = _fingerprint_of(mine or {}) == _fingerprint_of(intent)
        out: list[Action] = []
        dep, route = adopt.read_intent(intent)
        found = self.adopted.get(key, {})
        if dep is not None:
            ref = ObjRef("apps/v1", "Deployment", ref_of(intent).namespace, dep["name"])
            live = found.get(ref)
            have = ((live or {}).get("spec") or {}).get("replicas")
            scaled = owners(live, "spec", "replicas") & SCALERS and FIELD_MANAGER not in owners(live, "spec", "replicas")
            if live is not None and have != dep["replicas"] and not (scaled and dep["replicas"]):
                text = unified(ref, {"spec": {"replicas": have}}, {"spec": {"replicas": dep["replicas"]}})
                out.append(Action("scale", ref, {"replicas": dep["replicas"]}, live, text,
                                  "drift" if unchanged and mine else "git", _writer(live, "spec", "replicas")))
        if route is not None:
            ref = ObjRef("networking.istio.io/v1", "VirtualService", ref_of(intent).namespace, route["name"])
            live = found.get(ref)
            if live is not None and not adopt.carries(live, route["route"], route["destinations"]):
                text = unified(ref, {"route": adopt.route_of(live, route["route"])}, {"route": route["destinations"]})
                out.append(Action("route", ref, route, live, text, "drift" if unchanged and mine else "git",
                                  _writer(live, "spec", "http")))
        return out

    def apply(self, desired: Mapping[str, list[dict]], *, keep: set[str], urgent: bool = False,
              settled: set[str] = frozenset(), scope: set[str] | None = None):
        """Create or update what differs from ``desired`` (release -> objects) and prune ours
        that no release wants. A ``settled`` release's objects are wanted but not compared: the
        controller found them as desired and neither they nor the release changed since."""
        from reconciler.controller import ApplyReport
        report = ApplyReport()
        keep = set(keep)
        actions: list[Action] = []
        for key, objs in desired.items():
            if key in settled:
                continue
            mine = self._actions(key, objs, report)
            if mine is None:
                keep.add(key)
            if mine is None or mine:
                report.touched.add(key)
            if mine:
                actions += mine
        if not urgent:   # prune: ours, of no desired or held release (never in an urgent apply)
            wanted = {ref_of(o) for objs in desired.values() for o in objs}
            if scope is None:
                pool = self.live
            else:   # a focused pass prunes only what it looked at: those releases' own objects
                pool = {ref_of(o): o for k in scope for o in self._own(k)}
            # --shards: never another replica's release (its shard's owner prunes it), nor one whose shard is lost
            owns = getattr(self, "owns", None)
            if owns is not None:
                keep |= {k for o in pool.values() if (k := release_of(o)) and not owns(k)}
            actions += diff([], {r: o for r, o in pool.items() if r not in wanted}, keep=keep)
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
        if action.op in ("scale", "route"):
            self._do_adopted(action, report)
            return
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


    def _do_adopted(self, action: Action, report) -> None:
        """Write the one field Sluice owns of an adopted object; keep what came back."""
        if action.op == "scale":
            applied = self.cluster.scale(action.ref, action.desired["replicas"])
        else:
            applied = self.cluster.patch_route(action.ref, action.desired["route"], action.desired["destinations"])
            route = action.desired["route"]
            self._routed[(action.ref, route)] = (adopt.route_fingerprint(applied, route), self.clock(), False)
        report.updated += 1
        if action.why == "drift":
            report.drifted.append(f"{action.ref.kind}/{action.ref.name}")
        for objs in self.adopted.values():   # every release adopting it sees what came back
            if action.ref in objs:
                objs[action.ref] = applied


def _writer(live: Mapping[str, Any], *path: str) -> str:
    """Who other than Sluice owns the field at ``path`` of an adopted object (the owner's
    other fields are theirs anyway), else its last writer."""
    who = sorted(owners(live, *path) - {FIELD_MANAGER})
    return ", ".join(who) if who else last_writer(live)


def adopt_refs(rel: Release) -> list[ObjRef]:
    """The objects ``rel`` adopts: its Deployment, then its VirtualService."""
    out = []
    if adopt.workload_ref(rel):
        out.append(ObjRef("apps/v1", "Deployment", rel.namespace, adopt.workload_ref(rel)))
    if adopt.route_ref(rel):
        out.append(ObjRef("networking.istio.io/v1", "VirtualService", rel.namespace, adopt.route_ref(rel)["name"]))
    return out


def _immutable(exc: Exception) -> bool:
    return "field is immutable" in str(exc)


def _legacy_selector(live: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> bool:
    """Live selector = desired selector + the version label: what older Sluice wrote."""
    def sel(obj):
        return (((obj or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    old, new = sel(live), sel(desired)
    return bool(live) and LABEL_VERSION in old and LABEL_VERSION not in new and \
        {k: v for k, v in old.items() if k != LABEL_VERSION} == new
