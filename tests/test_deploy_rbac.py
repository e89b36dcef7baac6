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
