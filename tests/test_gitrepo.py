"""The git adapter against real servers on loopback: path, file://, git://
(git daemon) and smart HTTP (git http-backend, with a token)."""

import subprocess

import pytest

from reconciler.adapters.gitrepo import PENDING_REF, CommitPlan, Credentials, GitRepo
from reconciler.errors import GitAuthError, GitError
from tests.support.gitserver import HttpGit, clone_work, free_port, git_daemon, human_commit, make_bare, run

SEED = {"releases/shop/cart.yaml": "# cart\nspec: {a: 1}\n", "sluice.yaml": "kind: Settings\n", "README.md": "hi\n"}


@pytest.fixture
def bare(tmp_path):
    return make_bare(tmp_path, seed=SEED)


def status_plan(path, value):
    def compute(snap):
        text = snap.read(path).decode()
        return [CommitPlan({path: (text.split("status:")[0] + f"status: {{v: {value}}}\n").encode()},
                           f"shop/cart: set v={value}\n\nSluice-Release: shop/cart\nSluice-Action: advance\n")]
    return compute


def remote_log(bare):
    return run("log", "--format=%H %an %s", "main", cwd=bare).splitlines()


@pytest.mark.parametrize("scheme", ["path", "file", "git", "http"])
def test_sync_read_write_every_transport(tmp_path, bare, scheme):
    if scheme == "git":
        ctx = git_daemon(tmp_path)
    elif scheme == "http":
        ctx = HttpGit(tmp_path, token="s3cret")
    else:
        ctx = None
    with (ctx or _null()) as server:
        url = {"path": str(bare), "file": f"file://{bare}",
               "git": f"{server}/config.git" if scheme == "git" else "",
               "http": f"{getattr(server, 'url', '')}/config.git"}[scheme]
        creds = Credentials(token="s3cret") if scheme == "http" else None
        repo = GitRepo(url, tmp_path / "clone", credentials=creds)
        tip = repo.sync()
        files = repo.read_files(tip)
        assert set(files) == {"releases/shop/cart.yaml", "sluice.yaml"}
        result = repo.write(status_plan("releases/shop/cart.yaml", 1))
        assert result.pushed and len(result.commits) == 1
        assert remote_log(bare)[0].split(" ", 2)[1:] == ["Sluice", "shop/cart: set v=1"]
        # same content again: no empty commit, nothing pushed
        again = repo.write(status_plan("releases/shop/cart.yaml", 1))
        assert not again.pushed and again.commits == []
        assert len(remote_log(bare)) == 2
    if scheme == "http":
        assert all(auth and "s3cret" not in auth for _, _, auth in server.requests)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_rejected_push_recomputes_on_the_new_tip(tmp_path, bare):
    repo = GitRepo(str(bare), tmp_path / "clone")
    repo.sync()
    human = clone_work(str(bare), tmp_path / "human")
    seen = []

    def compute(snap):
        text = snap.read("releases/shop/cart.yaml").decode()
        seen.append("paused" in text)
        if len(seen) == 1:   # a human pushes between our read and our push
            human_commit(human, {"releases/shop/cart.yaml": text.replace("spec: {a: 1}", "spec: {a: 1, paused: true}")}, "pause cart")
        value = "held" if "paused" in text else "advanced"
        return [CommitPlan({"releases/shop/cart.yaml": (text.split("status:")[0] + f"status: {{v: {value}}}\n").encode()}, "step\n")]

    result = repo.write(compute, sleep=lambda s: None)
    assert result.pushed and result.attempts == 2 and seen == [False, True]
    final = run("show", "main:releases/shop/cart.yaml", cwd=bare)
    assert "paused: true" in final and "status: {v: held}" in final
    subjects = [line.split(" ", 2)[2] for line in remote_log(bare)]
    assert subjects == ["step", "pause cart", "seed"]


def test_gives_up_after_bounded_attempts_and_keeps_the_work(tmp_path, bare):
    repo = GitRepo(str(bare), tmp_path / "clone")
    repo.sync()
    human = clone_work(str(bare), tmp_path / "human")
    n = [0]

    def compute(snap):
        n[0] += 1
        human_commit(human, {f"notes/{n[0]}.txt": "x"}, f"note {n[0]}")
        return [CommitPlan({"releases/shop/cart.yaml": b"spec: {}\nstatus: {v: 1}\n"}, "step\n")]

    with pytest.raises(GitError, match="rejected 3 times.*refs/sluice/pending"):
        repo.write(compute, max_attempts=3, sleep=lambda s: None)
    pending = repo.git("rev-parse", PENDING_REF).strip()
    assert repo.git("log", "-1", "--format=%s", pending).strip() == "step"
    assert len(remote_log(bare)) == 4   # seed + 3 human notes, nothing lost, nothing forced


