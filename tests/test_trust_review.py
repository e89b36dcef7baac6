"""Trust holes found by an adversarial review of issue 14, each reproduced
before its fix: secrets a repo edit could send elsewhere, a wildcard host that
claims a whole gateway, steering inside a person's merge or behind a hook that
stages more, a retired SSH key used by backdating, an ambient keyring trusted,
and trust on while Sluice's own commits would be unsigned."""

import os
import subprocess
import sys

import pytest

from reconciler.adapters.trust import TrustPolicy, verify
from reconciler.core.loader import load_files
from tests.support.gitserver import make_bare, run
from tests.support.signing import gpg_key, ssh_key
from tests.support.specs import dump, release_doc

POLICY = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Policy",
          "tenancy": {"folders": {"bookinfo": {"hosts": ["*.bookinfo.svc.cluster.local", "reviews.example.com"]}}}}


def test_under_a_policy_the_repo_cannot_name_the_controllers_secret_files():
    settings = b"providers:\n  prometheus:\n    address: http://127.0.0.1:1\n    tokenFile: /var/run/secrets/token\n"
    loaded = load_files({"sluice.yaml": settings, "releases/bookinfo/reviews.yaml": dump(release_doc()).encode()},
                        policy=POLICY)
    assert not loaded.releases and any("credentials are the controller's" in p.message and p.line == 4
                                       for p in loaded.problems), loaded.problems
    # an address with user:password is refused by the schema, with or without a policy
    bad = b"providers:\n  prometheus:\n    address: http://bob:secret@prom:9090\n"
    assert load_files({"sluice.yaml": bad}).problems


@pytest.mark.parametrize("host,ok", [("*", False), ("*.svc.cluster.local", False), ("*.cluster.local", False),
                                     ("reviews.example.com", True), ("*.bookinfo.svc.cluster.local", True),
                                     ("reviews", True)])
def test_a_wildcard_host_is_judged_as_istio_reads_it(host, ok):
    doc = release_doc(service={"name": "reviews", "port": 9080, "hosts": [host]})
    loaded = load_files({"releases/bookinfo/reviews.yaml": dump(doc).encode()}, policy=POLICY)
    assert bool(loaded.releases) == ok, loaded.problems


def _sluice(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "P", "GIT_AUTHOR_EMAIL": "p@x", "GIT_COMMITTER_NAME": "P",
           "GIT_COMMITTER_EMAIL": "p@x"}
    return subprocess.run([sys.executable, "-m", "reconciler.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


def _clone(tmp_path, seed):
    bare = make_bare(tmp_path, seed=seed)
    work = tmp_path / "w"
    run("clone", "-q", str(bare), str(work))
    return work


def test_steering_refuses_inside_a_merge_and_undoes_a_commit_a_hook_widened(tmp_path):
    rel = "releases/bookinfo/reviews.yaml"
    work = _clone(tmp_path, {rel: dump(release_doc()), "app.txt": "base\n", "other.txt": "x\n"})
    run("checkout", "-q", "-b", "feature", cwd=work)
    (work / "app.txt").write_text("feature\n")
    run("commit", "-q", "-am", "feature", cwd=work)
    run("checkout", "-q", "main", cwd=work)
    (work / "app.txt").write_text("main\n")
    run("commit", "-q", "-am", "main", cwd=work)
    subprocess.run(["git", "merge", "feature"], cwd=work, capture_output=True)   # a conflict, left open
    head = run("rev-parse", "HEAD", cwd=work)
    out = _sluice("pause", "reviews", cwd=work)
    assert out.returncode != 0 and "in progress" in out.stderr and run("rev-parse", "HEAD", cwd=work) == head
    subprocess.run(["git", "merge", "--abort"], cwd=work, check=True)
    # a pre-commit hook that stages the person's unfinished edit
    (work / "other.txt").write_text("unfinished\n")
    hook = work / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\ngit add -u\n")
    hook.chmod(0o755)
    out = _sluice("pause", "reviews", cwd=work)
    assert out.returncode != 0 and "hook" in out.stderr
    assert run("rev-parse", "HEAD", cwd=work) == head and (work / "other.txt").read_text() == "unfinished\n"


def test_only_the_configured_anchors_count(tmp_path):
    alice, old = ssh_key(tmp_path, "alice"), ssh_key(tmp_path, "old")
    pub = {k: (k.parent / (k.name + ".pub")).read_text() for k in (alice, old)}
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'alice@example.com namespaces="git" {pub[alice]}')
    policy = TrustPolicy(ssh_allowed_signers=str(signers), home=str(tmp_path / "gh"))
    work = tmp_path / "w"
    run("init", "-q", "-b", "main", str(work))

    def commit(msg, key=None, fmt="ssh", env=None):
        (work / "f.txt").write_text(msg)
        run("add", "-A", cwd=work)
        sign = ["-c", f"gpg.format={fmt}", "-c", f"user.signingkey={key}", "commit", "-q", "-S"] if key else ["commit", "-q"]
        run(*sign, "-m", msg, cwd=work, env=env or {})
        return run("rev-parse", "HEAD", cwd=work).strip()
    assert verify(work, commit("base", alice), policy).ok
    # an OpenPGP key trusted in the controller user's own keyring is no anchor
    home, _ = gpg_key(tmp_path, "mallory", "mallory@example.com")
    tip = commit("gpg", "mallory@example.com", fmt="openpgp", env={"GNUPGHOME": str(home)})
    os.environ["GNUPGHOME"] = str(home)
    try:
        assert not verify(work, tip, policy).ok
    finally:
        del os.environ["GNUPGHOME"]
    # a retired key with valid-before: git would check it against a committer date the signer writes
    signers.write_text(f'alice@example.com namespaces="git" {pub[alice]}'
                       f'old@example.com namespaces="git",valid-before="20250101" {pub[old]}')
    verdict = verify(work, tip, policy)
    assert not verdict.ok and "valid-before" in verdict.reason


def test_run_refuses_trust_without_a_signing_key(tmp_path):
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(release_doc())})
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    out = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "run", "--once", "--repo", str(bare),
                          "--target", "git", "--workdir", str(tmp_path / "w"),
                          "--trust-ssh-allowed-signers", str(signers)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--signing-key" in out.stderr
