"""The controller's policy and pod security by default: a tenant edit to
sluice.yaml cannot widen what the policy grants; each pod-security case is
refused at file:line and allowed only where the policy says so; an invalid
sluice.yaml holds every release and changes nothing anywhere."""

import json

import pytest

from reconciler.adapters.gitrepo import GitRepo
from reconciler.cli.main import main
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
from reconciler.core import policy as policies
from reconciler.core.loader import load_files
from tests.support.gitserver import clone_work, human_commit, make_bare, run
from tests.support.specs import dump, release_doc

POLICY = b"""apiVersion: sluice.dev/v1alpha1
kind: Policy
tenancy:
  folders:
    shop:
      namespaces: [shop]
      hosts: ["*.shop.svc.cluster.local", "*.shop.example.com"]
    bookinfo:
      hosts: ["*.bookinfo.svc.cluster.local"]
      podSecurity:
        allow: [hostNetwork, hostPID, hostIPC, privileged, allowPrivilegeEscalation, hostPath, hostPort]
        capabilities: [NET_ADMIN]
        serviceAccounts: [mesh-admin]
    kube-system:
      podSecurity: {allow: [systemNamespace]}
"""
SETTINGS = b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"


def pol(data=POLICY):
    doc, problems = policies.load(data, "/etc/sluice/policy.yaml")
    assert not problems, problems
    return doc


def files(*docs, settings=SETTINGS):
    out = {"sluice.yaml": settings} if settings is not None else {}
    for d in docs:
        m = d["metadata"]
        out[f"releases/{m['namespace']}/{m['name']}.yaml"] = dump(d).encode()
    return out


# --- tenancy under a policy ------------------------------------------------------

def test_tenant_edit_to_sluice_yaml_that_widens_its_folder_is_refused():
    widened = SETTINGS + b"""tenancy:
  folders:
    shop:
      namespaces: [shop, payments]
      hosts: ["*"]
"""
    cart = release_doc(name="cart", namespace="shop", service={"name": "cart", "port": 80, "hosts": ["cart.evil.com"]})
    out = load_files(files(cart, settings=widened), policy=pol())
    msgs = [str(p) for p in out.problems]
    assert msgs[0].startswith("sluice.yaml:6:26: namespace 'payments' is outside folder 'shop''s allowance ['shop'] "
                              "in the controller policy"), msgs
    assert msgs[1].startswith("sluice.yaml:7:15: host * is outside folder 'shop''s allowed hosts"), msgs
    assert out.releases == []                                  # the settings are invalid: everything holds
    assert any(m.startswith("releases/shop/cart.yaml:1:1: held: sluice.yaml is invalid") for m in msgs)


def test_folder_added_by_sluice_yaml_is_refused_and_policy_applies_without_it():
    added = SETTINGS + b"tenancy:\n  folders:\n    batch: {namespaces: [batch]}\n"
    out = load_files(files(release_doc(name="job", namespace="batch"), settings=added), policy=pol())
    assert str(out.problems[0]).startswith("sluice.yaml:5:5: folder 'batch' has no allowance in the controller policy")
    out = load_files(files(release_doc(name="job", namespace="batch")), policy=pol())
    assert out.releases == []
    assert "folder 'batch' has no tenancy allowance in the controller policy" in str(out.problems[0])


def test_sluice_yaml_may_narrow_the_policy():
    narrowed = SETTINGS + b'tenancy:\n  folders:\n    shop: {hosts: ["*.shop.svc.cluster.local"]}\n'
    inside = release_doc(name="cart", namespace="shop")
    outside = release_doc(name="web", namespace="shop", service={"name": "web", "port": 80, "hosts": ["www.shop.example.com"]})
    out = load_files(files(inside, outside, settings=narrowed), policy=pol())
    assert [r.key for r in out.releases] == ["shop/cart"]
    assert "host www.shop.example.com is outside folder 'shop''s allowed hosts" in str(out.problems[0])
    # the same host is fine under the policy alone
    assert [r.key for r in load_files(files(inside, outside), policy=pol()).releases] == ["shop/cart", "shop/web"]


def test_policy_hosts_bind_even_when_sluice_yaml_says_nothing():
    steal = release_doc(name="cart", namespace="shop", service={"name": "cart", "port": 80, "hosts": ["login.bank.com"]})
    out = load_files(files(steal), policy=pol())
    assert out.releases == [] and "host login.bank.com is outside folder 'shop''s allowed hosts" in str(out.problems[0])


