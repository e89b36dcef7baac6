"""Signed commits with real ssh-keygen and gpg keys: a trusted signed tip is
acted on; an unsigned tip, a tip signed by an unknown key, and a tip whose
parent chain hides an unsigned commit are refused and nothing is applied;
the controller's own signed commits verify."""

import os

import pytest

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.trust import TrustPolicy, signing_config, verify
from reconciler.controller import Controller, GitTarget
from tests.support.gitserver import make_bare, run
from tests.support.signing import allowed_signers, gpg_key, ssh_key
from tests.support.specs import dump, release_doc

pytestmark = pytest.mark.timeout(120)
DOC = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
DOC["spec"]["analysis"] = {"metrics": []}


def commit(work, key, message, *, fmt="ssh", gnupghome=None, email="alice@example.com", edit=True):
    if edit:
        (work / "notes.txt").write_text(message)
        run("add", "-A", cwd=work)
    env = {"GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_EMAIL": email}
    if gnupghome:
        env["GNUPGHOME"] = str(gnupghome)
    sign = ["-c", f"gpg.format={fmt}", "-c", f"user.signingkey={key}", "commit", "-q", "-S"] if key else ["commit", "-q"]
    run(*sign, "-m", message, cwd=work, env=env)
    run("push", "-q", "origin", "HEAD:main", cwd=work)
    return run("rev-parse", "HEAD", cwd=work).strip()


@pytest.fixture
def setup(tmp_path):
    alice, mallory, sluice = (ssh_key(tmp_path, n) for n in ("alice", "mallory", "sluice"))
    signers = allowed_signers(tmp_path, {"alice@example.com": alice, "sluice@example.com": sluice})
    bare = make_bare(tmp_path, seed=None)
    work = tmp_path / "work"
    run("clone", "-q", str(bare), str(work))
    (work / "releases/bookinfo").mkdir(parents=True)
    (work / "releases/bookinfo/reviews.yaml").write_text(dump(DOC))
    run("add", "-A", cwd=work)
    commit(work, alice, "alice: add reviews", edit=False)
    policy = TrustPolicy(ssh_allowed_signers=str(signers), home=str(tmp_path / "trusted-gnupg"))
    repo = GitRepo(str(bare), tmp_path / "clone", sign_config={**signing_config(str(sluice)), "user.email": "sluice@example.com"})
    ctl = Controller(repo, GitTarget(), trust=policy)
    return dict(alice=alice, mallory=mallory, work=work, bare=bare, ctl=ctl, policy=policy, tmp=tmp_path)


def test_trusted_tip_is_applied_and_own_commits_verify(setup):
    report = setup["ctl"].run_pass()
    assert report.error is None and report.pushed
    tip = run("rev-parse", "main", cwd=setup["bare"]).strip()
    assert run("log", "-1", "--format=%s", "main", cwd=setup["bare"]).startswith("bookinfo/reviews: start")
    again = setup["ctl"].run_pass()     # Sluice's own signed commit is now the tip
    assert again.error is None
    assert verify(setup["ctl"].repo.workdir, tip, setup["policy"]).ok


@pytest.mark.parametrize("case", ["unsigned tip", "unknown key", "hidden unsigned ancestor"])
def test_untrusted_tips_are_refused_and_nothing_happens(setup, case):
    ctl, work = setup["ctl"], setup["work"]
    assert ctl.run_pass().error is None
    run("pull", "-q", "origin", "main", cwd=work)
    if case == "unsigned tip":
        commit(work, None, "unsigned change")
        expected = "tip is unsigned"
    elif case == "unknown key":
        commit(work, setup["mallory"], "mallory's change", email="mallory@example.com")
        expected = "tip is signed by a key that is not trusted"
    else:
        commit(work, None, "sneaky unsigned")
        commit(work, setup["alice"], "innocent signed on top")
        expected = "is unsigned"
    before = run("rev-parse", "main", cwd=setup["bare"]).strip()
    report = ctl.run_pass()
    assert report.error and expected in report.error and before[:12] in report.error
    assert not report.pushed and report.outcomes == {}
    assert run("rev-parse", "main", cwd=setup["bare"]).strip() == before    # nothing written


def test_openpgp_signatures(tmp_path):
    home, pub = gpg_key(tmp_path, "alice", "alice@example.com")
    other_home, _ = gpg_key(tmp_path, "eve", "eve@example.com")
    bare = make_bare(tmp_path, seed=None)
    work = tmp_path / "work"
    run("clone", "-q", str(bare), str(work))
    commit(work, "alice@example.com", "signed by alice", fmt="openpgp", gnupghome=home)
    policy = TrustPolicy(openpgp_keys=(str(pub),), home=str(tmp_path / "trusted"))
    tip = run("rev-parse", "HEAD", cwd=work).strip()
    assert verify(work, tip, policy).ok
    commit(work, "eve@example.com", "signed by eve", fmt="openpgp", gnupghome=other_home, email="eve@example.com")
    tip = run("rev-parse", "HEAD", cwd=work).strip()
    verdict = verify(work, tip, policy)
    assert not verdict.ok and "unknown key" in verdict.reason
