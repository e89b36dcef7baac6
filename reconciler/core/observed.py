"""What runs, read back from objects: the live cluster's, or the rendered
manifests an applier (Argo CD, Flux) applies.

Pure: objects in, plain data out. The controller uses it where git's record
cannot be trusted or is missing (a lost status block is rebuilt from what
runs; a status that matches nothing that runs is held), and to find an
urgent rollback recorded on the VirtualService before its commit landed.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, NamedTuple

from reconciler.core import adopt
from reconciler.core.diff import owners
from reconciler.core.model import FIELD_MANAGER, LABEL_VERSION, Release

ROLLBACK_ANNOTATION = "sluice.dev/rollback"
REVISION_HASH = "sluice.dev/revision-hash"           # on each Deployment: the content hash of its revision   # on the VirtualService: a rollback applied, its commit pending


def _labels(obj: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    cur: Any = obj
    for key in path:
        cur = (cur or {}).get(key) if isinstance(cur, Mapping) else None
    return cur if isinstance(cur, Mapping) else {}


def _of(rel: Release, objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == kind and (o.get("metadata") or {}).get("namespace") == rel.namespace]


def _weights(rel: Release, objects: list[Mapping[str, Any]]) -> dict[str, int]:
    for vs in _of(rel, objects, "VirtualService"):
        if (vs.get("metadata") or {}).get("name") != rel.name:
            continue
        spec = vs.get("spec") or {}
        # http first; a release with only TCP or TLS ports carries its weights on tcp/tls routes
        # (matched on port only, so every one of them is default traffic)
        routes = [r for r in spec.get("http") or [] if not r.get("match")]   # a header/cookie route serves the few
        for route in routes + list(spec.get("tcp") or []) + list(spec.get("tls") or []):
            out: dict[str, int] = {}
            for dest in route.get("route") or []:
                subset = (dest.get("destination") or {}).get("subset")
                if subset:
                    out[subset] = int(dest.get("weight", 100))
            return out
    return {}


def running(rel: Release, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Versions of ``rel`` that have a Deployment: ``{version, image, replicas, weight[, hash]}``
    each, the one serving most traffic first (``replicas`` 0: scaled down, e.g. rolled back)."""
    objects = list(objects)
    weights = _weights(rel, objects) if rel.is_mesh else {}
    container = rel.target_container
    out = []
    ref = adopt.workload_ref(rel)
    for dep in _of(rel, objects, "Deployment"):
        name = (dep.get("metadata") or {}).get("name", "")
        if ref and name == ref:   # spec.workloadRef: reported with its template, for adoption
            out.append({**adopt.running_entry(rel, dep), "weight": weights.get(_labels(
                dep, "spec", "template", "metadata", "labels").get(LABEL_VERSION), 0)})
            continue
        if rel.is_mesh and not name.startswith(f"{rel.name}-") or not rel.is_mesh and name != rel.name:
            continue
        spec = dep.get("spec") or {}
        version = _labels(spec, "template", "metadata", "labels").get(LABEL_VERSION)
        replicas = spec.get("replicas", 1)
        if not version:
            continue
        pod = _labels(spec, "template", "spec")
        image = next((c.get("image", "") for c in pod.get("containers") or [] if c.get("name") == container), "")
        weight = weights.get(version, 0) if rel.is_mesh else 100
        entry = {"version": version, "image": image, "replicas": replicas, "weight": weight}
        digest = _labels(dep, "metadata", "annotations").get(REVISION_HASH)
        if digest:
            entry["hash"] = digest
        out.append(entry)
    return sorted(out, key=lambda v: (-v["weight"], -bool(v["replicas"]), v["version"]))


class Pending(NamedTuple):
    """A rollback recorded on the VirtualService: ``mark`` to honour, or a ``note``
    on one that does not count (``hold``: the release holds rather than guess)."""

    mark: dict[str, Any] | None = None
    note: str | None = None
    hold: bool = False


def pending_rollback(rel: Release, objects: Iterable[Mapping[str, Any]]) -> Pending:
    """The rollback recorded on the release's VirtualService, if any. A mark counts
    only when Sluice's field manager owns the annotation (anyone who can edit the
    VirtualService could write one); one that cannot be read holds the release."""
    for vs in _of(rel, objects, "VirtualService"):
        if (vs.get("metadata") or {}).get("name") != rel.name:
            continue
        raw = _labels(vs, "metadata", "annotations").get(ROLLBACK_ANNOTATION)
        if raw is None:
            return Pending()
        writers = owners(vs, "metadata", "annotations", ROLLBACK_ANNOTATION)
        if FIELD_MANAGER not in writers and owners(vs):
            return Pending(note=f"VirtualService {rel.name} carries {ROLLBACK_ANNOTATION} written by "
                                f"{', '.join(sorted(writers)) or 'someone'}, not by Sluice: ignored")
        try:
            data = json.loads(raw)
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            return Pending(note=f"VirtualService {rel.name} has an unreadable {ROLLBACK_ANNOTATION}: holding until "
                                f"it is fixed", hold=True)
        return Pending(mark=data)
    return Pending()


def rollback_annotation(status: Mapping[str, Any]) -> str:
    """The annotation's value for a rolled-back ``status``: which version, when, why,
    the phase, and the evidence, so that the commit that lands later says what the
    decision saw, at the moment it was made."""
    rolled_back = status.get("rolledBack") or {}
    keep = ("version", "image", "revision", "hash", "reason", "at")
    out = {k: rolled_back[k] for k in keep if k in rolled_back}
    out["phase"] = status.get("phase", "RolledBack")
    if status.get("lastAnalysis"):
        out["lastAnalysis"] = status["lastAnalysis"]
    return json.dumps(out, sort_keys=True)
