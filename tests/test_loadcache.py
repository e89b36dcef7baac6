"""The loader's cache kept on disk for the read-only CLI (adapters/loadcache.py):
a second `status`/`plan` answers from it, a change is seen at once, and a damaged,
foreign or stale cache is a cold start, never a wrong answer."""

from __future__ import annotations

import contextlib
import io
import pickle

import pytest

from reconciler.adapters.loadcache import DiskLoadCache, cache_file
from reconciler.cli.commands.plan import command as plan_command
from reconciler.cli.source import cache_dir, open_source
from reconciler.core.loader import LoadCache
from reconciler.readmodel import rows
from tests.support.gitserver import run
from tests.support.specs import dump, release_doc

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    for name in ("alpha", "beta"):
        path = work / "releases" / "bookinfo" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(release_doc(name=name)))
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work, env=ENV)
    run("commit", "-q", "-m", "seed", cwd=work, env=ENV)
    return work


def kept(work) -> LoadCache:
    return DiskLoadCache(cache_file(cache_dir(), str(work.resolve()))).open()


def test_status_keeps_its_cache_outside_the_checkout_and_sees_a_change(checkout, tmp_path):
    before = {p.relative_to(checkout) for p in checkout.rglob("*")}
    first = rows(open_source(str(checkout)))
    assert {r["name"] for r in first} == {"alpha", "beta"} and all(r["valid"] for r in first)
    assert set(kept(checkout).entries) == {"releases/bookinfo/alpha.yaml", "releases/bookinfo/beta.yaml"}
    assert {p.relative_to(checkout) for p in checkout.rglob("*")} == before   # nothing written in the checkout
    path = checkout / "releases/bookinfo/beta.yaml"
    path.write_text(path.read_text().replace("kind: Release", "kind: Releasee", 1))
    second = {r["name"]: r for r in rows(open_source(str(checkout)))}
    assert second["beta"]["valid"] is False and "beta.yaml:" in second["beta"]["message"]
    assert second["alpha"]["valid"] is True


@pytest.mark.parametrize("damage", [b"", b"not a pickle", pickle.dumps(("another code", LoadCache())),
                                    pickle.dumps({"not": "a cache"})])
def test_a_damaged_or_foreign_cache_is_a_cold_start(checkout, damage):
    cold = rows(open_source(str(checkout)))
    target = cache_file(cache_dir(), str(checkout.resolve()))
    target.write_bytes(damage)
    assert rows(open_source(str(checkout))) == cold
    assert set(kept(checkout).entries) == {"releases/bookinfo/alpha.yaml", "releases/bookinfo/beta.yaml"}


def plan_text(work) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = plan_command.callback(str(work), "HEAD~1", "HEAD", "text", False)
    return code, out.getvalue()


def test_plan_answers_alike_cold_and_from_its_cache(checkout, tmp_path, monkeypatch):
    path = checkout / "releases/bookinfo/alpha.yaml"
    path.write_text(path.read_text().replace("replicas: 2", "replicas: 3", 1))
    run("commit", "-q", "-am", "alpha replicas", cwd=checkout, env=ENV)
    cold = plan_text(checkout)
    assert cold[0] == 2 and "bookinfo/alpha" in cold[1] and "bookinfo/beta" not in cold[1]
    assert plan_text(checkout) == cold   # from the cache
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert plan_text(checkout) == cold   # and without one


@pytest.mark.parametrize("base", ["no-such-ref", "--output=/tmp/x", "-h"])
def test_plan_refuses_an_unknown_or_option_like_ref(checkout, base):
    from click.testing import CliRunner
    result = CliRunner().invoke(plan_command, [str(checkout), "--base", base])
    assert result.exit_code == 2 and "unknown ref" in result.output, result.output
