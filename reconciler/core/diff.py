"""Desired against live: what changed in git, what someone else changed, and
the minimal actions.

Two questions, kept apart (a real API server answers neither by value
comparison alone: it fills defaults, canonicalises quantities, and merges
keyed lists with other managers' items):

- *Did git change?* Every object Sluice applies carries the fingerprint of
  its desired content (``sluice.dev/applied``, a hash of the rendered
  object). A live fingerprint that differs means git changed: apply. The
  server-side apply then removes what Sluice applied before and omits now
  (a removed ``resources.limits``, a VirtualService ``mirror`` after a
  rollback), which no subset comparison could see.
- *Did someone else change it?* Same fingerprint, but live no longer holds a
  field Sluice applies: drift, put back and recorded with who did it (the
  ``managedFields`` manager of the last update). Fields only the server or
  other managers added (defaults, injected annotations, another manager's
  keyed list items) are not drift. Quantities compare canonically (``1000m``
  equals ``1``), keyed lists (containers by name, ports by port) by key.

``spec.replicas`` follows the spec, explicitly. A release without
``spec.autoscaling`` owns it: Sluice writes it (forced, as every field it
applies), so anyone else's change is drift, put back, whoever made it
(``kubectl scale``, and an HPA or KEDA scaler Sluice was not told about: it
will be fought; declare ``spec.autoscaling``), and a release whose
autoscaling was switched off takes the count back from
``kube-controller-manager`` on the next pass. A release with
``spec.autoscaling`` renders its Deployments without ``replicas`` (but a
rolled-back version's 0): Sluice never writes them, and the server's default
(1) is not drift. Switching a running release to autoscaling hands the
field over (``handed_over``) without dropping its pods.

``render_diff`` prints a ``kubectl diff``-style unified YAML diff that plan
and ``status --live`` reuse.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, NamedTuple

import hashlib
import json
from decimal import Decimal, InvalidOperation

from reconciler.core.model import (
    FIELD_MANAGER, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_RELEASE_NS, MANAGED_BY_VALUE,
)
from reconciler.core.serialize import canonical, dump_yaml

SERVER_META = ("resourceVersion", "uid", "generation", "managedFields", "creationTimestamp", "selfLink",
               "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers")
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration")
APPLIED_ANNOTATION = "sluice.dev/applied"   # fingerprint of the desired object Sluice last applied
# field managers that scale Deployments: the HorizontalPodAutoscaler (and KEDA, through its HPA) writes
# replicas as kube-controller-manager (handed_over stops holding the count once it has)
SCALERS = frozenset({"kube-controller-manager"})
# keyed lists a real API server merges across managers (strategic merge keys of the core types)
MERGE_KEYS = {"containers": ("name",), "initContainers": ("name",), "env": ("name",), "volumes": ("name",),
              "volumeMounts": ("mountPath",), "imagePullSecrets": ("name",),
              "ports": (("containerPort", "protocol"), ("port", "protocol"))}
_QUANTITY_SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
                    "P": 10 ** 15, "E": 10 ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
                    "Pi": 2 ** 50, "Ei": 2 ** 60}


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
    why: str = ""            # create | git | drift | prune
    by: str = ""             # for drift: the manager that last changed the object


def ref_of(obj: Mapping[str, Any]) -> ObjRef:
    meta = obj.get("metadata") or {}
    return ObjRef(obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def fingerprint(obj: Mapping[str, Any]) -> str:
    """A short hash of an object's desired content (without the fingerprint itself)."""
    meta = dict(obj.get("metadata") or {})
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_ANNOTATION}
    meta["annotations"] = ann
    data = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def owners(live: Mapping[str, Any] | None, *path: str) -> set[str]:
    """Managers owning the field at ``path`` (e.g. "spec", "replicas") per managedFields."""
    out = set()   # (no path: every manager listed)
    for entry in ((live or {}).get("metadata") or {}).get("managedFields") or []:
        node: Any = entry.get("fieldsV1") or {}
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, Mapping) else None
        if node is not None:
            out.add(entry.get("manager", ""))
    return out


