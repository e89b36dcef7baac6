"""``sluice run`` as a subprocess against a git daemon on loopback (git
target): a pushed release rolls out and promotes, a pushed abort rolls back,
an invalid release beside valid ones is reported and does not stop them, and
a webhook push reaches the controller at once. SIGTERM ends it cleanly."""

import hashlib
import hmac
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from tests.support.gitserver import clone_work, free_port, git_daemon, human_edit, make_bare, run
from tests.support.specs import dump, release_doc

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def spec(name, **kw):
    doc = release_doc(name=name, status={"phase": "Promoted", "weight": 100,
                                         "stable": {"version": "v1", "image": f"example.com/{name}:v1"}}, **kw)
    doc["spec"]["analysis"] = {"metrics": []}
    doc["spec"]["strategy"]["canary"]["interval"] = "1s"
    return doc


def status_of(bare, name):
    return yaml.safe_load(run("show", f"main:releases/bookinfo/{name}.yaml", cwd=bare)).get("status") or {}


def wait(pred, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_sluice_run_end_to_end(tmp_path):
    files = {f"releases/bookinfo/{n}.yaml": dump(spec(n)) for n in ("reviews", "ratings")}
    files["releases/bookinfo/broken.yaml"] = "kind: Release\nspec: {\n"
    bare = make_bare(tmp_path, seed=files)
    port = free_port()
    secret = "s3cr3t-hook"
    with git_daemon(tmp_path) as base:
        url = f"{base}/config.git"
        token = "tok-SECRET-4242"
        env = {**os.environ, "PYTHONPATH": str(REPO), "SLUICE_WEBHOOK_SECRET": secret, "SLUICE_GIT_TOKEN": token,
               "SLUICE_LOG_LEVEL": "debug",
               "SLUICE_WORKDIR": str(tmp_path / "work"), "SLUICE_INTERVAL": "1s"}
        proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli.main", "run", "--repo", url, "--target", "git",
                                 "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # both valid releases roll out to promotion beside the broken one
            assert wait(lambda: status_of(bare, "reviews").get("phase") == "Promoted"
                        and status_of(bare, "reviews")["stable"]["version"] == "v2"
                        and status_of(bare, "ratings").get("stable", {}).get("version") == "v2", 60)
            assert run("show", "main:releases/bookinfo/broken.yaml", cwd=bare) == files["releases/bookinfo/broken.yaml"]
            # a new target, then an abort pushed by a human: rolled back
            human = clone_work(url, tmp_path / "human")

            def retarget(w):
                p = w / "releases/bookinfo/reviews.yaml"
                p.write_text(p.read_text().replace("version: v2\n    image: example.com/reviews:v2",
                                                   "version: v3\n    image: example.com/reviews:v3")
                             .replace("interval: 1s", "interval: 1h"))
            human_edit(human, retarget, "reviews v3")
            body = b'{"ref": "refs/heads/main"}'
            sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=body,
                                         headers={"X-Hub-Signature-256": sig}, method="POST")
            assert urllib.request.urlopen(req, timeout=5).status == 202
            assert wait(lambda: status_of(bare, "reviews").get("canary", {}).get("version") == "v3")

            def abort(w):
                p = w / "releases/bookinfo/reviews.yaml"
                p.write_text(p.read_text().replace("spec:\n", "spec:\n  abort: true\n", 1))
            human_edit(human, abort, "abort reviews v3")
            assert wait(lambda: status_of(bare, "reviews").get("phase") == "Aborted")
            assert status_of(bare, "reviews")["stable"]["version"] == "v2"
            ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert ready.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "releases/bookinfo/broken.yaml" in err and "invalid" in err
        everything = out + err + run("log", "-p", "--all", cwd=bare)
        for status_file in ("reviews", "ratings"):
            everything += run("show", f"main:releases/bookinfo/{status_file}.yaml", cwd=bare)
        assert secret not in everything and token not in everything
    log = run("log", "--format=%s", "main", cwd=bare)
    assert "bookinfo/reviews: abort v3" in log and "bookinfo/ratings: promote v2" in log


def test_run_once(tmp_path):
    bare = make_bare(tmp_path, seed={"releases/bookinfo/reviews.yaml": dump(spec("reviews"))})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "run", "--once", "--repo", str(bare),
                          "--target", "git", "--workdir", str(tmp_path / "w")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bookinfo/reviews: start canary v1 -> v2 (3 steps)"
