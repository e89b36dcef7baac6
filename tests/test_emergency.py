"""The emergency paths through real git: ``sluice promote --full`` and
``sluice rollback --to`` each make one commit with the person's name and
reason, and the controller's next pass one commit with the right weights;
``history`` and ``plan`` show them. Also a tag-only (image automation) change
through the controller, and ``plan`` saying why a rollout starts."""

import json
import yaml

from reconciler.cli.main import main
from tests.support.git_env import GitEnv
from tests.support.gitserver import human_edit, run
from tests.support.specs import dump, release_doc

ENV = {"GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "a@x"}
FILE = "releases/bookinfo/reviews.yaml"


class Env(GitEnv):
    def __init__(self, tmp, doc, monkeypatch):
        for k, v in ENV.items():
            monkeypatch.setenv(k, v)
        super().__init__(tmp, {"sluice.yaml": "apiVersion: sluice.dev/v1alpha1\nkind: Settings\n", FILE: dump(doc)})

    def head(self):
        return run("rev-parse", "main", cwd=self.bare).strip()

    def log(self, since):
        return run("log", "--format=%an|%s", f"{since}..main", cwd=self.bare).splitlines()

    def status(self):
        return yaml.safe_load(run("show", f"main:{FILE}", cwd=self.bare))["status"]

    def weights(self):
        docs = yaml.safe_load_all(run("show", "main:rendered/bookinfo/reviews.yaml", cwd=self.bare))
        vs = next(d for d in docs if d["kind"] == "VirtualService")
        return {r["destination"]["subset"]: r["weight"] for r in vs["spec"]["http"][-1]["route"]}

    def sluice(self, *args):
        self.sync()
        return main([*args, "--repo", str(self.human), "--push"])

    def retarget(self, version):
        def edit(w):
            p = w / FILE
            old = yaml.safe_load(p.read_text())["spec"]["target"]
            p.write_text(p.read_text().replace(f"version: {old['version']}\n", f"version: {version}\n", 1)
                         .replace(f"image: {old['image']}\n", f"image: example.com/reviews:{version}\n", 1))
        human_edit(self.human, edit, f"reviews {version}")

    def until_promoted(self, limit=15):
        for _ in range(limit):
            self.tick()
            if self.status()["phase"] == "Promoted" and not self.status().get("retiring"):
                return
        raise AssertionError(self.status())


def doc(**kw):
    d = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "example.com/reviews:v1"}}, **kw)
    d["spec"]["analysis"] = {"metrics": []}
    return d