def test_wrong_token_is_a_clear_permanent_error_without_the_secret(tmp_path, bare):
    with HttpGit(tmp_path, token="right-token") as server:
        repo = GitRepo(f"{server.url}/config.git", tmp_path / "clone", credentials=Credentials(token="wrong-token-123"))
        with pytest.raises(GitAuthError) as err:
            repo.sync()
    assert "refused our credentials" in str(err.value)
    assert "wrong-token-123" not in str(err.value)


def test_failing_server_is_temporary(tmp_path, bare):
    with HttpGit(tmp_path) as server:
        server.fail = True
        repo = GitRepo(f"{server.url}/config.git", tmp_path / "clone")
        with pytest.raises(GitError) as err:
            repo.sync()
        assert not isinstance(err.value, GitAuthError)
        server.fail = False
        assert repo.sync()   # recovers once the server does


def test_unreachable_remote_and_missing_branch(tmp_path, bare):
    down = GitRepo(f"git://127.0.0.1:{free_port()}/config.git", tmp_path / "a")
    with pytest.raises(GitError, match="fetch git://127.0.0.1"):
        down.sync()
    missing = GitRepo(str(bare), tmp_path / "b", branch="nope")
    with pytest.raises(GitAuthError, match="branch 'nope' does not exist"):
        missing.sync()


def test_server_refuses_force_push(tmp_path, bare):
    human = clone_work(str(bare), tmp_path / "human")
    run("commit", "-q", "--amend", "-m", "rewrite", cwd=human)
    with pytest.raises(subprocess.CalledProcessError):
        run("push", "-q", "--force", "origin", "HEAD:main", cwd=human)


def test_history_reads_steps_and_human_edits(tmp_path, bare):
    from reconciler.core.messages import format_commit
    from reconciler.core.model import Event
    repo = GitRepo(str(bare), tmp_path / "clone")
    repo.sync()
    human = clone_work(str(bare), tmp_path / "human")
    human_commit(human, {"releases/shop/cart.yaml": "# cart\nspec: {a: 2}\n"}, "retarget cart to v2")
    repo.sync()
    for w in (10, 20):
        ev = Event("shop/cart", "advance", f"canary v2 {w - 10}% -> {w}% (step {w // 10}/2)", weight=w,
                   previous_weight=w - 10, step=w // 10, steps=2, version="v2", stable="v1", phase="Progressing",
                   evidence=({"name": "request-success-rate", "value": 99.9, "min": 99, "ok": True},))

        def compute(snap, w=w, ev=ev):
            return [CommitPlan({"releases/shop/cart.yaml": f"# cart\nspec: {{a: 2}}\nstatus: {{weight: {w}}}\n".encode()},
                               format_commit(ev))]
        repo.write(compute)
    records = repo.history("shop/cart")
    assert [r.action for r in records] == ["edit", "edit", "advance", "advance"]
    assert records[1].author == "Human" and records[1].subject == "retarget cart to v2"
    assert [r.weight for r in records[2:]] == [10, 20]
    assert records[3].previous_weight == 10 and records[3].step == "2/2"
    assert records[3].evidence == ({"name": "request-success-rate", "value": 99.9, "min": 99.0, "ok": True},)
    assert records[3].author == "Sluice"


def test_a_server_error_on_a_port_that_contains_401_is_not_an_auth_error(tmp_path):
    import git as gitpython
    repo = GitRepo("http://127.0.0.1:40113/config.git", tmp_path / "c")
    err = gitpython.GitCommandError(["git", "fetch"], 128, stderr="fatal: unable to access "
                                    "'http://127.0.0.1:40113/config.git/': The requested URL returned error: 500")
    assert not isinstance(repo._fail("fetch", err), GitAuthError)
    err = gitpython.GitCommandError(["git", "fetch"], 128, stderr="fatal: unable to access "
                                    "'http://127.0.0.1:8080/config.git/': The requested URL returned error: 403")
    assert isinstance(repo._fail("fetch", err), GitAuthError)


