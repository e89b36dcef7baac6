"""Adopting what already runs: an existing Deployment (``spec.workloadRef``) and
an existing VirtualService (``spec.service.virtualServiceRef``).

Sluice owns only a sliver of an adopted object, and this module says which:

- of the Deployment, ``spec.replicas`` alone (it is scaled as the stable
  version, to 0 once a new revision is promoted, back up on a rollback to it).
  Its pod template is copied once, when Sluice adopts it, into
  ``status.adopted`` (git records what runs) and is the template of every new
  revision; the Deployment's own template is never written, so its pods never
  restart because of Sluice. Its pods are the stable subset through the
  ``version`` label they already carry (its selector must hold that label, so
  a new revision's pods, labelled with their own version, are never its pods);
- of the VirtualService, the ``route`` (destinations and weights) of the one
  HTTP route named in the reference. Every other route and field is its
  owner's, and a change the owner makes there is never drift.

Why a JSON patch for the route, not server-side apply: Istio's CRD declares
no ``x-kubernetes-list-type`` on ``spec.http``, so a real API server treats
that list as atomic, and an apply naming one route would own (and replace)
the whole list. Sluice sends an RFC 6902 patch instead: a ``test`` of the
route's name at its index, then an ``add`` (a set) of that route's ``route``. If
the owner moved or renamed routes in between, the test fails (422) and the
caller re-reads and tries again; nothing else in the object is written.

Render (pure) cannot know the target, so what Sluice wants of adopted objects
travels as one ConfigMap of its own, ``<release>-adopted`` (``intent``): the
kubernetes target turns it into the scale and the route patch; the git
target writes it to ``rendered/`` like any object, where an applier stores it
and nothing else (a partial VirtualService there would replace the owner's
routes). Pure: plain data in and out.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from reconciler.core.model import LABEL_APP, LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_RELEASE_NS, LABEL_VERSION, \
    MANAGED_BY_VALUE, Release

INTENT_SUFFIX = "-adopted"
DEPLOYMENT_KEY = "deployment"
ROUTE_KEY = "virtualService"


def workload_ref(rel: Release) -> str | None:
    """The name of the adopted Deployment, if the release names one."""
    return (rel.spec.get("workloadRef") or {}).get("name")


def route_ref(rel: Release) -> Mapping[str, Any] | None:
    """``{name, route}`` of the adopted VirtualService, if the release names one."""
    return rel.service.get("virtualServiceRef") or None


def claims(rel: Release) -> list[tuple[tuple[Any, ...], str]]:
    """(spec path, what) of each adopted object part ``rel`` claims: its Deployment, its
    route of a VirtualService. One release only may claim each (loader refuses all
    claimants): two would write its replicas or destinations in turn, every pass."""
    out = []
    if workload_ref(rel):
        out.append((("spec", "workloadRef", "name"), f"Deployment {rel.namespace}/{workload_ref(rel)}"))
    ref = route_ref(rel)
    if ref and ref.get("name") and ref.get("route"):
        out.append((("spec", "service", "virtualServiceRef", "route"),
                    f"route {ref['route']!r} of VirtualService {rel.namespace}/{ref['name']}"))
    return out


def adopted(rel: Release) -> Mapping[str, Any]:
    """``status.adopted``: ``{kind, name, revision, template}`` once Sluice adopted the Deployment."""
    return rel.status.get("adopted") or {}


def revision_of(rel: Release) -> str | None:
    """The revision name the adopted Deployment runs as (its pods' ``version`` label)."""
    return adopted(rel).get("revision") if workload_ref(rel) else None


def template_of(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """A Deployment's pod template in the shape of ``spec.template`` (pod spec plus
    ``labels`` and ``annotations``), as live holds it (server defaults included)."""
    tmpl = (deployment.get("spec") or {}).get("template") or {}
    meta = tmpl.get("metadata") or {}
    out = copy.deepcopy(dict(tmpl.get("spec") or {}))
    for key in ("labels", "annotations"):
        if meta.get(key):
            out[key] = dict(meta[key])
    return out


def running_entry(rel: Release, deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The adopted Deployment as ``observed.running`` reports it: its version label,
    the target container's image, replicas, its template and whose it is."""
    tmpl = template_of(deployment)
    labels = tmpl.get("labels") or {}
    container = rel.target_container_in(tmpl)
    image = next((c.get("image", "") for c in tmpl.get("containers") or [] if c.get("name") == container), "")
    meta = deployment.get("metadata") or {}
    owner = (meta.get("labels") or {})
    return {"version": labels.get(LABEL_VERSION) or "", "image": image,
            "replicas": (deployment.get("spec") or {}).get("replicas", 1), "weight": 0,
            "adopted": meta.get("name"), "template": tmpl,
            "selector": dict(((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}),
            "managedBy": owner.get(LABEL_MANAGED_BY), "release": owner.get(LABEL_RELEASE) and
            f"{owner.get(LABEL_RELEASE_NS) or meta.get('namespace')}/{owner[LABEL_RELEASE]}"}


def problems(rel: Release, running: tuple[Mapping[str, Any], ...] | None) -> list[tuple[tuple[Any, ...], str]]:
    """Why ``spec.workloadRef`` cannot be adopted (or keep serving), as (path, message):
    not found, another Sluice release's, no ``version`` label in its pods and its
    selector, pods the release's Service would not select, no target container."""
    name = workload_ref(rel)
    if not name:
        return []
    where = ("spec", "workloadRef", "name")
    if not adopted(rel) and rel.status.get("stable"):
        return [(where, f"spec.workloadRef names {name} but the status records no adoption (the release ran "
                        "before): remove the status block so Sluice adopts it, or remove spec.workloadRef")]
    if running is None:
        return []
    found = next((v for v in running if v.get("adopted") == name), None)
    stable_is_it = not rel.status.get("stable") or revision_of(rel) == (rel.status.get("stable") or {}).get("revision")
    if found is None:
        if not stable_is_it:
            return []   # promoted past it: the owner may delete it; a rollback to it is then refused by the cluster
        return [(where, f"Deployment {name} was not found in namespace {rel.namespace} (or could not be read: see "
                        "the log; only the kubernetes target reads it): the release is held")]
    if found.get("managedBy") == MANAGED_BY_VALUE:
        whose = found.get("release") or "a Sluice release"
        return [(where, f"Deployment {name} is labelled as {whose}'s: Sluice adopts only what it does not manage")]
    version = (found["template"].get("labels") or {}).get(LABEL_VERSION)
    if not version or found["selector"].get(LABEL_VERSION) != version:
        return [(where, f"Deployment {name} must select its pods by a {LABEL_VERSION!r} label (in spec.selector and "
                        "its pod template): that label tells its pods from a new revision's")]
    if rel.service.get("create", True) and (found["template"].get("labels") or {}).get(LABEL_APP) != rel.service_name:
        return [(where, f"the pods of Deployment {name} have no label {LABEL_APP}={rel.service_name}: the Service "
                        "Sluice renders would not reach them (label them, or set spec.service.create: false)")]
    if rel.target_container_in(found["template"]) is None:
        return [(where, f"cannot tell which container of Deployment {name} gets the target image: name one like "
                        "the service or set spec.target.container")]
    return []


def lost_status(rel: Release, running: tuple[Mapping[str, Any], ...]) -> list[tuple[tuple[Any, ...], str]]:
    """Why a release naming ``spec.workloadRef`` and without a status cannot adopt now:
    adoption is a first adoption only, the adopted Deployment serving (replicas > 0) and
    no revision of Sluice's running. Otherwise the status was lost after Sluice had
    moved on (a revision promoted past it, a rollout in flight): adopting again would
    route everything to what may be scaled down and prune what serves, so the release
    holds until a person restores the status from git history (invariant 9)."""
    name = workload_ref(rel)
    found = next((v for v in running if v.get("adopted") == name), None)
    mine = sorted(f"{rel.name}-{v['version']}" for v in running
                  if not v.get("adopted") and v.get("version") and v.get("replicas", 1))
    if found is None or (found.get("replicas", 1) and not mine):
        return []
    why = (f"revisions of Sluice's run beside it ({', '.join(mine)})" if mine
           else "it runs at 0 replicas (Sluice promoted past it)")
    return [(("status",), f"the status is missing and Deployment {name} (spec.workloadRef) cannot be adopted "
                          f"afresh: {why}; restore the status block from git history")]


def snapshot(rel: Release, record: Mapping[str, Any]) -> dict[str, Any]:
    """The revision snapshot (revision.snapshot's shape) of the adopted Deployment as
    ``status.adopted`` recorded it: what its hash is of, and what a rollback to it finds."""
    out: dict[str, Any] = {"template": copy.deepcopy(dict(record.get("template") or {}))}
    if rel.target.get("container"):
        out["container"] = rel.target["container"]
    return out


def status_of(found: Mapping[str, Any]) -> dict[str, Any]:
    """``status.adopted`` for an adopted Deployment found running (``running_entry``)."""
    return {"kind": "Deployment", "name": found["adopted"], "revision": found["version"],
            "template": copy.deepcopy(found["template"])}


# --- what render asks of adopted objects ---------------------------------------
def intent(rel: Release, meta: dict[str, Any], replicas: int | None,
           destinations: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The ConfigMap ``<release>-adopted`` saying what Sluice wants of its adopted objects:
    the Deployment's replicas (None: leave them), the route's destinations."""
    data: dict[str, str] = {}
    name = workload_ref(rel)
    if name and replicas is not None:
        data[DEPLOYMENT_KEY] = json.dumps({"name": name, "replicas": replicas}, sort_keys=True)
    ref = route_ref(rel)
    if ref and destinations is not None:
        data[ROUTE_KEY] = json.dumps({"name": ref["name"], "route": ref["route"], "destinations": destinations},
                                     sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def is_intent(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return obj.get("kind") == "ConfigMap" and str(meta.get("name", "")).endswith(INTENT_SUFFIX) and \
        (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE and \
        f"{meta.get('name')}" == f"{(meta.get('labels') or {}).get(LABEL_RELEASE)}{INTENT_SUFFIX}"


def read_intent(obj: Mapping[str, Any]) -> tuple[dict | None, dict | None]:
    """(deployment ``{name, replicas}``, route ``{name, route, destinations}``) of an intent ConfigMap."""
    data = obj.get("data") or {}
    dep, route = data.get(DEPLOYMENT_KEY), data.get(ROUTE_KEY)
    return (json.loads(dep) if dep else None), (json.loads(route) if route else None)


# --- the route of an adopted VirtualService -------------------------------------
def route_index(vs: Mapping[str, Any], route: str) -> int | None:
    for i, item in enumerate(((vs.get("spec") or {}).get("http")) or []):
        if isinstance(item, Mapping) and item.get("name") == route:
            return i
    return None


def route_problem(rel: Release, vs: Mapping[str, Any], route: str) -> str | None:
    """Why Sluice must not take ``route`` of ``vs`` for ``rel``: it delegates, redirects or
    answers itself (Istio refuses a ``route`` beside those), or it sends traffic to another
    service than the release's (taking it would silently move that service's traffic)."""
    i = route_index(vs, route)
    item = vs["spec"]["http"][i]
    odd = [k for k in ("delegate", "redirect", "directResponse") if k in item]
    if odd:
        return f"route {route!r} has {odd[0]}: Sluice can only set the destinations of a route that has them"
    ns, name = rel.namespace, rel.service_name
    mine = {name, f"{name}.{ns}", f"{name}.{ns}.svc", rel.fqdn}
    hosts = sorted({(d.get("destination") or {}).get("host", "") for d in item.get("route") or []} - mine)
    if hosts:
        return (f"route {route!r} sends traffic to {', '.join(hosts)}, not to the release's service {rel.fqdn}: "
                "name a route of this service")
    return None


def route_of(vs: Mapping[str, Any], route: str) -> list | None:
    """The destinations of ``route`` in ``vs`` (None when there is no such route)."""
    i = route_index(vs, route)
    return None if i is None else list((vs["spec"]["http"][i]).get("route") or [])


def carries(vs: Mapping[str, Any], route: str, destinations: list[dict[str, Any]]) -> bool:
    """Does ``vs`` route ``route`` to exactly ``destinations``?"""
    return route_of(vs, route) == destinations


def route_fingerprint(vs: Mapping[str, Any], route: str) -> str:
    raw = json.dumps(route_of(vs, route), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def route_patch(vs: Mapping[str, Any], route: str, destinations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RFC 6902 patch setting ``route``'s destinations in ``vs`` as last read:
    the route's name tested at its index, then its ``route`` replaced. ValueError
    when ``vs`` has no such route."""
    i = route_index(vs, route)
    if i is None:
        raise ValueError(f"VirtualService {(vs.get('metadata') or {}).get('name')} has no http route named {route!r}")
    return [{"op": "test", "path": f"/spec/http/{i}/name", "value": route},
            # add sets a member whether or not it is there (replace would fail on a route without one)
            {"op": "add", "path": f"/spec/http/{i}/route", "value": copy.deepcopy(destinations)}]
