"""The GitOps applier that deploys ``rendered/``: Argo CD or Flux, read and nudged.

With ``--target git`` Sluice commits a step and Argo CD or Flux applies it
some time later. This module answers "which commit has the applier applied,
and is it healthy?" from the applier's own object, and asks the applier to
look at git now after a push (the nudge):

- Argo CD ``Application`` (``argoproj.io/v1alpha1``): ``status.sync.revision``
  (``status.sync.revisions`` for a multi-source Application), applied when
  ``status.sync.status`` is ``Synced`` and ``status.health.status`` is
  ``Healthy``. Nudge: the annotation ``argocd.argoproj.io/refresh: normal``
  (Argo CD compares with git at once and removes it).
- Flux ``Kustomization`` (``kustomize.toolkit.fluxcd.io/v1``):
  ``status.lastAppliedRevision`` (``main@sha1:<sha>``; ``main/<sha>`` or a bare
  sha from older Flux), applied when its ``Ready`` condition is True for the
  current generation (and a ``Healthy`` condition, where health checks run,
  is not False) and it is not suspended. Nudge: the annotation
  ``reconcile.fluxcd.io/requestedAt`` on the Kustomization and on its
  ``spec.sourceRef`` GitRepository (``source.toolkit.fluxcd.io/v1``).

Which applier deploys a release: ``--applier`` / ``--applier-object`` for all,
overridden per folder under ``releases/`` by ``appliers:`` in sluice.yaml.
Reads are one GET per object; the nudge is a merge patch of one annotation.
Both go through :class:`~reconciler.adapters.cluster.Cluster` (its error
translation and retries). The state functions are pure: object in, state out.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from reconciler.core.model import Release
from reconciler.errors import ClusterError, ClusterForbidden

log = logging.getLogger("sluice.applier")

ARGOCD, FLUX, NONE = "argocd", "flux", "none"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
REQUESTED_AT_ANNOTATION = "reconcile.fluxcd.io/requestedAt"
_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
OBJECT_RE = re.compile(rf"^({_NAME})/({_NAME})$")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def what(self) -> str:
        return f"{self.plural}.{self.group}"


APPLICATION = Resource("argoproj.io", "v1alpha1", "applications", "Application")
KUSTOMIZATION = Resource("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization")
GITREPOSITORY = Resource("source.toolkit.fluxcd.io", "v1", "gitrepositories", "GitRepository")
RESOURCES = {ARGOCD: APPLICATION, FLUX: KUSTOMIZATION}


@dataclass(frozen=True)
class ApplierRef:
    """One applier object: ``kind`` (argocd | flux) and where it is."""

    kind: str
    namespace: str
    name: str

    @property
    def resource(self) -> Resource:
        return RESOURCES[self.kind]

    def __str__(self) -> str:
        return f"{self.kind} {self.resource.kind} {self.namespace}/{self.name}"


def parse_object(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); ValueError when it is not that."""
    m = OBJECT_RE.match(text or "")
    if not m:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME (lower-case DNS names)")
    return m.group(1), m.group(3)


def ref_of(kind: str, obj: str | None) -> ApplierRef | None:
    """The applier ``kind`` at ``obj`` (``NAMESPACE/NAME``); None for ``none``."""
    if kind in (None, "", NONE):
        return None
    if kind not in RESOURCES:
        raise ValueError(f"unknown applier {kind!r} (argocd, flux or none)")
    if not obj:
        raise ValueError(f"applier {kind} needs its object: NAMESPACE/NAME of the "
                         f"{RESOURCES[kind].kind} that deploys rendered/")
    return ApplierRef(kind, *parse_object(obj))


def folder_of(rel: Release) -> str:
    """The release's folder under ``releases/`` (its namespace folder)."""
    parts = rel.path.split("/")
    return parts[1] if len(parts) > 2 else rel.namespace


