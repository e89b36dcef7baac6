"""Render a Release (spec and status) into the desired Kubernetes objects.

A pure function: same Release, same objects, same order. What runs comes
from ``status`` (the rollout engine's record in git), what it looks like from
``spec``:

- one Deployment per live version, ``<name>-<version>``: the stable one, the
  new one while a rollout runs, the old one while it retires after a
  promotion, and a rolled-back one at 0 replicas (kept for debugging),
  each with the pods sizing.py gives it, or, under ``spec.autoscaling``,
  no replicas and an autoscaling/v2 HorizontalPodAutoscaler of that name;
- a DestinationRule with a subset per live version;
- a VirtualService whose routes carry the weights, the match routes (A/B,
  dark launch, blue/green preview) and the mirror (shadow);
- the Service when the release owns it;
- for adopted objects (``spec.workloadRef``, ``spec.service.virtualServiceRef``,
  adopt.py) no Deployment or VirtualService of their own: the ConfigMap
  ``<name>-adopted`` says what Sluice wants of them (replicas, one route).

``rolling`` and ``recreate`` releases live outside the mesh: one Deployment
``<name>`` updated in place, no Istio objects.

``render`` is memoised: a release loaded from git (it has a blob id) with the
same status and config files renders once; each call returns its own copy,
so a caller may change what it gets. A pass renders every release at least
once, so this makes an unchanged release cost a copy, not a render.

Every object carries the ownership labels of model.py (invariant 8).
Destinations with weight 0 are left out of a route: Istio needs the weights
of a route's destinations to sum to 100, and a 0 entry says nothing.
"""

from __future__ import annotations

import copy
import json
import pickle
from functools import lru_cache
from typing import Any, Mapping

from reconciler.core import adopt, revision, routes, sizing
from reconciler.core.observed import REVISION_HASH
from reconciler.core.model import (
    DOWN_PHASES, LABEL_APP, LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_RELEASE_NS, LABEL_VERSION,
    LIVE_PHASES, MANAGED_BY_VALUE, Release,
)

ISTIO_API = "networking.istio.io/v1"


def ownership_labels(rel: Release) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_RELEASE: rel.name, LABEL_RELEASE_NS: rel.namespace}


def service_host(rel: Release) -> str:
    return rel.fqdn


