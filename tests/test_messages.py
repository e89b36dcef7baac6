"""Commit messages: a subject people read, trailers programs read back."""

import os
import subprocess

from reconciler.core.messages import format_commit, parse_commit
from reconciler.core.model import Event

EVENT = Event(
    release="bookinfo/reviews", action="advance", summary="canary v2 20% -> 30% (step 3/4)",
    weight=30, previous_weight=20, step=3, steps=4, version="v2", stable="v1", phase="Progressing",
    evidence=({"name": "request-success-rate", "value": 99.92, "min": 99, "ok": True},
              {"name": "request-duration", "value": 212.0, "max": 500, "ok": True}))


def test_format_reads_well_and_parses_back():
    msg = format_commit(EVENT)
    assert msg.splitlines()[0] == "bookinfo/reviews: canary v2 20% -> 30% (step 3/4)"
    assert "request-success-rate 99.92 (min 99) ok; request-duration 212 (max 500) ok" in msg
    parsed = parse_commit(msg)
    assert parsed.release == "bookinfo/reviews" and parsed.action == "advance"
    assert parsed.weight() == 30 and parsed.weight("Sluice-Previous-Weight") == 20
    assert parsed.get("Sluice-Step") == "3/4"
    assert parsed.evidence() == [{"name": "request-success-rate", "value": 99.92, "min": 99.0, "ok": True},
                                 {"name": "request-duration", "value": 212.0, "max": 500.0, "ok": True}]


def test_git_itself_reads_the_trailers():
    out = subprocess.run(["git", "interpret-trailers", "--parse"], input=format_commit(EVENT),
                         capture_output=True, text=True, check=True).stdout
    assert "Sluice-Action: advance" in out and out.count("Sluice-Evidence:") == 2


def test_failed_and_missing_evidence_and_newlines_in_reason():
    ev = Event("shop/cart", "rollback", "rollback v3 30% -> 0%", weight=0, reason="request-success-rate 91\nbelow min",
               evidence=({"name": "request-success-rate", "value": 91.0, "min": 99, "ok": False, "outcome": "failed"},
                         {"name": "latency", "ok": False, "outcome": "nodata"}))
    msg = format_commit(ev)
    parsed = parse_commit(msg)
    assert parsed.get("Sluice-Reason") == "request-success-rate 91 below min"
    assert parsed.evidence()[1] == {"name": "latency", "value": None, "ok": False, "outcome": "nodata"}
    assert "latency no data nodata" in msg


def test_human_messages_have_no_trailers():
    assert parse_commit("fix typo\n\nSigned-off-by: A <a@x>\n") is None
    assert parse_commit("") is None


def test_control_characters_never_reach_a_commit_message(tmp_path):
    bad = "\x00x\x1b[2J\x07\x85\u202e\x7f\r\nSluice-Action: promote"
    event = Event(release="bookinfo/reviews", action="hook", summary=f"record {bad}", reason=bad, version=bad,
                  evidence=({"name": "smoke", "value": 200.0, "ok": False, "outcome": bad, "provider": bad,
                             "query": f"POST {bad}", "answer": bad},))
    msg = format_commit(event)
    assert all(ch.isprintable() or ch == "\n" for ch in msg)
    assert "Sluice-Answer: smoke x [2J Sluice-Action: promote\n" in msg
    assert parse_commit(msg).trailers["Sluice-Action"] == ("hook",)   # nothing forged
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    tree = subprocess.run(["git", "mktree"], input="", cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    made = subprocess.run(["git", "commit-tree", tree], input=msg, cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **env})
    assert made.returncode == 0, made.stderr   # git refuses a NUL: one answer must never fail a pass's commits
