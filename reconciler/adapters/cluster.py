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
from typing import Any, Callable, Iterable, Mapping

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from reconciler.core.diff import Action, ObjRef, diff, ref_of, release_of
from reconciler.core.model import FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY_VALUE, Readiness, Release
from reconciler.core.readiness import deployment_readiness
from reconciler.errors import ClusterError, ClusterForbidden

log = logging.getLogger("sluice.cluster")
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
# (apiVersion, kind) -> (group, version, plural)
KINDS = {
    ("v1", "Service"): ("", "v1", "services"),
    ("apps/v1", "Deployment"): ("apps", "v1", "deployments"),
    ("networking.istio.io/v1", "DestinationRule"): ("networking.istio.io", "v1", "destinationrules"),
    ("networking.istio.io/v1", "VirtualService"): ("networking.istio.io", "v1", "virtualservices"),
}


class ClusterConflict(ClusterError):
    """409: someone else changed the object; retried."""


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
    def list_managed(self, namespaces: Iterable[str]) -> dict[ObjRef, dict]:
        """Every Sluice-owned object: one LIST per kind per namespace."""
        out: dict[ObjRef, dict] = {}
        for ns in sorted(set(namespaces)):
            for (api_version, kind), (group, version, plural) in KINDS.items():
                data = self._call("list", self._what(group, plural), ns, "GET",
                                  self._path(group, version, plural, ns), query=[("labelSelector", SELECTOR)])
                for item in (data or {}).get("items") or []:
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


def version_readiness(rel: Release, live: Mapping[ObjRef, dict], now=None) -> dict[str, Readiness]:
    """Readiness of each live version of ``rel`` from the listed Deployments."""
    out = {}
    for ver in (rel.status.get("canary"), rel.status.get("stable"), rel.target):
        if not ver or not ver.get("version"):
            continue
        v = ver["version"]
        if rel.is_mesh:
            dep = live.get(ObjRef("apps/v1", "Deployment", rel.namespace, f"{rel.name}-{v}"))
        else:
            dep = live.get(ObjRef("apps/v1", "Deployment", rel.namespace, rel.name))
            labels = ((((dep or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if labels.get("version") != v:
                dep = None if dep is None else {**dep, "status": {}}   # not rolled to this version yet
        out[v] = deployment_readiness(v, dep)
    return out


class KubernetesTarget:
    """The ``kubernetes`` target of the controller."""

    name = "kubernetes"

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.live: dict[ObjRef, dict] = {}
        self.namespaces: set[str] = set()

    def observe(self, releases: list[Release]) -> dict[str, dict[str, Readiness]]:
        self.namespaces |= {r.namespace for r in releases}
        self.live = self.cluster.list_managed(self.namespaces)
        return {rel.key: version_readiness(rel, self.live) for rel in releases}

    def detect_drift(self, desired: Mapping[str, list[dict]]) -> dict[str, list[str]]:
        """Objects of each release that differ from (or are missing in) the cluster."""
        out: dict[str, list[str]] = {}
        by_release: dict[str | None, dict[ObjRef, dict]] = {}
        for ref, obj in self.live.items():
            by_release.setdefault(release_of(obj), {})[ref] = obj
        for key, objs in desired.items():
            live = by_release.get(key)
            if not live:
                continue   # never applied yet: creation, not drift
            found = [f"{a.ref.kind}/{a.ref.name}" for a in diff(objs, live) if a.op in ("update", "create")]
            if found:
                out[key] = found
        return out

    def apply(self, desired: Mapping[str, list[dict]], *, keep: set[str], urgent: bool = False):
        from reconciler.controller import ApplyReport
        report = ApplyReport()
        objs = [o for objs in desired.values() for o in objs]
        if urgent:   # only the named releases' objects; never prune here
            live = {r: o for r, o in self.live.items() if release_of(o) in desired}
            actions = [a for a in diff(objs, live, keep=keep) if a.op != "delete"]
        else:
            actions = diff(objs, self.live, keep=keep)
        for action in actions:
            try:
                self._do(action, report)
            except (ClusterError, ClusterForbidden) as exc:
                report.errors.append(str(exc))
                log.error("release=%s %s %s failed: %s", release_of(action.desired or action.live) or "-",
                          action.op, action.ref, exc)
        return report

    def _do(self, action: Action, report) -> None:
        if action.op == "delete":
            self.cluster.delete(action.ref)
            self.live.pop(action.ref, None)
            report.deleted += 1
            return
        applied = self.cluster.apply(action.desired)
        if action.op == "create":
            report.created += 1
        else:
            report.updated += 1
        self.live[action.ref] = applied or action.desired
        return
