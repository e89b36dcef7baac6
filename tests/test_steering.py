"""Steering commands make one small commit a person could have made by hand."""

import pathlib
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
