"""Least privilege the API server enforces: no cluster-wide writes in
deploy/rbac.yaml; tenants.yaml binds write rights per tenant namespace and
is exactly what deploy/tenant_rbac.py generates from the example policy."""

import importlib.util
import pathlib

import yaml

from reconciler.core import policy as policies

DEPLOY = pathlib.Path(__file__).resolve().parents[1] / "deploy"


def docs(name):
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def generator():
    spec = importlib.util.spec_from_file_location("tenant_rbac", DEPLOY / "tenant_rbac.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def example_policy():
    cm = docs("policy.example.yaml")[0]
    policy, problems = policies.load(cm["data"]["policy.yaml"].encode(), "policy.example.yaml")
    assert not problems, problems
    return policy


def test_no_cluster_wide_writes():
    rbac = docs("rbac.yaml")
    assert not [d for d in rbac if d["kind"] == "ClusterRoleBinding"]
    for role in (d for d in rbac if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert not {"secrets", "pods", "pods/exec", "clusterroles", "rolebindings"} & set(rule["resources"])
    writes = {d["metadata"]["name"] for d in rbac if d["kind"] == "ClusterRole"}
    assert writes == {"sluice-tenant"}
    bound = {d["roleRef"]["name"] for d in rbac if d["kind"] == "RoleBinding"}
    assert "sluice-tenant" not in bound   # bound only per tenant namespace, in tenants.yaml


def test_tenants_yaml_is_generated_from_the_policy():
    mod = generator()
    policy = example_policy()
    assert (DEPLOY / "tenants.yaml").read_text() == mod.render(policy)
    bindings = docs("tenants.yaml")
    assert {b["metadata"]["namespace"] for b in bindings} == {"bookinfo", "shop", "batch"}
    assert all(b["kind"] == "RoleBinding" and b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                                              "kind": "ClusterRole", "name": "sluice-tenant"}
               for b in bindings)


def test_system_namespaces_are_never_bound():
    mod = generator()
    policy = {"tenancy": {"folders": {"kube-system": {"podSecurity": {"allow": ["systemNamespace"]}},
                                      "shop": {"namespaces": ["shop", "sluice-system"]}}}}
    assert mod.namespaces(policy) == ["shop"]


def test_the_tenant_role_grants_every_request_the_kubernetes_target_makes(tmp_path, emu):
    """Every request of a rollout with an autoscaled release (HPAs), an adopted Deployment and an
    adopted VirtualService (gets by name, a JSON patch), a promotion, the retired version's prune,
    is one the ClusterRole bound in a tenant namespace allows: a real API server would answer 403
    to anything else and hold the release."""
    from tests.support.cluster_env import Env, promoted
    from tests.test_adoption import adopted_deployment, adopted_vs, doc_for
    emu.put(adopted_deployment(), manager="kubectl-create")
    emu.put(adopted_vs(), manager="kubectl-create")
    emu.all_ready()
    scaled = promoted(name="ratings", autoscaling={"minReplicas": 2, "maxReplicas": 6, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]})
    scaled["spec"]["strategy"] = {"canary": {"steps": [50], "interval": "1m"}}
    scaled["spec"]["scaleDownDelay"] = "0s"
    env = Env(tmp_path, emu, [doc_for(), scaled])
    start = len(emu._sync(lambda: list(emu.emu.log)))
    from tests.test_sizing import hpa_controller
    for _ in range(12):
        env.tick()
        hpa_controller(emu)   # kube-controller-manager's own requests are not Sluice's: not in the log below
    requests = emu._sync(lambda: list(emu.emu.log))[start:]
    role = next(d for d in docs("rbac.yaml") if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "sluice-tenant")
    inventory = next(d for d in docs("rbac.yaml") if d["kind"] == "Role" and d["metadata"]["name"] == "sluice-inventory")
    used = set()
    for verb, plural, namespace, _name in requests:
        rules = role["rules"] if namespace == "bookinfo" else inventory["rules"] if namespace == "sluice-system" else []
        assert any(plural in r["resources"] and verb in r["verbs"] for r in rules), (verb, plural, namespace)
        used.add((verb, plural))
    assert env.status("ratings")["stable"]["version"] == "v2" and env.status()["stable"]["version"] == "v2"
    assert {("get", "deployments"), ("get", "virtualservices"), ("patch", "horizontalpodautoscalers"),
            ("list", "horizontalpodautoscalers"), ("delete", "deployments"),
            # a GET of each object before Sluice first creates it (an owner's of that name is never taken over)
            ("get", "horizontalpodautoscalers"), ("get", "destinationrules"), ("get", "configmaps")} <= used, used
