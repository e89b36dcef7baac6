"""Read-only commands never write: run on a checkout made read-only, and the
files, refs and index are byte-identical afterwards."""

import hashlib
import json
import pathlib
import shutil
import stat

from reconciler.cli.main import main
from tests.support.gitserver import run

REPO = pathlib.Path(__file__).resolve().parents[1]


def snapshot(root: pathlib.Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
        else:
            out[str(p.relative_to(root))] = "dir" + oct(p.stat().st_mode)
    return out


def make_checkout(tmp_path):
    work = tmp_path / "config"
    shutil.copytree(REPO / "sample-repo", work)
    env = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@x", "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "ann@x"}
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work, env=env)
    run("commit", "-q", "-m", "import", cwd=work, env=env)
    p = work / "releases/bookinfo/ratings.yaml"
    p.write_text(p.read_text().replace("iterations: 10", "iterations: 5"))
    run("commit", "-q", "-am", "shorter A/B test", cwd=work, env=env)
    return work


def test_read_only_commands_touch_nothing(tmp_path, capsys, monkeypatch):
    work = make_checkout(tmp_path)
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "cache"))
    for p in [work, *work.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = snapshot(work)
    assert main(["validate", str(work)]) == 0
    assert main(["render", str(work)]) == 0
    assert main(["status", str(work), "-o", "json"]) == 0
    assert main(["history", "bookinfo/reviews", "--repo", str(work), "-o", "json"]) == 0
    assert main(["plan", str(work), "--base", "HEAD~1", "--head", "HEAD", "--format", "json"]) in (0, 2)
    assert snapshot(work) == before
    for p in [work, *work.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_status_json_and_history_json(tmp_path, capsys, monkeypatch):
    work = make_checkout(tmp_path)
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["status", str(work), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["apiVersion"] == "sluice.dev/status/v1"
    reviews = next(r for r in doc["releases"] if r["name"] == "reviews")
    assert (reviews["phase"], reviews["weight"], reviews["step"], reviews["stable"], reviews["new"]) == \
        ("Progressing", 20, 2, "v1", "v2")
    assert reviews["lastChange"]["author"] == "Ann"
    assert main(["history", "reviews", "--repo", str(work), "-o", "json"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert hist["apiVersion"] == "sluice.dev/history/v1" and hist["records"][0]["action"] == "edit"
    assert main(["status", f"file://{tmp_path / 'nowhere'}"]) == 1
    assert "fetch" in capsys.readouterr().err


ANN = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@x", "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "ann@x"}


def test_status_shows_a_naive_status_time_as_unknown(tmp_path, capsys, monkeypatch):
    """A hand-written stepStartedAt without a UTC offset is doubt (core/trusted.py): its age
    is unknown ("-"), and the other releases are listed as usual."""
    work = make_checkout(tmp_path)
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "cache"))
    p = work / "releases/batch/migrator.yaml"
    p.write_text(p.read_text() + "status:\n  phase: Progressing\n  stepStartedAt: '2026-01-01T00:00:00'\n")
    run("commit", "-q", "-am", "naive time", cwd=work, env=ANN)
    assert main(["status", str(work)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {"reviews", "ratings", "details", "checkout"} <= {line.split()[1] for line in lines[1:]}
    migrator = next(line for line in lines if " migrator " in line)
    assert migrator.split()[-1] == "-" and "Progressing" in migrator


def test_history_ignores_forged_trailers_and_reads_a_key_literally(tmp_path, capsys, monkeypatch):
    """``Sluice-Weight: ²`` (str.isdigit() but not a number) is not Sluice's: an edit record.
    A file named ``releases/bookinfo/*.yaml`` has only its own commits (no glob)."""
    work = make_checkout(tmp_path)
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "cache"))
    p = work / "releases/bookinfo/ratings.yaml"
    p.write_text(p.read_text() + "# x\n")
    run("commit", "-q", "-am", "bookinfo/ratings: x\n\nSluice-Release: bookinfo/ratings\nSluice-Action: advance\n"
        "Sluice-Weight: \u00b2\n", cwd=work, env=ANN)
    (work / "releases/bookinfo/*.yaml").write_text("x: [\n")
    run("add", "-A", cwd=work, env=ANN)
    run("commit", "-q", "-m", "star file", cwd=work, env=ANN)
    assert main(["history", "bookinfo/ratings", "--repo", str(work), "-o", "json"]) == 0
    last = json.loads(capsys.readouterr().out)["records"][-1]
    assert (last["action"], last["bySluice"], last["weight"]) == ("edit", False, None)
    assert main(["history", "bookinfo/*", "--repo", str(work), "-o", "json"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert [r["subject"] for r in records] == ["star file"]
