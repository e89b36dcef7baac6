"""The body each destination expects for one event, within its documented limits.

Pure: (event kind, Event, commit, time) in, a JSON-ready dict out. One
``Message`` holds what every format says (title, summary, reason, facts,
evidence); each format lays it out its destination's way and cuts every
field to that destination's limit (``clip``), so a long reason or a metric
list never gets a message refused:

- ``slack``: Block Kit ``blocks`` with a ``text`` fallback (shown in
  notifications), as Slack's incoming webhooks document: a header (plain
  text, 150 characters), a section (mrkdwn, 3000), a section of at most 10
  fields (2000 each), a context line; ``&``, ``<`` and ``>`` escaped so a
  release's words never become a mention or a link.
- ``teams``: an Adaptive Card (version 1.4) inside
  ``{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": ...}]}``, what Teams
  workflows (Power Automate "post to a channel when a webhook request is
  received") and incoming webhooks accept; Teams refuses messages over
  about 28 KB, so texts are cut well below that. TextBlocks render a
  markdown subset: ``](`` in a release's words becomes ``] (``, so no text
  becomes a link.
- ``discord``: Discord's execute-webhook body, ``content`` (2000) and one
  embed (title 256, description 4096, at most 25 fields of name 256 and
  value 1024, footer 2048, 6000 characters in all), mentions disabled;
  markdown characters in a release's words are escaped with ``\\`` and
  ``](`` broken, so no text becomes a masked link or formatting.
- ``webhook``: the generic ``sluice.dev/notification/v1`` JSON body, strict
  JSON (RFC 8259): a non-finite metric value is the string ``"+Inf"``,
  ``"-Inf"`` or ``"NaN"``; ``summary`` is cut to 1000 characters,
  ``reason`` to 4000, ``evidence`` to 50 metrics (``WEBHOOK``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from reconciler.core.messages import evidence_words
from reconciler.core.model import Event
from reconciler.core.notifications import clip

NOTIFY_API = "sluice.dev/notification/v1"

WORDS = {"started": "rollout started", "stepAdvanced": "step advanced", "checkFailed": "check failed",
         "waitingApproval": "waiting for approval", "promoted": "promoted", "rolledBack": "rolled back",
         "driftRepaired": "drift repaired", "error": "error"}
COLORS = {"promoted": 0x2EB67D, "rolledBack": 0xE01E5A, "checkFailed": 0xECB22E, "error": 0xE01E5A,
          "waitingApproval": 0x36C5F0, "driftRepaired": 0xECB22E}
DEFAULT_COLOR = 0x4A5568
TEAMS_STYLE = {"promoted": "good", "rolledBack": "attention", "error": "attention", "checkFailed": "warning",
               "driftRepaired": "warning"}

SLACK = {"header": 150, "section": 3000, "fields": 10, "field": 2000, "context": 10, "text": 3000}
DISCORD = {"content": 2000, "title": 256, "description": 4096, "fields": 25, "field_name": 256,
           "field_value": 1024, "footer": 2048, "total": 6000}
TEAMS = {"text": 2000, "facts": 20, "fact": 500}
WEBHOOK = {"summary": 1000, "reason": 4000, "evidence": 50}
_DISCORD_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]])")
MAX_EVIDENCE = 10   # metrics listed in a message; the rest are counted


@dataclass(frozen=True)
class Message:
    """What every format says about one event."""

    kind: str
    title: str
    summary: str
    reason: str
    facts: tuple[tuple[str, str], ...]
    evidence: tuple[str, ...]
    at: str
    extra: dict[str, Any] = field(default_factory=dict)


def message(kind: str, event: Event, commit: str | None, at: str) -> Message:
    facts = [("Release", event.release)]
    for name, value in (("Version", event.version), ("Stable", event.stable), ("Phase", event.phase)):
        if value:
            facts.append((name, str(value)))
    if event.weight is not None:
        facts.append(("Weight", f"{event.weight}%"))
    if event.step is not None:
        facts.append(("Step", f"{event.step}/{event.steps}" if event.steps else str(event.step)))
    if commit:
        facts.append(("Commit", commit[:12]))
    lines = [evidence_words(e) for e in event.evidence[:MAX_EVIDENCE]]
    if len(event.evidence) > MAX_EVIDENCE:
        lines.append(f"… and {len(event.evidence) - MAX_EVIDENCE} more metrics")
    reason = event.reason if event.reason and event.reason != event.summary else ""
    return Message(kind, f"{event.release}: {WORDS.get(kind, kind)}", event.summary or "", reason, tuple(facts),
                   tuple(lines), at)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(m: Message) -> dict[str, Any]:
    body = "\n".join(filter(None, [f"*{_slack_escape(m.summary)}*", _slack_escape(m.reason)] +
                            [f"• {_slack_escape(line)}" for line in m.evidence]))
    fields = [{"type": "mrkdwn", "text": clip(f"*{name}*\n{_slack_escape(value)}", SLACK["field"])}
              for name, value in m.facts[:SLACK["fields"]]]
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": clip(m.title, SLACK["header"])}},
              {"type": "section", "text": {"type": "mrkdwn", "text": clip(body, SLACK["section"])}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Sluice · {m.kind} · {m.at}"}]})
    return {"text": clip(_slack_escape(f"{m.title}: {m.summary}"), SLACK["text"]), "blocks": blocks}


def _no_links(text: str) -> str:
    """``[text](url)`` no more: markdown renders ``] (`` as plain text."""
    return text.replace("](", "] (")


def _discord_escape(text: str) -> str:
    """Discord markdown characters as themselves, and no masked link."""
    return _DISCORD_MARKDOWN.sub(r"\\\1", _no_links(text))


def _safe(m: Message, escape: Callable[[str], str]) -> Message:
    """``m`` with every text a release (or a metric, or a person's commit) supplied escaped."""
    def say(text):
        return escape(str(text)) if text else text
    return Message(m.kind, say(m.title), say(m.summary), say(m.reason),
                   tuple((name, say(value)) for name, value in m.facts), tuple(say(e) for e in m.evidence),
                   m.at, m.extra)


def teams(m: Message) -> dict[str, Any]:
    m = _safe(m, _no_links)
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": clip(m.title, TEAMS["text"]), "size": "Medium", "weight": "Bolder",
         "wrap": True, "style": "heading"},
        {"type": "TextBlock", "text": clip(m.summary, TEAMS["text"]), "wrap": True},
    ]
    if m.reason:
        body.append({"type": "TextBlock", "text": clip(m.reason, TEAMS["text"]), "wrap": True, "isSubtle": True})
    body.append({"type": "FactSet", "facts": [{"title": name, "value": clip(value, TEAMS["fact"])}
                                              for name, value in m.facts[:TEAMS["facts"]]]})
    if m.evidence:
        body.append({"type": "TextBlock", "text": clip("\n".join(f"- {e}" for e in m.evidence), TEAMS["text"]),
                     "wrap": True})
    body.append({"type": "TextBlock", "text": f"Sluice · {m.kind} · {m.at}", "isSubtle": True, "size": "Small",
                 "wrap": True})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "msteams": {"width": "Full"}, "body": body}
    if m.kind in TEAMS_STYLE:
        body[0]["color"] = TEAMS_STYLE[m.kind]
    return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "contentUrl": None, "content": card}]}