def test_invalid_policy_is_located():
    doc, problems = policies.load(b"apiVersion: sluice.dev/v1alpha1\nkind: Policy\ntenancy:\n  folders:\n"
                                  b"    shop: {podSecurity: {allow: [everything]}}\n", "policy.yaml")
    assert doc == {} and str(problems[0]).startswith("policy.yaml:5:34: tenancy.folders.shop.podSecurity.allow.0")


# --- pod security ---------------------------------------------------------------

def template(**pod):
    containers = pod.pop("container", {})
    return {"containers": [{"name": "reviews", "ports": [{"containerPort": 9080}], **containers}], **pod}


CASES = {
    "hostNetwork": (template(hostNetwork=True), ("spec", "template", "hostNetwork")),
    "hostPID": (template(hostPID=True), ("spec", "template", "hostPID")),
    "hostIPC": (template(hostIPC=True), ("spec", "template", "hostIPC")),
    "privileged": (template(container={"securityContext": {"privileged": True}}),
                   ("spec", "template", "containers", 0, "securityContext", "privileged")),
    "allowPrivilegeEscalation": (template(container={"securityContext": {"allowPrivilegeEscalation": True}}),
                                 ("spec", "template", "containers", 0, "securityContext", "allowPrivilegeEscalation")),
    "capabilities": (template(container={"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}),
                     ("spec", "template", "containers", 0, "securityContext", "capabilities", "add", 0)),
    "hostPath": (template(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
                 ("spec", "template", "volumes", 0, "hostPath")),
    "hostPort": (template(container={"ports": [{"containerPort": 80, "hostPort": 80}]}),
                 ("spec", "template", "containers", 0, "ports", 0, "hostPort")),
    "initContainer privileged": (template(initContainers=[{"name": "init", "securityContext": {"privileged": True}}]),
                                 ("spec", "template", "initContainers", 0, "securityContext", "privileged")),
    "serviceAccountName": (template(serviceAccountName="mesh-admin"), ("spec", "template", "serviceAccountName")),
    "procMount": (template(container={"securityContext": {"procMount": "Unmasked"}}),
                  ("spec", "template", "containers", 0, "securityContext", "procMount")),
    "seccomp unconfined": (template(securityContext={"seccompProfile": {"type": "Unconfined"}}),
                           ("spec", "template", "securityContext", "seccompProfile", "type")),
    "serviceAccount alias": (template(serviceAccount="mesh-admin"), ("spec", "template", "serviceAccount")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pod_security_case_is_refused_at_file_line_and_allowed_by_policy(case):
    tmpl, path = CASES[case]
    doc = release_doc(template=tmpl)
    for policy in (None, pol(POLICY.replace(b"bookinfo:", b"other:"))):   # no policy, or one not granting bookinfo
        out = load_files(files(doc), policy=policy)
        assert out.releases == [], case
        problem = next(p for p in out.problems if "pod security" in p.message)
        assert problem.path == path and problem.file == "releases/bookinfo/reviews.yaml"
        assert problem.line > 1 and problem.col > 1   # located at the offending key's value
    out = load_files(files(doc), policy=pol())        # the policy grants it to bookinfo
    assert [r.key for r in out.releases] == ["bookinfo/reviews"], out.problems


def test_capability_outside_the_granted_ones_is_refused():
    doc = release_doc(template=template(container={"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}))
    out = load_files(files(doc), policy=pol())
    assert "adds capability 'SYS_ADMIN'" in str(out.problems[0])


@pytest.mark.parametrize("tmpl", [template(HostNetwork=True), template(container={"SecurityContext": {"privileged": True}}),
                                  template(volumes=[{"name": "r", "HOSTPATH": {"path": "/"}}])])
def test_keys_spelled_in_another_case_are_refused(tmpl):
    out = load_files(files(release_doc(template=tmpl)), policy=pol())   # even where the policy allows the real one
    assert out.releases == [] and "is not a field; did you mean" in str(out.problems[0])


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_odd_values_count_as_asking(value):
    doc = release_doc(template=template(hostNetwork=value))
    assert load_files(files(doc)).releases == []


def test_default_and_own_service_account_and_safe_fields_pass():
    for tmpl in (template(), template(serviceAccountName="default"), template(serviceAccountName="reviews"),
                 template(hostNetwork=False, container={"securityContext": {"privileged": False,
                                                                            "allowPrivilegeEscalation": False,
                                                                            "capabilities": {"drop": ["ALL"]}}})):
        assert [r.key for r in load_files(files(release_doc(template=tmpl))).releases] == ["bookinfo/reviews"]


@pytest.mark.parametrize("ns", ["kube-system", "kube-public", "kube-node-lease", "sluice-system"])
def test_system_namespaces_are_refused(ns):
    out = load_files(files(release_doc(name="x", namespace=ns)))
    assert out.releases == []
    assert str(out.problems[0]).startswith(f"releases/{ns}/x.yaml:5:14: namespace {ns!r} is a system namespace")


def test_system_namespace_allowed_by_policy_and_extra_ones_added():
    assert load_files(files(release_doc(name="x", namespace="kube-system")), policy=pol()).releases
    extra = pol(POLICY + b"podSecurity: {systemNamespaces: [shop]}\n")
    assert load_files(files(release_doc(name="cart", namespace="shop")), policy=extra).releases == []


# --- fail closed on settings, end to end ---------------------------------------------

class Recording(GitTarget):
    name = "kubernetes"

    def __init__(self):
        super().__init__()
        self.calls = []

    def apply(self, desired, *, keep, urgent=False):
        self.calls.append((dict(desired), set(keep)))
        return super().apply(desired, keep=keep, urgent=urgent)


@pytest.mark.parametrize("target", ["git", "kubernetes"])
def test_invalid_sluice_yaml_beside_cross_tenant_release_changes_nothing(tmp_path, target):
    good = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    good["spec"]["analysis"] = {"metrics": []}
    tenancy = b"tenancy:\n  folders:\n    bookinfo: {namespaces: [bookinfo]}\n"
    ratings = dict(good, metadata={"name": "ratings", "namespace": "bookinfo"},
                   spec={**good["spec"], "service": {"name": "ratings", "port": 9080},
                         "template": template(), "target": {"version": "v2", "image": "r:2"}})
    ratings["spec"]["template"]["containers"][0]["name"] = "ratings"
    bare = make_bare(tmp_path, seed={"sluice.yaml": SETTINGS + tenancy,
                                     "releases/bookinfo/reviews.yaml": dump(good),
                                     "releases/bookinfo/ratings.yaml": dump(ratings)})
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget() if target == "git" else Recording())
    assert ctl.run_pass().error is None
    before = run("rev-parse", "main", cwd=bare).strip()
    tree_before = run("ls-tree", "-r", "main", cwd=bare)
    # a tenant breaks sluice.yaml (tenancy off on today's main) and adds a release in kube-system
    evil = release_doc(name="miner", namespace="kube-system",
                       template=template(hostPID=True, serviceAccountName="cluster-admin-sa",
                                         container={"securityContext": {"privileged": True}}))
    evil["metadata"]["namespace"] = "kube-system"
    human = clone_work(str(bare), tmp_path / "human")
    broken = SETTINGS + tenancy + b"providers:\n  prometheus: {adress: http://x}\n"
    tip = human_commit(human, {"sluice.yaml": broken, "releases/kube-system/miner.yaml": dump(evil),
                               "releases/bookinfo/reviews.yaml": dump({**good, "spec": {
                                   **good["spec"], "target": {"version": "v3", "image": "r:3"}}})}, "tenant")
    run("rm", "-q", "releases/bookinfo/ratings.yaml", cwd=human)   # and a release goes: no prune either
    run("commit", "-q", "-m", "drop ratings", cwd=human)
    run("push", "-q", "origin", "HEAD", cwd=human)
    tip = run("rev-parse", "HEAD", cwd=human).strip()
    if target == "kubernetes":
        ctl.target.calls.clear()
    report = ctl.run_pass()
    assert run("rev-parse", "main", cwd=bare).strip() == tip       # no commit on top
    assert not report.pushed and not report.commits
    assert "kube-system" not in run("ls-tree", "-r", "main", "--", "rendered", cwd=bare)
    assert [line for line in run("ls-tree", "-r", "main", "--", "rendered", cwd=bare).splitlines()] == \
        [line for line in tree_before.splitlines() if "\trendered/" in line]
    msgs = [str(p) for p in report.problems]
    assert msgs[0].startswith("sluice.yaml:7:3: providers.prometheus"), msgs
    assert {p.release for p in report.problems if p.release} == {"bookinfo/reviews", "kube-system/miner"}
    if target == "git":
        assert "rendered/bookinfo/ratings.yaml" in run("ls-tree", "-r", "main", "--", "rendered", cwd=bare)
    if target == "kubernetes":
        assert ctl.target.calls == []   # not even a prune of the release that went
    assert before != tip


def test_validate_reports_held_releases_and_which_tenancy_applies(tmp_path, capsys):
    root = tmp_path / "repo"
    (root / "releases/shop").mkdir(parents=True)
    (root / "releases/shop/cart.yaml").write_text(dump(release_doc(name="cart", namespace="shop")))
    (root / "sluice.yaml").write_bytes(SETTINGS + b"tenancy:\n  folders:\n    shop: {namespaces: [shop, kube-system]}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(POLICY)
    assert main(["validate", str(root)]) == 0
    assert "tenancy: sluice.yaml (no --policy-file)" in capsys.readouterr().err
    assert main(["validate", str(root), "--policy-file", str(policy)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("sluice.yaml:5:31: namespace 'kube-system' is outside folder 'shop''s allowance")
    assert "releases/shop/cart.yaml:1:1: held: sluice.yaml is invalid" in out.out
    assert f"tenancy: the controller policy {policy}" in out.err
    (root / "sluice.yaml").write_bytes(SETTINGS + b"tenancy:\n  folders:\n    shop: {namespaces: [shop]}\n")
    assert main(["validate", str(root), "--policy-file", str(policy), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tenancy"] == {"source": "policy", "policyFile": str(policy), "narrowedBy": "sluice.yaml"}
    policy.write_text("kind: Policy\nbogus: 1\n")
    assert main(["validate", str(root), "--policy-file", str(policy)]) != 0
    assert "policy.yaml:2:1: unknown field 'bogus'" in capsys.readouterr().err


def test_policy_without_tenancy_leaves_it_to_the_repo_and_empty_tenancy_grants_none():
    only_trust = pol(b"apiVersion: sluice.dev/v1alpha1\nkind: Policy\ntrust: {sshAllowedSigners: /etc/s}\n")
    assert load_files(files(release_doc()), policy=only_trust).releases
    none = pol(b"apiVersion: sluice.dev/v1alpha1\nkind: Policy\ntenancy: {}\n")
    out = load_files(files(release_doc()), policy=none)
    assert out.releases == [] and "no tenancy allowance in the controller policy" in str(out.problems[0])


def test_run_applies_the_policy_file_and_refuses_to_start_on_an_invalid_one(tmp_path, capsys):
    bare = make_bare(tmp_path, seed={"sluice.yaml": SETTINGS,
                                     "releases/batch/job.yaml": dump(release_doc(name="job", namespace="batch"))})
    before = run("rev-parse", "main", cwd=bare).strip()
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(POLICY)
    args = ["run", "--repo", str(bare), "--target", "git", "--once", "--no-watch", "--workdir", str(tmp_path / "w")]
    assert main([*args, "--policy-file", str(policy)]) == 0
    assert "folder 'batch' has no tenancy allowance in the controller policy" in capsys.readouterr().err
    assert run("rev-parse", "main", cwd=bare).strip() == before        # batch is not rendered
    policy.write_text("apiVersion: sluice.dev/v1alpha1\nkind: Policy\ntenancy: {folders: {Bad_Name: {}}}\n")
    assert main([*args, "--policy-file", str(policy)]) != 0
    assert "the policy file is invalid" in capsys.readouterr().err
    assert run("rev-parse", "main", cwd=bare).strip() == before


def test_under_a_policy_the_repo_may_not_choose_its_appliers():
    """A repo edit could switch off a folder's wait for Argo CD or Flux, or name any
    object for Sluice to read and patch: under a policy, appliers are the controller's."""
    settings = SETTINGS + b"appliers:\n  shop: {applier: none}\n"
    out = load_files(files(release_doc(name="cart", namespace="shop"), settings=settings), policy=pol())
    bad = [p for p in out.problems if p.file == "sluice.yaml"]
    assert bad and "appliers" in bad[0].message and bad[0].line, [str(p) for p in out.problems]
    out = load_files(files(release_doc(name="cart", namespace="shop"), settings=settings))
    assert not out.problems   # without a policy the repo's sluice.yaml chooses
