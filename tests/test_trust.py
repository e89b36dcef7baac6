"""Signed commits with real ssh-keygen and gpg keys: a trusted signed tip is
acted on; an unsigned tip, a tip signed by an unknown key, and a tip whose
parent chain hides an unsigned commit are refused and nothing is applied;
the controller's own signed commits verify."""


import pytest

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.trust import TrustPolicy, signing_config, verify
from reconciler.controller import Controller
from reconciler.adapters.gittarget import GitTarget
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


class Recording(GitTarget):
    """A cluster target that records every object it is asked to apply."""

    name = "kubernetes"

    def __init__(self):
        super().__init__()
        self.seen: list[dict] = []

    def apply(self, desired, *, keep, urgent=False):
        for objects in desired.values():
            self.seen.extend(objects)
        return super().apply(desired, keep=keep, urgent=urgent)


@pytest.mark.parametrize("target", ["git", "kubernetes"])
def test_unsigned_commit_pushed_during_push_retry_is_never_built_upon(setup, target):
    """Mallory's unsigned commit lands between Sluice's fetch and its push: the
    push is rejected, and the retry must verify the new tip before computing on it."""
    ctl, bare, work = setup["ctl"], setup["bare"], setup["work"]
    if target == "kubernetes":
        ctl.target = Recording()
    evil = {**DOC, "spec": {**DOC["spec"], "target": {"version": "v9", "image": "evil.example.com/pwn:1"}}}
    repo = ctl.repo
    real_push = repo._push
    attacked = []

    def push(sha):
        if not attacked:   # the attacker wins the race once
            run("pull", "-q", "origin", "main", cwd=work)
            (work / "releases/bookinfo/reviews.yaml").write_text(dump(evil))
            run("add", "-A", cwd=work)
            attacked.append(commit(work, None, "mallory: retarget", edit=False))
        return real_push(sha)

    repo._push = push
    report = ctl.run_pass()
    assert attacked, "the race was not staged"
    assert report.error and "refusing" in report.error and attacked[0][:12] in report.error
    assert ctl.refused and not report.pushed
    # nothing built on the attacker's commit, nothing of it rendered or applied
    assert run("rev-parse", "main", cwd=bare).strip() == attacked[0]
    assert run("ls-tree", "-r", "--name-only", "main", cwd=bare).count("rendered/") == 0
    if target == "kubernetes":
        assert "evil.example.com" not in repr(ctl.target.seen)
    assert "evil.example.com" not in repr(report.outcomes)
    again = ctl.run_pass()   # and the next pass refuses it too
    assert again.error and "tip is unsigned" in again.error
    assert run("rev-parse", "main", cwd=bare).strip() == attacked[0]


def test_key_removed_from_allowed_signers_is_refused_at_next_pass(setup):
    ctl, tmp = setup["ctl"], setup["tmp"]
    ctl.can_write = lambda: False    # a standby: nothing re-signs the tip, it stays alice's commit
    assert ctl.run_pass().error is None           # alice's tip: trusted, acted on
    allowed_signers(tmp, {"sluice@example.com": tmp / "sluice"})   # alice's key is revoked
    report = ctl.run_pass()
    assert report.error and "tip is signed by a key that is not trusted" in report.error
    run("pull", "-q", "origin", "main", cwd=setup["work"])
    commit(setup["work"], setup["alice"], "alice: another change")
    report = ctl.run_pass()
    assert report.error and "not trusted" in report.error


def test_openpgp_key_removed_from_configuration_is_refused(tmp_path):
    home, pub = gpg_key(tmp_path, "alice", "alice@example.com")
    bare = make_bare(tmp_path, seed=None)
    work = tmp_path / "work"
    run("clone", "-q", str(bare), str(work))
    commit(work, "alice@example.com", "signed by alice", fmt="openpgp", gnupghome=home)
    parent = tmp_path / "keyrings"
    assert verify(work, run("rev-parse", "HEAD", cwd=work).strip(),
                  TrustPolicy(openpgp_keys=(str(pub),), home=str(parent))).ok
    commit(work, "alice@example.com", "signed by alice again", fmt="openpgp", gnupghome=home)
    _, other = gpg_key(tmp_path, "bob", "bob@example.com")
    verdict = verify(work, run("rev-parse", "HEAD", cwd=work).strip(),
                     TrustPolicy(openpgp_keys=(str(other),), home=str(parent)))
    assert not verdict.ok and "unknown key" in verdict.reason
    assert list(parent.iterdir()) == []   # no keyring left behind to grow


def test_restart_on_a_persisted_clone_rechecks_the_tip_under_todays_keys(setup):
    ctl, tmp = setup["ctl"], setup["tmp"]
    ctl.can_write = lambda: False
    assert ctl.run_pass().error is None           # alice's tip verified; refs/sluice/verified persisted
    allowed_signers(tmp, {"sluice@example.com": tmp / "sluice"})   # alice's key removed while Sluice was down
    restarted = Controller(GitRepo(str(setup["bare"]), ctl.repo.workdir), GitTarget(), trust=ctl.trust,
                           can_write=lambda: False)
    report = restarted.run_pass()
    assert report.error and "tip is signed by a key that is not trusted" in report.error