def discord(m: Message) -> dict[str, Any]:
    m = _safe(m, _discord_escape)
    budget = DISCORD["total"]
    title = clip(m.title, DISCORD["title"])
    footer = clip(f"Sluice · {m.kind}", DISCORD["footer"])
    budget -= len(title) + len(footer)
    fields = []
    for name, value in m.facts[:DISCORD["fields"]]:
        f = {"name": clip(name, DISCORD["field_name"]), "value": clip(value, DISCORD["field_value"]),
             "inline": True}
        if len(f["name"]) + len(f["value"]) > budget - 100:   # keep room for the description
            break
        budget -= len(f["name"]) + len(f["value"])
        fields.append(f)
    text = "\n".join(filter(None, [m.reason] + [f"• {e}" for e in m.evidence]))
    description = clip(text or m.summary, min(DISCORD["description"], max(budget, 1)))
    embed = {"title": title, "description": description, "color": COLORS.get(m.kind, DEFAULT_COLOR),
             "fields": fields, "footer": {"text": footer}, "timestamp": m.at}
    return {"content": clip(f"**{m.title}**: {m.summary}", DISCORD["content"]), "embeds": [embed],
            "allowed_mentions": {"parse": []}}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as a string (``+Inf``, ``-Inf``, ``NaN``): strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def webhook(kind: str, event: Event, commit: str | None, at: str) -> dict[str, Any]:
    ns, slash, name = event.release.partition("/")
    return {"apiVersion": NOTIFY_API, "event": kind, "release": event.release, "namespace": ns if slash else None,
            "name": name if slash else None, "version": event.version, "stable": event.stable,
            "weight": _finite(event.weight), "step": event.step, "phase": event.phase,
            "summary": clip(event.summary or "", WEBHOOK["summary"]),
            "reason": clip(event.reason, WEBHOOK["reason"]) if event.reason else None,
            "evidence": [_finite(dict(e)) for e in event.evidence[:WEBHOOK["evidence"]]], "commit": commit, "at": at}


FORMATS: Mapping[str, Callable[[Message], dict[str, Any]]] = {"slack": slack, "teams": teams, "discord": discord}


def payload(receiver_type: str, kind: str, event: Event, commit: str | None, at: str) -> dict[str, Any]:
    """The JSON body of a ``kind`` event for a receiver of ``receiver_type``."""
    if receiver_type in FORMATS:
        return FORMATS[receiver_type](message(kind, event, commit, at))
    return webhook(kind, event, commit, at)
