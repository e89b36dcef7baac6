"""While the engine writes 100 steps, humans push to other files, to the same
release file outside ``status:``, and pause/retarget the release. In the end
every human commit is on the branch, every step is there exactly once, and
each human edit took effect in the very next step."""

import threading
import time

import pytest

from reconciler.adapters.gitrepo import CommitPlan, GitRepo
from reconciler.core.parse import parse
from reconciler.core.writeback import set_status
from tests.support.gitserver import clone_work, git_daemon, human_edit, make_bare, run

PATH = "releases/shop/cart.yaml"
SPEC = """\
# Cart service
apiVersion: sluice.dev/v1alpha1
kind: Release
metadata:
  name: cart
  namespace: shop
  labels: {edits: "0"}
spec:
  paused: false
  target: {version: v1, image: cart:1}
  note: untouched
"""
STEPS = 100


def engine_compute(snap):
    text = snap.read(PATH).decode()
    doc = parse(text.encode())
    old = doc.get("status") or {}
    spec = doc["spec"]
    status = {"seq": old.get("seq", 0) + 1, "paused": spec["paused"], "target": spec["target"]["version"],
              "from": snap.tip}
    msg = f"shop/cart: step {status['seq']}\n\nSluice-Release: shop/cart\nSluice-Action: advance\nSluice-Step: {status['seq']}\n"
    return [CommitPlan({PATH: set_status(text, status).encode()}, msg)]


@pytest.mark.timeout(240)
def test_hundred_steps_against_concurrent_humans(tmp_path):
    bare = make_bare(tmp_path, seed={PATH: SPEC, "README.md": "shop\n"})
    human_shas: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    with git_daemon(tmp_path) as base:
        url = f"{base}/config.git"
        repo = GitRepo(url, tmp_path / "engine")

        def human(kind: str, n: int):
            try:
                work = clone_work(url, tmp_path / f"human-{kind}")
                for i in range(n):
                    if stop.is_set():
                        return

                    def edit(w, i=i):
                        f = w / PATH
                        text = f.read_text()
                        if kind == "other":
                            (w / f"docs/note-{i}.md").parent.mkdir(exist_ok=True)
                            (w / f"docs/note-{i}.md").write_text(f"note {i}\n")
                        elif kind == "same-file":
                            f.write_text(text.replace(text.split("edits: ")[1].split("}")[0], f'"{i + 1}"', 1))
                        else:
                            paused = "paused: true" in text
                            new = text.replace(f"paused: {'true' if paused else 'false'}",
                                               f"paused: {'false' if paused else 'true'}")
                            f.write_text(new.replace("version: v", f"version: v{i}x", 1) if i % 3 == 0 else new)

                    sha = human_edit(work, edit, f"{kind}: edit {i}")
                    with lock:
                        human_shas.append(sha)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=human, args=(k, 12)) for k in ("other", "same-file", "steer")]
        repo.sync()
        for t in threads:
            t.start()
        retries = written = 0
        # at least STEPS steps, and on until every human is done (bounded)
        while written < STEPS or (any(t.is_alive() for t in threads) and written < 4 * STEPS):
            written += 1
            time.sleep(0.03)   # a controller pass, not a busy loop: humans get a window to push
            repo.sync()
            result = repo.write(engine_compute, max_attempts=12, backoff=0.05, backoff_cap=1.0)
            assert result.pushed
            retries += result.retries
        stop.set()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors

    tip = run("rev-parse", "main", cwd=bare).strip()
    # every human commit is reachable from the tip (rebased humans: compare by their final sha)
    for sha in human_shas:
        run("merge-base", "--is-ancestor", sha, tip, cwd=bare)
    # every step commit exactly once, in order
    log = run("log", "--reverse", "--format=%H %s", "main", cwd=bare).splitlines()
    steps = [line.split(" ", 1) for line in log if " shop/cart: step " in line]
    assert [int(s.rsplit(" ", 1)[1]) for _, s in steps] == list(range(1, written + 1))
    assert written >= STEPS and len(human_shas) == 36
    # each step was computed on its parent, so every human edit before it took effect
    for sha, _ in steps:
        parent_spec = parse(run("show", f"{sha}^:{PATH}", cwd=bare).encode())["spec"]
        status = parse(run("show", f"{sha}:{PATH}", cwd=bare).encode())["status"]
        assert status["paused"] == parent_spec["paused"]
        assert status["target"] == parent_spec["target"]["version"]
        assert status["from"] == run("rev-parse", f"{sha}^", cwd=bare).strip()
    # the human's lines outside status survived every write
    final = run("show", f"main:{PATH}", cwd=bare)
    assert final.startswith("# Cart service\n") and "note: untouched" in final
    print(f"retries={retries} human_commits={len(human_shas)}")