def test_promote_full_is_one_person_commit_then_one_commit_at_100(tmp_path, monkeypatch, capsys):
    env = Env(tmp_path, doc(), monkeypatch)
    env.tick(); env.tick()
    assert env.status()["weight"] == 10
    before = env.head()
    assert env.sluice("promote", "reviews", "--full", "--reason", "checkout is down, v2 has the fix") == 0
    assert env.log(before) == ["Ann|bookinfo/reviews: promote --full v2: checkout is down, v2 has the fix (sluice promote)"]
    mid = env.head()
    env.tick(seconds=1)
    assert [line.split("|", 1)[1] for line in env.log(mid)] == [
        "bookinfo/reviews: promote v2 10% -> 100% (full: remaining steps skipped)"]
    body = run("log", "-1", "--format=%B", "main", cwd=env.bare)
    assert "Sluice-Weight: 100" in body and "Sluice-Previous-Weight: 10" in body and "promote --full" in body
    assert env.weights() == {"v2": 100} and env.status()["stable"]["version"] == "v2"
    capsys.readouterr()
    assert main(["history", "bookinfo/reviews", "--repo", str(env.bare), "-o", "json"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    person = [r for r in records if not r["bySluice"] and "promote --full" in r["subject"]]
    assert person and person[0]["author"] == "Ann"
    assert records[-1]["action"] == "promote" and records[-1]["weight"] == 100


def test_rollback_to_is_one_person_commit_then_one_commit_back_at_100(tmp_path, monkeypatch):
    env = Env(tmp_path, doc(), monkeypatch)
    env.until_promoted()                      # v2
    env.retarget("v3")
    env.until_promoted()                      # v3
    assert [p["revision"] for p in env.status()["previous"]] == ["v2"]
    before = env.head()
    assert env.sluice("rollback", "reviews", "--to", "v2", "--reason", "v3 corrupts carts") == 0
    assert env.log(before) == ["Ann|bookinfo/reviews: rollback --to v2: v3 corrupts carts (sluice rollback)"]
    mid = env.head()
    env.tick(seconds=1)
    # v2's pods were scaled down after scaleDownDelay: it comes back at full size before traffic moves
    (line,) = env.log(mid)
    assert line.endswith("bookinfo/reviews: rollback --to v2: starting v2 at full size before traffic moves")
    assert env.weights() == {"v3": 100} and env.status()["rollbackTo"] == "v2@1"
    mid = env.head()
    env.tick(seconds=1)
    (line,) = env.log(mid)
    assert line.endswith("bookinfo/reviews: rollback v3 -> v2: v2 100% now (spec.rollback), once its pods were ready")
    body = run("log", "-1", "--format=%B", "main", cwd=env.bare)
    assert "Sluice-Weight: 100" in body and "Sluice-Action: rollback" in body
    assert env.weights() == {"v2": 100}
    for _ in range(3):                        # v3 does not start again
        env.tick()
    assert env.status()["stable"]["revision"] == "v2" and env.weights() == {"v2": 100}


def test_image_automation_tag_bump_runs_a_real_canary_and_plan_says_why(tmp_path, monkeypatch, capsys):
    env = Env(tmp_path, doc(target={"version": "v1", "image": "example.com/reviews:v1"}), monkeypatch)
    env.tick()                                # adopt the status written before revisions
    assert env.status()["stable"]["revision"] == "v1"

    def bump(w):
        p = w / FILE
        p.write_text(p.read_text().replace("image: example.com/reviews:v1\n", "image: example.com/reviews:v1.0.1\n", 1))
    human_edit(env.human, bump, "image automation: reviews v1.0.1")
    env.sync()
    capsys.readouterr()
    assert main(["plan", str(env.human), "--base", "HEAD~1", "--format", "json"]) == 2
    (r,) = json.loads(capsys.readouterr().out)["releases"]
    assert r["revision"].startswith("v1-") and r["summary"] == f"start a canary rollout v1 -> {r['revision']}"
    assert r["reasons"] == ["image changed: example.com/reviews:v1 -> example.com/reviews:v1.0.1"]
    assert main(["plan", str(env.human), "--base", "HEAD~1"]) == 2
    assert f"new revision: {r['revision']} (image changed" in capsys.readouterr().out
    seen = []
    for _ in range(8):
        env.tick()
        seen.append(env.weights())
        if env.status()["phase"] == "Promoted":
            break
    new = r["revision"]
    assert seen[:5] == [{"v1": 100}, {"v1": 90, new: 10}, {"v1": 80, new: 20}, {"v1": 50, new: 50}, {new: 100}]


def test_plan_names_template_fields_and_refuses_skip_analysis(tmp_path, monkeypatch, capsys):
    env = Env(tmp_path, doc(target={"version": "v1", "image": "example.com/reviews:v1"}), monkeypatch)
    env.tick()

    def edit(w):
        p = w / FILE
        p.write_text(p.read_text().replace("    - name: reviews\n", "    - name: reviews\n      env:\n      - {name: MODE, value: fast}\n", 1)
                     .replace("spec:\n", "spec:\n  skipAnalysis: true\n", 1))
    human_edit(env.human, edit, "reviews: MODE=fast, hotfix")
    env.sync()
    capsys.readouterr()
    assert main(["plan", str(env.human), "--base", "HEAD~1", "--format", "json"]) == 1
    (r,) = json.loads(capsys.readouterr().out)["releases"]
    assert "spec.skipAnalysis: true skips every metric check: refused" in r["problems"][0]["message"]
    assert r["problems"][0]["line"] > 1
    assert main(["plan", str(env.human), "--base", "HEAD~1", "--format", "json", "--allow-skip-analysis"]) == 2
    (r,) = json.loads(capsys.readouterr().out)["releases"]
    assert r["reasons"] == ["template changed: containers[reviews].env"]
    assert any("skipAnalysis: true" in w for w in r["warnings"])


def test_plan_counts_a_changed_config_file_for_its_release(tmp_path, monkeypatch, capsys):
    import pathlib
    import shutil
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "config"
    shutil.copytree(pathlib.Path(__file__).resolve().parents[1] / "sample-repo", work)
    run("init", "-q", "-b", "main", cwd=work)
    run("add", "-A", cwd=work)
    run("commit", "-q", "-m", "base", cwd=work)
    props = work / "releases/shop/payments/limits.properties"
    props.write_text(props.read_text().replace("max.per.minute=120", "max.per.minute=90"))
    run("commit", "-q", "-am", "payments: fewer attempts per minute", cwd=work)
    capsys.readouterr()
    assert main(["plan", str(work), "--base", "HEAD~1", "--format", "json"]) == 2
    (r,) = json.loads(capsys.readouterr().out)["releases"]
    assert r["release"] == "shop/payments" and r["file"] == "releases/shop/payments.yaml"
    assert r["reasons"] == ["config changed"] and r["revision"].startswith("v2-")
    assert r["diff"] == ""   # what runs changes only when the controller starts the rollout
