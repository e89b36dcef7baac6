"""The renderer: each strategy and phase gives the right objects, every
VirtualService and DestinationRule is valid under Istio's own CRD schema, and
every Deployment and Service under the official Kubernetes schema (strict)."""

import pathlib
import random

import kubernetes_validate
import pytest

from reconciler.core.model import LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_RELEASE_NS
from reconciler.core.render import render
from reconciler.core.serialize import dump_json, dump_yaml
from tests.support import istio
from tests.support.specs import STRATEGIES, release, release_doc

V1 = {"version": "v1", "image": "example.com/reviews:v1"}
V2 = {"version": "v2", "image": "example.com/reviews:v2"}


def rollout(phase="Progressing", weight=0, step=1, **extra):
    return {"phase": phase, "stable": dict(V1), "canary": dict(V2), "weight": weight, "step": step, **extra}


def objs_by_kind(objs):
    out = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def vs_of(objs):
    return objs_by_kind(objs)["VirtualService"][0]


def primary(objs):
    return next(r for r in vs_of(objs)["spec"]["http"] if r["name"] == "primary")


def weights(route):
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}


def check_istio(objs):
    for o in objs:
        if o["apiVersion"].startswith("networking.istio.io"):
            assert istio.errors(o) == [], o
            assert istio.pruned(o) == [], o
        for kind in ("http", "tcp", "tls"):
            for route in (o["spec"].get(kind) or []) if o["kind"] == "VirtualService" else []:
                assert sum(d.get("weight", 100) for d in route["route"]) == 100


