"""Steering commands make one small commit a person could have made by hand."""

import pathlib
import subprocess
import shutil

from reconciler.adapters.files import read_tree
from reconciler.cli.main import main
from reconciler.core.loader import load_files
from reconciler.core.steer import set_spec_key
from tests.support.gitserver import run

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "a@x"}


def test_set_spec_key_touches_one_line():
    text = "kind: Release\nspec:\n  # keep me\n  paused: false  # why\n  target: {version: v2}\nstatus:\n  paused: x\n"
    assert set_spec_key(text, "paused", True) == text.replace("paused: false  # why", "paused: true  # why")
    added = set_spec_key(text, "approve", "v2")
    assert added.splitlines()[2] == '  approve: "v2"' and len(added.splitlines()) == len(text.splitlines()) + 1


def test_pause_approve_retry_commit(tmp_path, capsys, monkeypatch):
    work = tmp_path / "config"
    shutil.copytree(REPO / "sample-repo", work)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work, env=ENV)
    run("commit", "-q", "-m", "base", cwd=work, env=ENV)
    before = (work / "releases/bookinfo/reviews.yaml").read_text()
    assert main(["pause", "bookinfo/reviews", "--repo", str(work)]) == 0
    assert main(["approve", "reviews", "--repo", str(work)]) == 0
    after = (work / "releases/bookinfo/reviews.yaml").read_text()
    assert len(after.splitlines()) == len(before.splitlines()) + 2
    rel = load_files(read_tree(work)).by_key()["bookinfo/reviews"]
    assert rel.spec["paused"] is True and rel.spec["approve"] == "v2"
    log = run("log", "--format=%s", cwd=work).splitlines()
    assert log[:2] == ["bookinfo/reviews: approve (sluice approve)", "bookinfo/reviews: pause (sluice pause)"]
    assert main(["retry", "reviews", "--repo", str(work)]) == 0
    rel = load_files(read_tree(work)).by_key()["bookinfo/reviews"]
    assert rel.spec["retry"] == 1 and rel.spec["abort"] is False


def _repo(tmp_path, monkeypatch, files=None):
    work = tmp_path / "config"
    shutil.copytree(REPO / "sample-repo", work)
    for path, data in (files or {}).items():
        (work / path).write_bytes(data)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    run("init", "-q", "-b", "main", cwd=work)
    run("config", "core.autocrlf", "false", cwd=work)
    run("add", "-A", cwd=work, env=ENV)
    run("commit", "-q", "-m", "base", cwd=work, env=ENV)
    return work


def test_approve_is_signed_with_the_persons_config_and_the_controller_accepts_it(tmp_path, monkeypatch):
    from reconciler.adapters.trust import TrustPolicy, verify
    from tests.support.signing import allowed_signers, ssh_key
    work = _repo(tmp_path, monkeypatch)
    key = ssh_key(tmp_path, "ann")
    signers = allowed_signers(tmp_path, {"a@x": key})
    base = run("rev-parse", "HEAD", cwd=work).strip()
    for k, v in {"gpg.format": "ssh", "user.signingkey": str(key), "commit.gpgsign": "true"}.items():
        run("config", k, v, cwd=work)
    assert main(["approve", "reviews", "--repo", str(work)]) == 0
    head = run("rev-parse", "HEAD", cwd=work).strip()
    assert head != base and run("log", "-1", "--format=%an <%ae>", cwd=work).strip() == "Ann <a@x>"
    verdict = verify(work, head, TrustPolicy(ssh_allowed_signers=str(signers), home=str(tmp_path / "k"), since=base))
    assert verdict.ok, verdict.reason


def test_steering_runs_the_persons_hooks(tmp_path, monkeypatch):
    work = _repo(tmp_path, monkeypatch)
    hook = work / ".git/hooks/commit-msg"
    hook.write_text("#!/bin/sh\necho 'Signed-off-by: Ann <a@x>' >> \"$1\"\n")
    hook.chmod(0o755)
    assert main(["pause", "reviews", "--repo", str(work)]) == 0
    assert "Signed-off-by: Ann <a@x>" in run("log", "-1", "--format=%B", cwd=work)


def test_staged_unrelated_file_is_not_committed(tmp_path, monkeypatch):
    work = _repo(tmp_path, monkeypatch)
    (work / "README.md").write_text("staged, not for this commit\n")
    (work / "releases/bookinfo/ratings.yaml").write_text((work / "releases/bookinfo/ratings.yaml").read_text() + "# wip\n")
    run("add", "README.md", cwd=work)
    assert main(["pause", "reviews", "--repo", str(work)]) == 0
    changed = run("show", "--name-only", "--format=", "HEAD", cwd=work).split()
    assert changed == ["releases/bookinfo/reviews.yaml"]
    status = run("status", "--porcelain", cwd=work).splitlines()
    assert "M  README.md" in status and " M releases/bookinfo/ratings.yaml" in status   # still theirs, uncommitted
    assert not any("reviews.yaml" in line for line in status)                            # work tree matches HEAD


def test_crlf_bom_and_missing_final_newline_are_kept(tmp_path, monkeypatch):
    original = (REPO / "sample-repo/releases/bookinfo/reviews.yaml").read_bytes()
    crlf = b"\xef\xbb\xbf" + original.replace(b"\n", b"\r\n").rstrip(b"\r\n")
    work = _repo(tmp_path, monkeypatch, {"releases/bookinfo/reviews.yaml": crlf})
    assert main(["pause", "reviews", "--repo", str(work)]) == 0
    committed = subprocess.run(["git", "show", "HEAD:releases/bookinfo/reviews.yaml"], cwd=work,
                               capture_output=True, check=True).stdout
    assert committed.startswith(b"\xef\xbb\xbf") and not committed.endswith(b"\n")
    assert b"\n" not in committed.replace(b"\r\n", b"")                      # every line still CRLF
    assert b"paused: true\r\n" in committed
    assert committed.count(b"\r\n") in (crlf.count(b"\r\n"), crlf.count(b"\r\n") + 1)   # one line edited or added
    assert (work / "releases/bookinfo/reviews.yaml").read_bytes() == committed


def test_set_spec_key_keeps_a_missing_final_newline():
    assert set_spec_key("spec:\n  paused: false", "paused", True) == "spec:\n  paused: true"
    assert set_spec_key("spec:", "paused", True) == "spec:\n  paused: true"