def _meta(rel: Release, name: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    labels = {**ownership_labels(rel), **(extra or {})}
    return {"name": name, "namespace": rel.namespace, "labels": dict(sorted(labels.items()))}


def _named(e: Mapping[str, Any]) -> dict[str, str]:
    return {"version": e["version"], "image": e.get("image", ""), "revision": revision.name_of(e)}


def stable_version(rel: Release) -> dict[str, str]:
    """The revision serving by default: status.stable, or the target on a first deploy.
    ``revision`` names its Deployment ``<name>-<revision>``, label and subset."""
    stable = rel.status.get("stable")
    if stable and stable.get("version"):
        return _named(stable)
    return _named(revision.target(rel))


def new_version(rel: Release) -> dict[str, str] | None:
    """The revision being rolled out, while a rollout is live."""
    canary = rel.status.get("canary")
    if canary and canary.get("version") and rel.status.get("phase") in LIVE_PHASES:
        return _named(canary)
    return None


def target_container(rel: Release) -> str | None:
    return rel.target_container


def _pod_template(rel: Release, version: str, image: str) -> dict[str, Any]:
    """The pod template of revision ``version`` (a revision name): the template and
    config it runs (its status snapshot, or the spec for the target revision), its image."""
    runs = revision.runs(rel, version)
    tmpl = runs["template"]
    labels = {**(tmpl.get("labels") or {}), LABEL_APP: rel.service_name, LABEL_VERSION: version}
    pod_spec = {k: copy.deepcopy(v) for k, v in tmpl.items() if k not in ("labels", "annotations")}
    which = runs.get("container") or target_container(rel)
    for container in pod_spec["containers"]:
        if container["name"] == which:
            container["image"] = image
    if runs.get("config") is not None:
        _mount_config(rel, pod_spec, which, runs["config"])
    meta: dict[str, Any] = {"labels": dict(sorted(labels.items()))}
    # the name a person gave stays readable; a derived or suffixed name is said too
    annotations = {**(tmpl.get("annotations") or {}), "sluice.dev/version": version}
    if runs["version"] != version:
        annotations["sluice.dev/target-version"] = str(runs["version"])
    meta["annotations"] = dict(sorted(annotations.items()))
    return {"metadata": meta, "spec": pod_spec}


def _mount_config(rel: Release, pod_spec: dict[str, Any], which: str | None, config: Mapping[str, Any]) -> None:
    """Point the target container at its revision's ConfigMap: a volume at
    ``config.mountPath`` when given, else ``envFrom`` (each key an env variable)."""
    name = revision.configmap_name(rel, config.get("data") or {})
    for container in pod_spec["containers"]:
        if container["name"] != which:
            continue
        if config.get("mountPath"):
            mounts = container.setdefault("volumeMounts", [])
            mounts.append({"name": revision.CONFIG_VOLUME, "mountPath": config["mountPath"], "readOnly": True})
        else:
            container.setdefault("envFrom", []).append({"configMapRef": {"name": name}})
    if config.get("mountPath"):
        pod_spec.setdefault("volumes", []).append({"name": revision.CONFIG_VOLUME, "configMap": {"name": name}})


def _configmaps(rel: Release, names: list[str]) -> list[dict[str, Any]]:
    """One ConfigMap per distinct config of the rendered revisions: each keeps its own
    until its revision is gone, so an old revision never sees the new config."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        config = revision.runs(rel, name).get("config")
        if config is None:
            continue
        data = dict(config.get("data") or {})
        cm = revision.configmap_name(rel, data)
        out[cm] = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": _meta(rel, cm, {LABEL_APP: rel.service_name}), "data": data}
    return [out[k] for k in sorted(out)]


def _deployment(rel: Release, name: str, version: str, image: str, replicas: int | None,
                strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    # spec.selector is immutable for the life of a Deployment: it names only what never
    # changes for that name (a per-version Deployment's version is part of its name; an
    # in-place one, rolling or recreate, keeps its version in pod template labels only)
    selector = {LABEL_APP: rel.service_name} if strategy else {LABEL_APP: rel.service_name, LABEL_VERSION: version}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": _pod_template(rel, version, image),
    }
    if replicas is None:   # an autoscaler owns it from the first apply (sizing.py)
        del spec["replicas"]
    if strategy:
        spec["strategy"] = strategy
    meta = _meta(rel, name, {LABEL_APP: rel.service_name, LABEL_VERSION: version})
    digest = revision.hash_of(rel, version)
    if digest:   # on the Deployment, not its pods: what runs can be told from live state (no restart)
        meta["annotations"] = {REVISION_HASH: digest}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def _service(rel: Release) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(rel, rel.service_name, {LABEL_APP: rel.service_name}),
            "spec": {"selector": {LABEL_APP: rel.service_name}, "ports": routes.service_ports(rel)}}


def _destination(rel: Release, version: str, weight: int | None = None, port: int | None = None) -> dict[str, Any]:
    """A route destination; on ``port``, else on the HTTP routes' port (routes.py)."""
    dest: dict[str, Any] = {"destination": routes.destination(service_host(rel), version,
                                                              port if port is not None else routes.http_port(rel))}
    if weight is not None:
        dest["weight"] = weight
    return dest


def _weighted(rel: Release, stable: str, new: str | None, weight: int, port: int | None = None) -> list[dict[str, Any]]:
    if not new or weight <= 0:
        return [_destination(rel, stable, 100, port)]
    if weight >= 100:
        return [_destination(rel, new, 100, port)]
    return [_destination(rel, stable, 100 - weight, port), _destination(rel, new, weight, port)]


def istio_match(match: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Spec match items to Istio HTTPMatchRequests (cookie shorthand to a header regex)."""
    out = []
    for item in match:
        req: dict[str, Any] = {}
        headers = {k: dict(v) for k, v in (item.get("headers") or {}).items()}
        cookie = item.get("cookie")
        if cookie:
            headers["cookie"] = {"regex": f"^(.*?;\\s*)?({cookie['name']}={cookie['value']})(;.*)?$"}
        if headers:
            req["headers"] = dict(sorted(headers.items()))
        if item.get("sourceLabels"):
            req["sourceLabels"] = dict(sorted(item["sourceLabels"].items()))
        if item.get("uri"):
            req["uri"] = dict(item["uri"])
        out.append(req)
    return out


def _match_of(rel: Release) -> list[Mapping[str, Any]] | None:
    kind, strat = rel.strategy_kind, rel.strategy
    if kind in ("abTesting", "darkLaunch"):
        return strat.get("match")
    if kind == "blueGreen":
        return (strat.get("preview") or {}).get("match")
    return None


def _mirror_of(rel: Release) -> float | None:
    """The % of live traffic mirrored to the new version, when mirroring is on."""
    kind, strat = rel.strategy_kind, rel.strategy
    if kind == "blueGreen" and strat.get("mirror"):
        return float(strat.get("mirrorPercentage", 100))
    if kind == "mirror":
        return float(strat.get("percentage", 100))
    return None


def in_follow_on_canary(rel: Release) -> bool:
    """A mirror release whose shadow phase is over and whose follow-on canary runs."""
    return rel.strategy_kind == "mirror" and bool(rel.strategy.get("canary")) and \
        int(rel.status.get("step", 0)) > int(rel.strategy.get("iterations", 5))


def _virtual_service(rel: Release, stable: str, new: str | None) -> dict[str, Any]:
    weight = int(rel.status.get("weight", 0)) if new else 0
    http: list[dict[str, Any]] = []
    match = _match_of(rel)
    options = routes.http_options(rel)   # spec.service.http, on every HTTP route; what Sluice owns wins
    if new and match:
        http.append({"name": "match", **options, "match": istio_match(match), "route": [_destination(rel, new, 100)]})
    primary: dict[str, Any] = {"name": "primary", **options, "route": _weighted(rel, stable, new, weight)}
    mirror = _mirror_of(rel)
    if new and mirror is not None and not in_follow_on_canary(rel):
        primary["mirror"] = routes.destination(service_host(rel), new, routes.http_port(rel))
        primary["mirrorPercentage"] = {"value": mirror}
    http.append(primary)
    spec: dict[str, Any] = {"hosts": rel.hosts, "gateways": list(rel.service.get("gateways") or ["mesh"])}
    if routes.has_http(rel):
        spec["http"] = http
    spec.update(routes.layer4_routes(rel, lambda port: _weighted(rel, stable, new, weight, port)))
    return {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": _meta(rel, rel.name), "spec": spec}


def _destination_rule(rel: Release, versions: list[str]) -> dict[str, Any]:
    subsets = [{"name": v, "labels": {LABEL_VERSION: v}} for v in sorted(versions)]
    return {"apiVersion": ISTIO_API, "kind": "DestinationRule", "metadata": _meta(rel, rel.name),
            "spec": {"host": service_host(rel), "subsets": subsets, **routes.traffic_policy(rel)}}


def _plain(rel: Release) -> list[dict[str, Any]]:
    """rolling / recreate: one Deployment updated in place, outside the mesh."""
    ver = new_version(rel) or stable_version(rel)
    if rel.strategy_kind == "recreate":
        strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        rolling = {k: rel.strategy[k] for k in ("maxSurge", "maxUnavailable") if k in rel.strategy}
        strategy = {"type": "RollingUpdate", **({"rollingUpdate": rolling} if rolling else {})}
    objs = [_service(rel)] if rel.service.get("create", True) else []
    # while the new revision rolls in, old pods still mount the stable revision's ConfigMap
    running = [stable_version(rel)["revision"], ver["revision"]]
    objs += _configmaps(rel, list(dict.fromkeys(running)))
    size = sizing.full_size(rel)
    objs.append(_deployment(rel, rel.name, ver["revision"], ver["image"], size.replicas, strategy))
    if size.hpa:
        objs.append(_hpa(rel, rel.name, ver["revision"], size.hpa))
    return objs


def _hpa(rel: Release, name: str, version: str, bounds: tuple[int, int]) -> dict[str, Any]:
    """The autoscaling/v2 HorizontalPodAutoscaler of Deployment ``name``: ``spec.autoscaling``
    with min/max as sizing.py scales them for this version."""
    spec: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                            "minReplicas": bounds[0], "maxReplicas": bounds[1]}
    auto = sizing.autoscaling(rel)
    for key in ("metrics", "behavior"):
        if auto.get(key):
            spec[key] = copy.deepcopy(auto[key])
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(rel, name, {LABEL_APP: rel.service_name, LABEL_VERSION: version}), "spec": spec}


RENDER_CACHE_SIZE = 4_096   # releases x statuses kept, ~3 KB each with their release: enough for a pass's
# repeated renders of the releases it decides; settled releases are not rendered (controller.Settled)


class _Keyed:
    """A release with the key that names its rendered objects: path, blob (its spec),
    status and config files. Equal keys, equal renders (hash and equality are the key's; the
    release is kept alongside, for the one render a miss makes)."""

    __slots__ = ("key", "release")

    def __init__(self, key: tuple[Any, ...], release: Release):
        self.key, self.release = key, release

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Keyed) and self.key == other.key


def _key(release: Release) -> tuple[Any, ...] | None:
    """None for a release that is not a loaded file (no blob): rendered every time."""
    if not release.blob:
        return None
    try:
        return (release.path, release.blob, json.dumps(release.doc.get("status"), sort_keys=True),
                tuple(sorted(release.files.items())))
    except (TypeError, ValueError):   # a status JSON cannot say (odd keys): no memo
        return None


@lru_cache(maxsize=RENDER_CACHE_SIZE)
def _rendered(item: _Keyed) -> bytes:
    return pickle.dumps(_render(item.release), pickle.HIGHEST_PROTOCOL)


def clear_cache() -> None:
    """Forget every memoised render (a benchmark of cold renders calls it between runs)."""
    _rendered.cache_clear()


def render(release: Release, settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The desired objects of ``release``: Service, Deployments, DestinationRule, VirtualService.
    ``settings`` are not read: rendering depends on the release alone."""
    key = _key(release)
    if key is None:
        return _render(release)
    return pickle.loads(_rendered(_Keyed(key, release)))   # a fresh copy per call: ~7x cheaper than a render


def _render(release: Release) -> list[dict[str, Any]]:
    if not release.is_mesh:
        return _plain(release)
    if adopt.workload_ref(release) and not adopt.adopted(release):
        return []   # spec.workloadRef not adopted yet (the first pass reads it): nothing to render
    # every name below is a revision name (revision.py): Deployment <name>-<revision>, label, subset
    stable = stable_version(release)
    new = new_version(release)
    if new and new["revision"] == stable["revision"]:
        new = None  # a retarget to the stable revision itself: nothing to roll
    deployments = {stable["revision"]: stable["image"]}
    retiring = release.status.get("retiring")
    if retiring and retiring.get("version") and revision.name_of(retiring) not in deployments:
        deployments[revision.name_of(retiring)] = retiring.get("image", "")
    down = release.status.get("rolledBack")
    if down and down.get("version") and release.status.get("phase") in DOWN_PHASES \
            and revision.name_of(down) not in deployments:
        deployments[revision.name_of(down)] = down.get("image", "")
    if new:
        deployments[new["revision"]] = new["image"]
    size = sizing.sizes(release)   # pods per revision: the new one follows its weight
    objs = [_service(release)] if release.service.get("create", True) else []
    adopted = adopt.revision_of(release)   # spec.workloadRef: its Deployment is the owner's; Sluice scales it
    own = [name for name in sorted(deployments) if name != adopted]
    objs += _configmaps(release, own)
    for name in own:
        objs.append(_deployment(release, f"{release.name}-{name}", name, deployments[name], size[name].replicas))
    for name in own:
        if size[name].hpa:
            objs.append(_hpa(release, f"{release.name}-{name}", name, size[name].hpa))
    objs.append(_destination_rule(release, list(deployments)))
    vs = _virtual_service(release, stable["revision"], new["revision"] if new else None)
    if adopt.workload_ref(release) or adopt.route_ref(release):
        # what Sluice owns of adopted objects: replicas (0 once promoted past it), one route's destinations
        replicas = size[adopted].replicas if adopted in deployments else 0
        route = vs["spec"]["http"][-1]["route"] if adopt.route_ref(release) else None
        meta = _meta(release, f"{release.name}{adopt.INTENT_SUFFIX}", {LABEL_APP: release.service_name})
        objs.append(adopt.intent(release, meta, replicas if adopted else None, route))
    if not adopt.route_ref(release):
        objs.append(vs)
    return objs