CASES = {
    "first deploy": dict(strategy="canary"),
    "stable only": dict(strategy="canary", status={"phase": "Promoted", "stable": V2, "weight": 100}),
    "canary 10": dict(strategy="canary", status=rollout(weight=10)),
    "canary 50": dict(strategy="canary", status=rollout(weight=50, step=3)),
    "canary paused": dict(strategy="canary", status=rollout("Paused", weight=20, step=2)),
    "abTesting": dict(strategy="abTesting", status=rollout(weight=0)),
    "darkLaunch": dict(strategy="darkLaunch", status=rollout("WaitingApproval", weight=0, waitingFor="promotion")),
    "mirror": dict(strategy="mirror", status=rollout(weight=0, step=1)),
    "mirror follow-on canary": dict(strategy="mirror", status=rollout(weight=25, step=3)),
    "blueGreen preview": dict(strategy="blueGreen", status=rollout(weight=0, step=1)),
    "blueGreen switched": dict(strategy="blueGreen", status={
        "phase": "Promoted", "stable": V2, "weight": 100,
        "retiring": {**V1, "until": "2026-11-22T10:00:00Z"}}),
    "rolled back": dict(strategy="canary", status={
        "phase": "RolledBack", "stable": V1, "weight": 0,
        "rolledBack": {**V2, "retry": 0, "reason": "request-success-rate 91 < min 99"}}),
    # spec.service.ports and route options (tests/test_routes.py has the rest)
    "grpc, tcp and tls ports at 20": dict(strategy="canary", status=rollout(weight=20, step=2), service={
        "name": "reviews", "ports": [{"name": "grpc", "port": 9090, "appProtocol": "grpc"},
                                     {"name": "tcp-admin", "port": 7000},
                                     {"name": "tls-db", "port": 5432, "sniHosts": ["db.example.com"]}],
        "http": {"timeout": "3s", "retries": {"attempts": 2, "perTryTimeout": "1s", "retryOn": "unavailable"}},
        "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10}}, "tls": {"mode": "ISTIO_MUTUAL"}}}),
    "abTesting with route options": dict(strategy="abTesting", status=rollout(weight=0), service={
        "name": "reviews", "port": 9080, "http": {"headers": {"response": {"remove": ["server"]}},
                                                  "corsPolicy": {"allowOrigins": [{"prefix": "https://"}]}}}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_is_valid_istio_and_labelled(case):
    objs = render(release(**CASES[case]))
    check_istio(objs)
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels[LABEL_MANAGED_BY] == "sluice"
        assert labels[LABEL_RELEASE] == "reviews" and labels[LABEL_RELEASE_NS] == "bookinfo"
        assert o["metadata"]["namespace"] == "bookinfo"


def test_first_deploy_runs_target_as_stable():
    objs = render(release(strategy="canary"))
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Service", "Deployment", "DestinationRule", "VirtualService"]
    dep = objs[1]
    assert dep["metadata"]["name"] == "reviews-v2"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/reviews:v2"
    assert weights(primary(objs)) == {"v2": 100}


@pytest.mark.parametrize("weight", [1, 10, 33, 50, 99])
def test_canary_at_n_percent(weight):
    objs = render(release(strategy="canary", status=rollout(weight=weight)))
    assert weights(primary(objs)) == {"v1": 100 - weight, "v2": weight}
    deps = {d["metadata"]["name"]: d for d in objs_by_kind(objs)["Deployment"]}
    assert set(deps) == {"reviews-v1", "reviews-v2"}
    assert deps["reviews-v1"]["spec"]["template"]["spec"]["containers"][0]["image"] == V1["image"]
    assert deps["reviews-v2"]["spec"]["selector"]["matchLabels"] == {"app": "reviews", "version": "v2"}
    dr = objs_by_kind(objs)["DestinationRule"][0]
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v2"]
    assert dr["spec"]["host"] == "reviews.bookinfo.svc.cluster.local"


def test_canary_at_zero_sends_nothing_to_new_version():
    objs = render(release(strategy="canary", status=rollout(weight=0, step=0)))
    assert weights(primary(objs)) == {"v1": 100}
    assert len(objs_by_kind(objs)["Deployment"]) == 2  # the new version starts before traffic moves


def test_ab_match_by_header_and_cookie():
    objs = render(release(strategy="abTesting", status=rollout()))
    http = vs_of(objs)["spec"]["http"]
    assert http[0]["name"] == "match"
    assert http[0]["match"][0] == {"headers": {"x-user-type": {"exact": "premium"}}}
    assert http[0]["match"][1]["headers"]["cookie"]["regex"] == r"^(.*?;\s*)?(beta=yes)(;.*)?$"
    assert weights(http[0]) == {"v2": 100}
    assert weights(http[1]) == {"v1": 100}


def test_dark_launch_is_match_only():
    objs = render(release(strategy="darkLaunch", status=rollout("WaitingApproval")))
    http = vs_of(objs)["spec"]["http"]
    assert http[0]["match"] == [{"sourceLabels": {"app": "qa"}}]
    assert weights(http[1]) == {"v1": 100}
    assert "mirror" not in http[1]


def test_mirror_copies_a_percentage():
    route = primary(render(release(strategy="mirror", status=rollout(step=1))))
    assert weights(route) == {"v1": 100}
    assert route["mirror"]["subset"] == "v2"
    assert route["mirrorPercentage"] == {"value": 40.0}


def test_mirror_follow_on_canary_has_weights_and_no_mirror():
    route = primary(render(release(strategy="mirror", status=rollout(weight=25, step=3))))
    assert weights(route) == {"v1": 75, "v2": 25}
    assert "mirror" not in route


def test_blue_green_preview_with_and_without_mirror():
    objs = render(release(strategy="blueGreen", status=rollout()))
    http = vs_of(objs)["spec"]["http"]
    assert http[0]["match"] == [{"headers": {"x-preview": {"exact": "1"}}}]
    assert http[1]["mirrorPercentage"] == {"value": 50.0}
    doc = release_doc(strategy="blueGreen", status=rollout())
    doc["spec"]["strategy"]["blueGreen"]["mirror"] = False
    assert "mirror" not in primary(render(release(doc)))


def test_blue_green_switch_keeps_old_version_until_retired():
    objs = render(release(**CASES["blueGreen switched"]))
    assert weights(primary(objs)) == {"v2": 100}
    assert len(vs_of(objs)["spec"]["http"]) == 1
    names = [d["metadata"]["name"] for d in objs_by_kind(objs)["Deployment"]]
    assert names == ["reviews-v1", "reviews-v2"]


def test_rolled_back_version_scaled_to_zero_without_traffic():
    objs = render(release(**CASES["rolled back"]))
    deps = {d["metadata"]["name"]: d for d in objs_by_kind(objs)["Deployment"]}
    assert deps["reviews-v2"]["spec"]["replicas"] == 0
    assert deps["reviews-v1"]["spec"]["replicas"] == 2
    assert weights(primary(objs)) == {"v1": 100}


@pytest.mark.parametrize("kind,expected", [("rolling", "RollingUpdate"), ("recreate", "Recreate")])
def test_plain_strategies_render_one_deployment_outside_the_mesh(kind, expected):
    objs = render(release(strategy=kind, status={"phase": "Progressing", "stable": V1, "canary": V2}))
    assert [o["kind"] for o in objs] == ["Service", "Deployment"]
    dep = objs[1]
    assert dep["metadata"]["name"] == "reviews"
    assert dep["spec"]["strategy"]["type"] == expected
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == V2["image"]
    # rolled back: the stable image comes back
    back = render(release(strategy=kind, status={"phase": "Failed", "stable": V1, "rolledBack": V2}))
    assert back[1]["spec"]["template"]["spec"]["containers"][0]["image"] == V1["image"]


def test_service_not_owned_and_custom_hosts_gateways():
    doc = release_doc(service={"name": "reviews", "port": 9080, "create": False,
                               "hosts": ["reviews", "reviews.example.com"],
                               "gateways": ["mesh", "istio-system/gw"]})
    objs = render(release(doc))
    assert "Service" not in objs_by_kind(objs)
    vs = vs_of(objs)
    assert vs["spec"]["hosts"] == ["reviews", "reviews.example.com"]
    assert vs["spec"]["gateways"] == ["mesh", "istio-system/gw"]


def test_sidecar_keeps_its_own_image():
    doc = release_doc()
    doc["spec"]["template"]["containers"].append({"name": "statsd", "image": "statsd:1"})
    dep = render(release(doc))[1]
    images = {c["name"]: c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}
    assert images == {"reviews": "example.com/reviews:v2", "statsd": "statsd:1"}


def test_output_is_deterministic_whatever_the_input_order():
    doc = release_doc(strategy="abTesting", status=rollout(weight=0))
    first = dump_yaml(render(release(doc))) + dump_json(render(release(doc)))

    def shuffled(value, rng):
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {k: shuffled(v, rng) for k, v in items}
        if isinstance(value, list):
            return [shuffled(v, rng) for v in value]
        return value

    for seed in range(5):
        again = release(shuffled(doc, random.Random(seed)))
        assert dump_yaml(render(again)) + dump_json(render(again)) == first


GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "render-routing.yaml"
ROUTING = ("Service", "VirtualService", "DestinationRule")


def _golden_sections() -> dict[str, str]:
    """tests/golden/render-routing.yaml by its ``# <what>`` headers: the Service, VirtualService
    and DestinationRule of each release as rendered before spec.service.ports and route options."""
    sections: dict[str, str] = {}
    for line in GOLDEN.read_text().splitlines(True):
        if line.startswith("# "):
            current = line[2:].strip()
            sections[current] = ""
        else:
            sections[current] += line
    return sections


def _rendered_routing(label: str) -> str:
    from reconciler.adapters.files import read_tree
    from reconciler.core.loader import load_files
    if label.startswith("case "):
        objs = render(release(**CASES[label[5:]]))
    elif label.startswith("strategy "):
        objs = render(release(strategy=label[9:]))
    else:
        loaded = load_files(read_tree(SAMPLE))
        objs = render(loaded.by_key()[f"{label.split('/')[1]}/{label.split('/')[2][:-5]}"], loaded.settings)
    return dump_yaml(o for o in objs if o["kind"] in ROUTING)


def test_releases_without_ports_or_route_options_render_byte_identical_routing():
    """Live Services, VirtualServices and DestinationRules of existing releases do not change
    (a changed byte would be an apply on every cluster). New sample releases are not in the golden."""
    sections = _golden_sections()
    assert len(sections) >= 25 and any(k.startswith("releases/") for k in sections)
    for label, text in sections.items():
        assert _rendered_routing(label) == text, label


def test_broken_virtual_service_fails_istio_validation():
    vs = vs_of(render(release(strategy="canary", status=rollout(weight=10))))
    vs["spec"]["http"][0]["route"][0]["weight"] = "ten"
    assert istio.errors(vs)
    vs["spec"]["http"][0]["route"][0]["weight"] = 90
    vs["spec"]["http"][0]["bogus"] = 1
    assert istio.pruned(vs) == [".spec.http[0].bogus"]


# --- the official Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors) ---------
# The oldest Kubernetes the pinned kubernetes-validate>=1.30 is sure to carry, and the newest this one ships:
# a field too new for 1.30 or gone by the latest fails here rather than on a cluster.
K8S_VERSIONS = sorted({"1.30.0", kubernetes_validate.latest_version()})
SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "sample-repo"


def every_rendered_object():
    """(label, object) for every release of sample-repo/ and every test spec (each strategy, each CASE)."""
    from reconciler.adapters.files import read_tree
    from reconciler.core.loader import load_files
    loaded = load_files(read_tree(SAMPLE))
    assert loaded.problems == [] and loaded.releases
    for rel in loaded.releases:
        for obj in render(rel, loaded.settings):
            yield rel.path, obj
    for case, kw in sorted(CASES.items()):
        for obj in render(release(**kw)):
            yield case, obj
    for strategy in sorted(STRATEGIES):
        for obj in render(release(strategy=strategy)):
            yield strategy, obj


def test_every_rendered_deployment_and_service_is_valid_kubernetes():
    checked, problems = set(), []
    for where, obj in every_rendered_object():
        if obj["apiVersion"].startswith("networking.istio.io"):
            continue
        checked.add(obj["kind"])
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(map(str, exc.path))
                problems.append(f"{where}: {obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}) "
                                f"{path}: {exc.message}")
    assert problems == []
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= checked   # sample-repo shop/frontend


def test_strict_kubernetes_validation_catches_an_unknown_field():
    dep = next(o for o in render(release(strategy="canary")) if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[0], strict=True)