def handed_over(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> int | None:
    """The live replica count Sluice keeps applying while it hands ``replicas`` to an
    autoscaler: the desired Deployment has none (an HPA owns them now), but Sluice still
    owns the live field and no scaler has changed it yet. Leaving it out at once would
    make the API server drop the field and default it to 1 pod; once the HPA changes it
    (taking it over in managedFields) Sluice leaves it out. Never 0 (a version scaled
    down by a rollback, now rolling out again): an HPA does nothing for a target at 0
    replicas, so the field is dropped, the server defaults it to 1 and the HPA scales
    from its minimum."""
    spec = desired.get("spec")
    if desired.get("kind") != "Deployment" or not isinstance(spec, Mapping) or "replicas" in spec:
        return None
    current = ((live or {}).get("spec") or {}).get("replicas")
    who = owners(live, "spec", "replicas")
    if not current or FIELD_MANAGER not in who or who & SCALERS:
        return None
    return int(current)


def stamp(obj: Mapping[str, Any], *, instance: str, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``obj`` as Sluice applies it: its instance label, the live replica count it
    still holds while handing them to an autoscaler, and the fingerprint of that content."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta["labels"] = dict(sorted({**(meta.get("labels") or {}), LABEL_INSTANCE: instance}.items()))
    out["metadata"] = meta
    held = handed_over(out, live)
    if held is not None:
        out["spec"] = {**out["spec"], "replicas": held}
    meta["annotations"] = dict(sorted({**(meta.get("annotations") or {}), APPLIED_ANNOTATION: fingerprint(out)}.items()))
    return out


def last_writer(live: Mapping[str, Any]) -> str:
    """Who last changed ``live`` other than Sluice, from managedFields (``unknown`` if it does not say)."""
    entries = [e for e in ((live.get("metadata") or {}).get("managedFields") or [])
               if e.get("manager") != FIELD_MANAGER and e.get("operation") == "Update"]
    if not entries:
        return "unknown"
    return max(entries, key=lambda e: str(e.get("time", ""))).get("manager") or "unknown"


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


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity's value (``500m``, ``1Gi``, ``0.5``, ``1e3``), None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    for suffix in sorted(_QUANTITY_SUFFIX, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, scale = text[: -len(suffix)], _QUANTITY_SUFFIX[suffix]
            break
    else:
        number, scale = text, 1
    try:
        return Decimal(number) * scale
    except InvalidOperation:
        return None


def _key_of(item: Mapping[str, Any], key: Any) -> Any:
    if isinstance(key, tuple):   # (containerPort, protocol): protocol defaults to TCP on the server
        return (item.get(key[0]), item.get(key[1]) or "TCP")
    return item.get(key)


def _keyed(live: list, desired: list, field: str) -> bool | None:
    """Keyed-list containment (each desired item found by its merge key); None if not keyed."""
    keys = MERGE_KEYS.get(field)
    if not keys or not desired or not all(isinstance(d, dict) for d in desired):
        return None
    key = next((k for k in keys if all((k[0] if isinstance(k, tuple) else k) in d for d in desired)), None)
    if key is None:
        return None
    by_key = {_key_of(item, key): item for item in live if isinstance(item, dict)}
    return all(_key_of(d, key) in by_key and contains(by_key[_key_of(d, key)], d, field) for d in desired)


def contains(live: Any, desired: Any, field: str = "", *, keyed: bool = True) -> bool:
    """Does ``live`` carry every field of ``desired`` with the same value, as a
    server that defaults, canonicalises quantities and merges keyed lists stores it?"""
    if isinstance(desired, dict):   # plain dicts from JSON/YAML: cheaper than the Mapping ABC
        return isinstance(live, dict) and all(k in live and contains(live[k], v, k, keyed=keyed)
                                              for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list):
            return False
        by_key = _keyed(live, desired, field) if keyed else None
        if by_key is not None:
            return by_key
        return len(live) == len(desired) and all(contains(lv, dv, field, keyed=keyed) for lv, dv in zip(live, desired))
    if live == desired:
        return True
    if isinstance(desired, (int, float, str)) and not isinstance(desired, bool) and type(live) is not bool:
        if isinstance(desired, str) and isinstance(live, str) and field not in ("cpu", "memory", "ephemeral-storage") \
                and not field.startswith(("hugepages-", "requests.", "limits.")):
            return False   # only resource amounts are canonicalised by the server
        a, b = quantity(desired), quantity(live)
        return a is not None and a == b
    return False


def _istio(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("networking.istio.io/")


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
            actions.append(Action("create", ref, obj, None, unified(ref, None, obj), "create"))
            continue
        applied = ((cur.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION)
        stamped = ((obj.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION)
        if stamped is not None and applied != stamped:
            actions.append(Action("update", ref, obj, dict(cur), unified(ref, cur, obj), "git"))
        elif not contains(cur, obj, keyed=not _istio(obj)):
            actions.append(Action("update", ref, obj, dict(cur), unified(ref, cur, obj), "drift", last_writer(cur)))
    for ref, obj in sorted(live.items()):
        owner = release_of(obj)
        if ref in wanted or owner is None or owner in keep:
            continue   # wanted, not ours, or its release is invalid and left as it runs
        # ours and not wanted: its release left git, or a retired version of a known one
        actions.append(Action("delete", ref, None, dict(obj), unified(ref, obj, None), "prune"))
    return actions


def render_diff(actions: Iterable[Action]) -> str:
    return "".join(a.text for a in actions)