@dataclass(frozen=True)
class Appliers:
    """Which applier deploys each folder's releases, how long a step waits for it, and
    whether Sluice nudges it after a push.

    ``default``: from ``--applier``/``--applier-object`` (None: no applier, the
    window opens when a step's commit lands). ``deadline``: seconds a step waits
    for the applier before the rollout is held (``--applier-deadline``, 10m: a few
    of Argo CD's or Flux's default poll intervals, so a lost nudge is not a hold).
    ``nudge``: patch the refresh annotation after each push (``--applier-nudge``).
    Per-folder overrides come from sluice.yaml ``appliers`` (schema-checked by
    the loader) and are read on each call, so a commit changes them."""

    default: ApplierRef | None = None
    deadline: float = 600.0
    nudge: bool = True

    def for_release(self, rel: Release, settings: Mapping[str, Any]) -> ApplierRef | None:
        overrides = _overrides(settings)
        folder = folder_of(rel)
        return overrides[folder] if folder in overrides else self.default

    def configured(self, settings: Mapping[str, Any]) -> list[ApplierRef]:
        """Every distinct applier object: the default and the folders' own."""
        refs = [self.default, *_overrides(settings).values()]
        return list(dict.fromkeys(r for r in refs if r is not None))

    def any(self, settings: Mapping[str, Any]) -> bool:
        return bool(self.configured(settings))


def _overrides(settings: Mapping[str, Any]) -> dict[str, ApplierRef | None]:
    out: dict[str, ApplierRef | None] = {}
    raw = (settings or {}).get("appliers") or {}
    if not isinstance(raw, Mapping):
        return out
    for folder, entry in raw.items():
        if not isinstance(entry, Mapping):
            continue
        try:
            out[folder] = ref_of(entry.get("applier"), entry.get("object"))
        except ValueError as exc:   # the schema refuses these; never fall back to "no applier"
            log.error("sluice.yaml appliers.%s: %s", folder, exc)
            continue
    return out


# --- what the applier says (pure) ----------------------------------------------------------
@dataclass(frozen=True)
class ApplierState:
    """What an applier object reports: the commits it is at, whether what it applied
    there is live and healthy (``done``), whether it is applied at all, healthy or
    not (``synced``: a rollout's first commit adds a Deployment that is not ready
    yet, and Argo CD's health folds that in; readiness judges it then, with
    progressDeadline), and a few words for people."""

    revisions: tuple[str, ...]
    done: bool
    words: str
    synced: bool = False

    @property
    def revision(self) -> str | None:
        return self.revisions[0] if self.revisions else None


def _sha(text: Any) -> str | None:
    """The commit sha in a revision string: ``<sha>``, ``main@sha1:<sha>``, ``main/<sha>``,
    ``sha1:<sha>``; None when there is none (never passed to git unchecked)."""
    if not isinstance(text, str):
        return None
    tail = re.split(r"[@/:]", text.strip())[-1].lower()
    return tail if _SHA.match(tail) else None


def argocd_state(obj: Mapping[str, Any]) -> ApplierState:
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    sync = status.get("sync") if isinstance(status.get("sync"), Mapping) else {}
    health = status.get("health") if isinstance(status.get("health"), Mapping) else {}
    raw = [sync.get("revision")] if sync.get("revision") else list(sync.get("revisions") or [])
    revisions = tuple(s for s in map(_sha, raw) if s)
    sync_status, health_status = str(sync.get("status") or "Unknown"), str(health.get("status") or "Unknown")
    synced = sync_status == "Synced" and bool(revisions)
    done = synced and health_status == "Healthy"
    return ApplierState(revisions, done, f"{sync_status}, {health_status}", synced=synced)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


def flux_state(obj: Mapping[str, Any]) -> ApplierState:
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    sha = _sha(status.get("lastAppliedRevision"))
    ready = _condition(status, "Ready")
    healthy = _condition(status, "Healthy")
    observed = int((ready or {}).get("observedGeneration") or status.get("observedGeneration") or 0)
    if ready is None:
        words = "no Ready condition yet"
    else:
        words = f"Ready={ready.get('status', 'Unknown')}"
        if ready.get("status") != "True" and ready.get("reason"):
            words += f" {ready['reason']}"
        if observed < generation:
            words += f", generation {generation} not observed yet"
    if healthy is not None and healthy.get("status") == "False":
        words += ", Healthy=False"
    if spec.get("suspend"):
        words = "suspended, " + words
    done = bool(sha) and ready is not None and ready.get("status") == "True" and observed >= generation \
        and not (healthy is not None and healthy.get("status") == "False") and not spec.get("suspend")
    return ApplierState((sha,) if sha else (), done, words, synced=done)


