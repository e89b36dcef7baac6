"""Each destination's body, as received by a real HTTP server on 127.0.0.1 from a
rollout, checked against that destination's documented shape and limits
(the checkers below are written from the docs, not from Sluice's output):

- Slack incoming webhooks / Block Kit: ``text`` (the notification fallback)
  and ``blocks`` (at most 50); header text plain_text <= 150; section text
  <= 3000 or at most 10 fields of <= 2000; context at most 10 elements.
- Microsoft Teams (workflows and incoming webhooks): ``{"type": "message",
  "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
  "content": <AdaptiveCard>}]}``; the card has type AdaptiveCard, a version and
  a body of typed elements; FactSet facts are {title, value}; a message over
  28 KB is refused.
- Discord execute webhook: ``content`` <= 2000 and/or ``embeds`` (<= 10);
  embed title <= 256, description <= 4096, fields <= 25 (name <= 256,
  value <= 1024, both non-empty), footer text <= 2048, 6000 characters in all.
"""

import json
import math
import re
from datetime import datetime, timedelta

import pytest

from reconciler.adapters.gitrepo import GitRepo
from reconciler.adapters.gittarget import GitTarget
from reconciler.adapters.notify import formats
from reconciler.controller import Controller
from reconciler.core import notifications as rules
from reconciler.core.model import Event
from reconciler.core.notifications import EVENTS
from tests.support.drive import T0
from tests.support.gitserver import make_bare
from tests.support.specs import dump, release_doc
from tests.support.webserver import Server

pytestmark = pytest.mark.timeout(120)


def check_slack(body):
    assert isinstance(body["text"], str) and body["text"].strip()
    blocks = body["blocks"]
    assert isinstance(blocks, list) and 0 < len(blocks) <= 50
    for b in blocks:
        assert b["type"] in {"header", "section", "context", "divider", "actions", "image", "rich_text"}
        if b["type"] == "header":
            assert b["text"]["type"] == "plain_text" and 0 < len(b["text"]["text"]) <= 150
        if b["type"] == "section":
            assert "text" in b or "fields" in b
            if "text" in b:
                assert b["text"]["type"] in {"mrkdwn", "plain_text"} and 0 < len(b["text"]["text"]) <= 3000
            for f in b.get("fields", []):
                assert f["type"] in {"mrkdwn", "plain_text"} and 0 < len(f["text"]) <= 2000
            assert len(b.get("fields", [])) <= 10
        if b["type"] == "context":
            assert 0 < len(b["elements"]) <= 10
            assert all(e["type"] in {"mrkdwn", "plain_text", "image"} for e in b["elements"])


