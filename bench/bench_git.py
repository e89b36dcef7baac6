"""Git engine figures:

- the history of one release in a 1,000 and a 100,000-commit repo (built with
  ``git fast-import``), beside git's own ``git log --format=%H -- <path>`` of
  the same file in the same clone, after ``git commit-graph write --reachable
  --changed-paths`` (the Bloom filters that let git skip commits that did not
  touch the path): the least work that lists the commits of that file;
- one step write (edit, commit, push over a loopback git daemon), beside a
  no-op ``git fetch`` over the same daemon.

    python bench/bench_git.py [COMMITS ...]     (default 1000 100000)
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import emit, figure, measure  # noqa: E402
from reconciler.adapters.gitrepo import CommitPlan, GitRepo  # noqa: E402
from reconciler.core.messages import format_commit  # noqa: E402
from reconciler.core.model import Event  # noqa: E402
from reconciler.core.writeback import set_status  # noqa: E402
from tests.support.gitserver import git_daemon, run  # noqa: E402

RELEASE = "releases/shop/cart.yaml"
GIT_VERSION = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
SPEC = "apiVersion: sluice.dev/v1alpha1\nkind: Release\nmetadata: {name: cart, namespace: shop}\nspec: {paused: false}\n"


def fast_import_repo(root: pathlib.Path, commits: int, every: int = 100) -> pathlib.Path:
    """A bare repo with ``commits`` commits; every ``every``-th is a step of shop/cart."""
    bare = root / "big.git"
    run("init", "-q", "--bare", "-b", "main", str(bare))
    lines = []
    for i in range(1, commits + 1):
        if i % every == 0:
            w = (i // every) % 100
            ev = Event("shop/cart", "advance", f"canary v2 {w}% (step {i // every})", weight=w, step=i // every,
                       version="v2", stable="v1", phase="Progressing",
                       evidence=({"name": "request-success-rate", "value": 99.9, "min": 99, "ok": True},))
            path, data, msg = RELEASE, set_status(SPEC, {"phase": "Progressing", "weight": w}), format_commit(ev)
        else:
            path, data, msg = f"releases/team-{i % 50:02d}/svc-{i % 1000:04d}.yaml", f"spec: {{n: {i}}}\n", f"edit {i}\n"
        body = data.encode()
        m = msg.encode()
        lines.append(b"commit refs/heads/main\n")
        lines.append(b"committer Bench <b@x> %d +0000\n" % (1_700_000_000 + i))
        lines.append(b"data %d\n%s\n" % (len(m), m))
        lines.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(body), body))
    subprocess.run(["git", "-C", str(bare), "fast-import", "--quiet"], input=b"".join(lines), check=True)
    return bare


def bench_history(commits: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bare = fast_import_repo(pathlib.Path(tmp), commits)
        repo = GitRepo(f"file://{bare}", pathlib.Path(tmp) / "clone")
        repo.sync()   # Sluice keeps a commit-graph with changed-path filters in its clone
        clone = pathlib.Path(tmp) / "clone"
        run("commit-graph", "write", "--reachable", "--changed-paths", cwd=clone)   # the floor's own, to be sure
        git_log = ["git", "-C", str(clone), "log", "--format=%H", repo.remote_ref, "--", RELEASE]
        expected = len(subprocess.run(git_log, check=True, capture_output=True).stdout.split())
        records = len(repo.history("shop/cart"))
        if records != expected:
            raise RuntimeError(f"history lists {records} records, git log {expected} commits of {RELEASE}")
        floor = measure(lambda: subprocess.run(git_log, check=True, capture_output=True), repeat=7)
        samples = measure(lambda: repo.history("shop/cart"), repeat=7)
        emit(figure("history of one release", commits, samples, floor=floor,
                    floor_name=f"git log --format=%H -- <path>, changed-paths commit-graph ({GIT_VERSION})",
                    records=records))


def bench_step_write() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        bare = root / "config.git"
        run("init", "-q", "--bare", "-b", "main", str(bare))
        run("config", "receive.denyNonFastForwards", "true", cwd=bare)
        seed = root / "seed"
        run("init", "-q", "-b", "main", str(seed))
        (seed / "releases/shop").mkdir(parents=True)
        (seed / RELEASE).write_text(SPEC)
        run("add", "-A", cwd=seed)
        run("-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "seed", cwd=seed)
        run("push", "-q", str(bare), "main", cwd=seed)
        with git_daemon(root) as base:
            repo = GitRepo(f"{base}/config.git", root / "clone")
            repo.sync()
            state = {"w": 0}

            def step():
                state["w"] += 1
                w = state["w"]

                def compute(snap):
                    text = snap.read(RELEASE).decode()
                    ev = Event("shop/cart", "advance", f"canary v2 -> {w}%", weight=w)
                    return [CommitPlan({RELEASE: set_status(text, {"phase": "Progressing", "weight": w}).encode()},
                                       format_commit(ev))]
                assert repo.write(compute).pushed

            floor = measure(repo.sync, repeat=10)
            emit(figure("step write (edit, commit, push over git://)", 1, measure(step, repeat=15),
                        floor=floor, floor_name="no-op git fetch over git://"))


if __name__ == "__main__":
    bench_step_write()
    for c in [int(a) for a in sys.argv[1:]] or [1000, 100_000]:
        bench_history(c)