STATES = {ARGOCD: argocd_state, FLUX: flux_state}


# --- the API calls -------------------------------------------------------------------
class ApplierClient:
    """GET and nudge applier objects through a :class:`Cluster` (read: get; nudge: patch)."""

    def __init__(self, cluster):
        self.cluster = cluster

    def _path(self, res: Resource, namespace: str, name: str) -> str:
        return self.cluster._path(res.group, res.version, res.plural, namespace, name)

    def get(self, res: Resource, namespace: str, name: str) -> dict | None:
        """The object, or None when it does not exist; ClusterError/ClusterForbidden otherwise."""
        data = self.cluster._call("get", res.what, namespace, "GET", self._path(res, namespace, name))
        if data is not None and not isinstance(data, dict):
            raise ClusterError(f"get {res.what} {namespace}/{name}: not an object")
        return data

    def annotate(self, res: Resource, namespace: str, name: str, key: str, value: str) -> None:
        """A JSON merge patch of one annotation (the field manager is ``sluice``)."""
        self.cluster._call("patch", res.what, namespace, "PATCH", self._path(res, namespace, name),
                           query=[("fieldManager", "sluice")],
                           body={"metadata": {"annotations": {key: value}}},
                           content_type="application/merge-patch+json")


def read_state(client: ApplierClient, ref: ApplierRef) -> tuple[dict | None, ApplierState | None, str]:
    """(object, state, why not): the applier's object and what it reports, or why it
    cannot be told (missing, forbidden, unreachable, no status yet). Never raises."""
    try:
        obj = client.get(ref.resource, ref.namespace, ref.name)
    except ClusterForbidden:
        return None, None, (f"forbidden to read it: grant get on {ref.resource.what} in namespace "
                            f"{ref.namespace} (docs/{ref.kind}.md)")
    except (ClusterError, ValueError) as exc:   # ValueError: an answer that is not JSON
        return None, None, f"cannot read it: {exc}"
    if obj is None:
        return None, None, "not found"
    if not isinstance(obj.get("status"), Mapping) or not obj["status"]:
        return obj, None, "no status yet"
    try:
        return obj, STATES[ref.kind](obj), ""
    except (TypeError, ValueError) as exc:   # a status of the wrong shape: say so, never guess
        return obj, None, f"unreadable status ({type(exc).__name__})"


def rfc3339(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def nudge(client: ApplierClient, ref: ApplierRef, obj: Mapping[str, Any] | None, now: datetime) -> list[str]:
    """Ask ``ref`` to look at git now; returns the objects annotated. Raises
    ClusterError/ClusterForbidden (the caller logs them)."""
    if ref.kind == ARGOCD:
        client.annotate(APPLICATION, ref.namespace, ref.name, REFRESH_ANNOTATION, "normal")
        return [f"Application {ref.namespace}/{ref.name}"]
    stamp = rfc3339(now)
    done = []
    if obj is None:
        obj = client.get(KUSTOMIZATION, ref.namespace, ref.name) or {}
    source = (obj.get("spec") or {}).get("sourceRef") or {}
    if source.get("kind") == "GitRepository" and source.get("name"):
        ns = source.get("namespace") or ref.namespace
        try:   # the source first (it fetches the commit); refused, the Kustomization is still nudged
            client.annotate(GITREPOSITORY, ns, source["name"], REQUESTED_AT_ANNOTATION, stamp)
            done.append(f"GitRepository {ns}/{source['name']}")
        except (ClusterError, ClusterForbidden) as exc:
            log.warning("cannot nudge GitRepository %s/%s (deploy/gitops/flux.yaml names it): %s",
                        ns, source["name"], exc)
    client.annotate(KUSTOMIZATION, ref.namespace, ref.name, REQUESTED_AT_ANNOTATION, stamp)
    done.append(f"Kustomization {ref.namespace}/{ref.name}")
    return done