def check_teams(body):
    assert body["type"] == "message"
    [att] = body["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and isinstance(card["version"], str)
    assert isinstance(card["body"], list) and card["body"]
    for el in card["body"]:
        assert isinstance(el["type"], str)
        if el["type"] == "TextBlock":
            assert isinstance(el["text"], str) and el["text"]
        if el["type"] == "FactSet":
            assert all(set(f) == {"title", "value"} and all(isinstance(v, str) for v in f.values())
                       for f in el["facts"])
    assert len(json.dumps(body).encode()) < 28 * 1024


def check_discord(body):
    assert body.get("content") or body.get("embeds")
    assert len(body.get("content", "")) <= 2000
    embeds = body.get("embeds", [])
    assert len(embeds) <= 10
    total = 0
    for e in embeds:
        assert len(e.get("title", "")) <= 256 and len(e.get("description", "")) <= 4096
        assert len(e.get("fields", [])) <= 25
        for f in e.get("fields", []):
            assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
        assert len(e.get("footer", {}).get("text", "")) <= 2048
        assert 0 <= e.get("color", 0) <= 0xFFFFFF
        if "timestamp" in e:
            datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        total += len(e.get("title", "")) + len(e.get("description", "")) + len(e.get("footer", {}).get("text", ""))
        total += sum(len(f["name"]) + len(f["value"]) for f in e.get("fields", []))
    assert total <= 6000


def check_webhook(body):
    assert body["apiVersion"] == "sluice.dev/notification/v1" and body["event"] in EVENTS
    assert body["release"] == f"{body['namespace']}/{body['name']}" and isinstance(body["evidence"], list)
    json.dumps(body, allow_nan=False)   # strict JSON
    datetime.fromisoformat(body["at"].replace("Z", "+00:00"))


CHECKS = {"slack": check_slack, "teams": check_teams, "discord": check_discord, "webhook": check_webhook}


def test_every_format_is_received_in_its_documented_shape(tmp_path):
    rx = Server()
    for kind in CHECKS:
        rx.answer(f"/{kind}", {})
    receivers = "".join(f"    {k}-r: {{type: {k}, url: '{rx.url}/{k}'}}\n" for k in CHECKS)
    settings = f"apiVersion: sluice.dev/v1alpha1\nkind: Settings\nnotifications:\n  receivers:\n{receivers}"
    doc = release_doc(status={"phase": "Promoted", "weight": 100, "stable": {"version": "v1", "image": "r:1"}})
    doc["spec"]["analysis"] = {"metrics": []}
    bare = make_bare(tmp_path, seed={"sluice.yaml": settings, "releases/bookinfo/reviews.yaml": dump(doc)})
    now = [T0]
    ctl = Controller(GitRepo(str(bare), tmp_path / "clone"), GitTarget(), clock=lambda: now[0])
    for _ in range(8):
        now[0] += timedelta(minutes=2)
        ctl.run_pass()
    assert ctl.notify.flush(10)
    for kind, check in CHECKS.items():
        got = [r for r in rx.seen if r["path"] == f"/{kind}"]
        assert len(got) == 5, kind   # started, 3 steps, promoted
        for r in got:
            assert r["method"] == "POST" and r["headers"]["content-type"] == "application/json"
            check(json.loads(r["body"]))
    slack = json.loads(next(r for r in rx.seen if r["path"] == "/slack")["body"])
    assert "bookinfo/reviews" in slack["text"] and "started" in slack["text"]
    rx.close()


def huge_event():
    evidence = tuple({"name": f"metric-{i}-" + "x" * 300, "value": 1.5, "min": 2, "ok": False, "outcome": "failed"}
                     for i in range(40))
    return Event("bookinfo/" + "r" * 300, "rollback", "rollback v2 <!channel> & " + "s" * 5000, weight=0,
                 step=2, steps=4, version="v2" * 600, stable="v1", phase="RolledBack", reason="why " * 3000,
                 evidence=evidence)


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_long_events_are_cut_to_each_destinations_limits(kind):
    body = formats.payload(kind, "rolledBack", huge_event(), "a" * 40, "2026-11-22T10:00:00Z")
    CHECKS[kind](body)
    if kind == "slack":   # a release's words never become a mention
        assert "<!channel>" not in json.dumps(body) and "&lt;!channel&gt;" in json.dumps(body)
    if kind == "discord":
        assert body["allowed_mentions"] == {"parse": []} and body["embeds"][0]["description"].endswith("…")


def texts(doc):
    """Every string in a JSON document."""
    if isinstance(doc, dict):
        return [t for v in doc.values() for t in texts(v)]
    if isinstance(doc, list):
        return [t for v in doc for t in texts(v)]
    return [doc] if isinstance(doc, str) else []


LINK = re.compile(r"\[[^\]]*\]\(\s*https?://")


def hostile_event():
    link = "[click me](http://evil.example/login)"
    evidence = tuple({"name": f"m{i}-[x](http://evil.example)", "value": v, "min": 99, "ok": False,
                      "outcome": "failed"} for i, v in enumerate([math.inf, -math.inf, math.nan, 98.5]))
    return Event("bookinfo/reviews", "rollback", f"rollback v2 20% -> 0%: {link} **bold**", weight=0, step=2,
                 steps=4, version="v2", stable="v1", phase="RolledBack", reason=f"{link} " + "x" * 10_000,
                 evidence=evidence)


@pytest.mark.parametrize("kind", ["teams", "discord"])
def test_no_markdown_link_survives_in_teams_or_discord(kind):
    body = formats.payload(kind, "rolledBack", hostile_event(), "a" * 40, "2026-11-22T10:00:00Z")
    CHECKS[kind](body)
    assert not [t for t in texts(body) if LINK.search(t)]
    if kind == "discord":   # markdown shown as typed, not as formatting
        assert "\\*\\*bold\\*\\*" in body["content"]


def test_the_generic_body_is_strict_json_and_its_texts_are_cut():
    body = formats.payload("webhook", "rolledBack", hostile_event(), "a" * 40, "2026-11-22T10:00:00Z")
    json.loads(json.dumps(body, allow_nan=False))   # RFC 8259: no Infinity, no NaN
    assert [e["value"] for e in body["evidence"]] == ["+Inf", "-Inf", "NaN", 98.5]
    assert len(body["reason"]) == formats.WEBHOOK["reason"] and body["reason"].endswith("…")
    assert len(body["summary"]) <= formats.WEBHOOK["summary"]
    held = formats.payload("webhook", "error", rules.held_event(["sluice.yaml:3:1: bad"]), None, "now")
    assert held["release"] == "sluice.yaml" and held["namespace"] is None and held["name"] is None