def _bloom_stats(repo: GitRepo, path: str) -> dict:
    """git's own count of how a path-limited log used the changed-path filters (trace2)."""
    import json
    import os
    trace = repo.workdir.parent / "trace2.txt"
    trace.unlink(missing_ok=True)
    subprocess.run(["git", "-C", str(repo.workdir), "log", "--format=%H", repo.remote_ref, "--", path],
                   env={**os.environ, "GIT_TRACE2_PERF": str(trace)}, check=True, capture_output=True)
    line = next(ln for ln in trace.read_text().splitlines() if "statistics:" in ln and "bloom" in ln)
    return json.loads(line.split("statistics:", 1)[1])


def test_the_clone_keeps_changed_path_filters_for_every_fetched_commit(tmp_path, bare):
    repo = GitRepo(str(bare), tmp_path / "clone")
    repo.sync()
    human = clone_work(str(bare), tmp_path / "human")
    for i in range(3):   # later commits arrive by fetch: the fetch extends the graph, filters included
        human_commit(human, {f"notes/{i}.txt": "x"}, f"note {i}")
        repo.sync()
    repo.write(status_plan("releases/shop/cart.yaml", 1))   # our own commit: the next fetch adds it
    human_commit(human, {"notes/last.txt": "x"}, "last")
    repo.sync()
    stats = _bloom_stats(repo, "releases/shop/cart.yaml")
    assert stats["filter_not_present"] == 0, stats     # every commit but the root has a filter
    assert stats["definitely_not"] >= 4, stats          # the notes were skipped without a tree diff
    assert [r.action for r in repo.history("shop/cart")] == ["edit", "advance"]


def test_history_never_writes_into_a_persons_checkout(tmp_path, bare):
    human = clone_work(str(bare), tmp_path / "human")
    human_commit(human, {"releases/shop/cart.yaml": "spec: {a: 9}\n"}, "retarget")
    before = sorted(p.relative_to(human) for p in (human / ".git").rglob("*"))
    repo = GitRepo.open_local(human)
    assert [r.subject for r in repo.history("shop/cart")] == ["seed", "retarget"]
    assert sorted(p.relative_to(human) for p in (human / ".git").rglob("*")) == before


def test_history_of_a_yml_release_file(tmp_path):
    bare = make_bare(tmp_path, seed={"releases/shop/cart.yml": "spec: {a: 1}\n"})
    repo = GitRepo(str(bare), tmp_path / "clone")
    repo.sync()
    assert [r.subject for r in repo.history("shop/cart")] == ["seed"]
    assert repo.history("shop/other") == []


def test_tip_reads_packed_refs_and_an_unfetched_branch_is_a_clear_error(tmp_path, bare):
    repo = GitRepo(str(bare), tmp_path / "clone")
    tip = repo.sync()
    assert tip == run("rev-parse", "main", cwd=bare).strip()
    run("pack-refs", "--all", cwd=tmp_path / "clone")   # no loose ref file left
    assert not (tmp_path / "clone" / "refs/remotes/origin/main").exists()
    assert repo.tip() == tip
    empty = GitRepo(str(bare), tmp_path / "empty")
    empty._ensure()
    with pytest.raises(GitAuthError, match="has not been fetched"):
        empty.tip()


def test_a_later_successful_push_drops_the_kept_work(tmp_path, bare):
    repo = GitRepo(str(bare), tmp_path / "clone")
    repo.sync()
    human = clone_work(str(bare), tmp_path / "human")

    def racing(snap):
        human_commit(human, {f"notes/{snap.tip}.txt": "x"}, "note")
        return [CommitPlan({"releases/shop/cart.yaml": b"spec: {}\nstatus: {v: 1}\n"}, "step\n")]

    with pytest.raises(GitError, match="refs/sluice/pending"):
        repo.write(racing, max_attempts=1, sleep=lambda s: None)
    assert run("for-each-ref", PENDING_REF, cwd=tmp_path / "clone").strip()
    repo.sync()
    result = repo.write(status_plan("releases/shop/cart.yaml", 2))
    assert result.pushed and repo.tip() == result.tip == run("rev-parse", "main", cwd=bare).strip()
    assert run("for-each-ref", PENDING_REF, cwd=tmp_path / "clone").strip() == ""
