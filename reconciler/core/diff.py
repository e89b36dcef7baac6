"""Desired against live: a normalised comparison and the minimal actions.

Only fields Sluice sets count. A field present live but absent from the
desired object (server defaults such as a Deployment's revisionHistoryLimit,
a Service's clusterIP, a container's terminationMessagePath; metadata the
server owns: resourceVersion, uid, generation, managedFields,
creationTimestamp; the whole ``status``) is never drift. So the comparison is
"is desired a subset of live", with lists compared item by item.

``render_diff`` prints a ``kubectl diff``-style unified YAML diff that plan
and ``status --live`` reuse.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, NamedTuple

from reconciler.core.model import LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_RELEASE_NS, MANAGED_BY_VALUE
from reconciler.core.serialize import canonical, dump_yaml

SERVER_META = ("resourceVersion", "uid", "generation", "managedFields", "creationTimestamp", "selfLink",
               "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers")
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration")


class ObjRef(NamedTuple):
    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} -n {self.namespace}"


class Action(NamedTuple):
    op: str                  # create | update | delete
    ref: ObjRef
    desired: dict | None
    live: dict | None
    text: str                # unified diff


def ref_of(obj: Mapping[str, Any]) -> ObjRef:
    meta = obj.get("metadata") or {}
    return ObjRef(obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def release_of(obj: Mapping[str, Any]) -> str | None:
    """``ns/name`` of the release owning ``obj``, None when Sluice does not own it."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE or not labels.get(LABEL_RELEASE):
        return None
    return f"{labels.get(LABEL_RELEASE_NS) or (obj.get('metadata') or {}).get('namespace')}/{labels[LABEL_RELEASE]}"


def normalise(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without what the server owns (for display and comparison)."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_META}
    if meta.get("annotations"):
        ann = {k: v for k, v in meta["annotations"].items() if k not in SERVER_ANNOTATIONS}
        if ann:
            meta["annotations"] = ann
        else:
            meta.pop("annotations")
    out["metadata"] = meta
    return out


def contains(live: Any, desired: Any) -> bool:
    """Does ``live`` carry every field of ``desired`` with the same value?"""
    if isinstance(desired, dict):   # plain dicts from JSON/YAML: cheaper than the Mapping ABC
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)) and not isinstance(desired, bool):
        return float(desired) == float(live)
    return live == desired


def _project(live: Any, desired: Any) -> Any:
    """``live`` cut down to the fields ``desired`` has: what a diff should show."""
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        return {k: _project(live[k], v) for k, v in desired.items() if k in live}
    if isinstance(desired, list) and isinstance(live, list):
        return [_project(lv, dv) for lv, dv in zip(live, desired)] + list(live[len(desired):])
    return live


def unified(ref: ObjRef, live: Mapping | None, desired: Mapping | None) -> str:
    a = dump_yaml([canonical(_project(normalise(live), desired or live))]) if live else ""
    b = dump_yaml([canonical(desired)]) if desired else ""
    name = f"{ref.api_version}.{ref.kind}.{ref.namespace}.{ref.name}"
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True),
                                        f"live/{name}", f"desired/{name}"))


def diff(desired: Iterable[Mapping[str, Any]], live: Mapping[ObjRef, Mapping[str, Any]], *,
         keep: set[str] = frozenset()) -> list[Action]:
    """The actions that make ``live`` match ``desired``.

    Objects Sluice owns that nothing desires are pruned; ``keep`` names
    releases whose objects are left alone (invalid in git: invariant 7).
    Objects without Sluice's ownership labels are never touched.
    """
    actions: list[Action] = []
    wanted = {ref_of(o): dict(o) for o in desired}
    for ref, obj in sorted(wanted.items()):
        cur = live.get(ref)
        if cur is None:
            actions.append(Action("create", ref, obj, None, unified(ref, None, obj)))
        elif not contains(cur, obj):
            actions.append(Action("update", ref, obj, dict(cur), unified(ref, cur, obj)))
    for ref, obj in sorted(live.items()):
        owner = release_of(obj)
        if ref in wanted or owner is None or owner in keep:
            continue   # wanted, not ours, or its release is invalid and left as it runs
        # ours and not wanted: its release left git, or a retired version of a known one
        actions.append(Action("delete", ref, None, dict(obj), unified(ref, obj, None)))
    return actions


def render_diff(actions: Iterable[Action]) -> str:
    return "".join(a.text for a in actions)
