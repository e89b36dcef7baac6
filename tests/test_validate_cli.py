"""``sluice validate`` and ``sluice render`` on the sample repo and on a broken copy."""

import json
import os
import shutil
import subprocess
import sys
import pathlib

import yaml

from reconciler.cli.main import main

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample-repo"


def test_sample_repo_validates(capsys):
    assert main(["validate", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    n = len(list((SAMPLE / "releases").glob("*/*.yaml")))   # every release file of the sample, each valid
    assert n >= 8 and f"{n} release(s): {n} valid, 0 invalid" in err


def test_broken_copy_reports_every_problem(tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE, repo)
    reviews = repo / "releases/bookinfo/reviews.yaml"
    reviews.write_text(reviews.read_text().replace("steps: [10, 20, 30, 50]", "steps: [10, 30, 20, 50]"))
    (repo / "releases/shop/checkout.yaml").write_bytes(b"apiVersion: [\n")
    assert main(["validate", str(repo)]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        "releases/bookinfo/reviews.yaml:26:23: step weights must strictly increase: 20 after 30",
        "releases/shop/checkout.yaml:2:1: YAML syntax: while parsing a flow node did not find expected node content",
    ]
    assert main(["validate", str(repo), "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["apiVersion"] == "sluice.dev/validate/v1" and doc["valid"] is False
    assert {r["release"]: r["valid"] for r in doc["releases"]}["shop/checkout"] is False
    assert doc["problems"][0] == {
        "file": "releases/bookinfo/reviews.yaml", "line": 26, "column": 23,
        "message": "step weights must strictly increase: 20 after 30",
        "path": ["spec", "strategy", "canary", "steps", 2], "release": "bookinfo/reviews"}


def test_validate_as_a_subprocess():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "reconciler.cli.main", "validate", str(SAMPLE), "-o", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["valid"] is True


def test_render_one_release_yaml_and_json(capsys):
    assert main(["render", str(SAMPLE), "reviews"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Service", "Deployment", "Deployment", "DestinationRule", "VirtualService"]
    vs = docs[-1]
    assert vs["spec"]["http"][0]["route"][1] == {
        "destination": {"host": "reviews.bookinfo.svc.cluster.local", "port": {"number": 9080}, "subset": "v2"},
        "weight": 20}
    assert main(["render", str(SAMPLE), "bookinfo/reviews", "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


def test_render_unknown_release_is_a_usage_error(capsys):
    assert main(["render", str(SAMPLE), "nope"]) == 2
    assert "no release 'nope'" in capsys.readouterr().err
