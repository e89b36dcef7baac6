"""Commit messages a person and a program can both read.

A subject for ``git log --oneline`` (``<ns>/<name>: <summary>``), a body
with the evidence in words, and git trailers (``Key: value`` lines at the
end, as ``git interpret-trailers`` reads them)::

    bookinfo/reviews: canary v2 20% -> 30% (step 3/4)

    request-success-rate 99.92 (min 99, over 1m) ok; request-duration 212 (max 500, over 1m) ok

    Sluice-Release: bookinfo/reviews
    Sluice-Action: advance
    Sluice-Weight: 30
    Sluice-Previous-Weight: 20
    Sluice-Step: 3/4
    Sluice-Version: v2
    Sluice-Stable: v1
    Sluice-Phase: Progressing
    Sluice-Evidence: request-success-rate=99.92 min=99 window=1m provider=prometheus ok
    Sluice-Evidence: request-duration=212 max=500 window=1m provider=prometheus ok
    Sluice-Query: request-success-rate sum(rate(istio_requests_total{...}[1m])) / ...
    Sluice-Query: request-duration histogram_quantile(0.99, ...)

A hook's result (reconciler.core.hooks) is evidence like a metric's, with
``provider=hook``, the status code as its value and ``took=``; the first
characters of its answer go in a ``Sluice-Answer: <name> <text>`` trailer.
A fire-and-record hook's result (post-promotion, rollback, event: it carries
its ``type``) is not evidence of the commit it rides on: it has a trailer of
its own, ``Sluice-Hook: <name> type=<type> status=<code> took=<s> at=<time>
attempts=<n> ok``, and a ``Hook results:`` line in the body.

A ``start`` or ``retarget`` commit also names the person's commit that asked
for the rollout (``Sluice-Trigger: <sha>``): commit statuses are posted there.

With leader election or ``--shards``, every commit names the replica that
wrote it (``Sluice-Replica: <identity>``, last).

``parse_commit`` reads the trailers back; history is built from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from reconciler.core.model import Event

TRAILER = re.compile(r"^(Sluice-[A-Za-z-]+):\s?(.*)$")


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


_BOUNDS = ("min", "max", "equals", "notEquals", "tolerance")


def evidence_words(item: Mapping[str, Any]) -> str:
    """``request-success-rate 99.92 (min 99, over 1m) ok``; a dry run says so,
    a provider other than the default is named."""
    value = _num(item["value"]) if item.get("value") is not None else "no data"
    facts = [f"{b} {_num(item[b])}" for b in _BOUNDS if item.get(b) is not None]
    if item.get("stable") is not None:
        facts.append(f"stable {_num(item['stable'])}")
    if item.get("window"):
        facts.append(f"over {item['window']}")
    if item.get("provider") and item["provider"] != "prometheus":
        facts.append(f"via {item['provider']}")
    if item.get("took"):
        facts.append(f"took {item['took']}")
    verdict = "ok" if item.get("ok") else item.get("outcome", "failed")
    dry = " (dry run: not judged)" if item.get("dryRun") else ""
    return f"{item['name']} {value}" + (f" ({', '.join(facts)})" if facts else "") + f" {verdict}{dry}"


def evidence_trailer(item: Mapping[str, Any]) -> str:
    """``request-success-rate=99.92 min=99 window=1m provider=prometheus ok`` (one token per fact, for programs)."""
    value = _num(item["value"]) if item.get("value") is not None else "nodata"
    parts = [f"{item['name']}={value}"]
    parts += [f"{b}={_num(item[b])}" for b in _BOUNDS + ("stable", "window", "provider", "took")
              if item.get(b) is not None]
    if item.get("dryRun"):
        parts.append("dryRun=true")
    parts.append("ok" if item.get("ok") else item.get("outcome", "failed"))
    return " ".join(parts)


def is_hook_result(item: Mapping[str, Any]) -> bool:
    """Whether ``item`` records a fire-and-record hook's result (reconciler.core.hooks.recorded:
    provider ``hook`` with the hook's ``type``), not evidence of a check."""
    return item.get("provider") == "hook" and bool(item.get("type"))


def hook_words(item: Mapping[str, Any]) -> str:
    """``rollback hook page 503 (took 12ms, at 2026-11-22T10:00:00Z) failed``."""
    value = _num(item["value"]) if item.get("value") is not None else "no answer"
    facts = [f"{k} {item[k]}" for k in ("took", "at") if item.get(k)]
    return (f"{item['type']} hook {item['name']} {value}" + (f" ({', '.join(facts)})" if facts else "")
            + (" ok" if item.get("ok") else " failed"))


def hook_trailer(item: Mapping[str, Any]) -> str:
    """``page type=rollback status=503 took=12ms at=2026-11-22T10:00:00Z attempts=1 failed``."""
    status = _num(int(item["value"])) if item.get("value") is not None else "none"
    parts = [item["name"], f"type={item['type']}", f"status={status}"]
    parts += [f"{k}={item[k]}" for k in ("took", "at", "attempts") if item.get(k) is not None]
    return " ".join(parts + ["ok" if item.get("ok") else "failed"])


def parse_hook(text: str) -> dict[str, Any]:
    """Inverse of ``hook_trailer``."""
    name, *tokens = text.split()
    out: dict[str, Any] = {"name": name, "provider": "hook"}
    for tok in tokens:
        key, eq, raw = tok.partition("=")
        if not eq:
            out["ok"] = tok == "ok"
        elif key == "status":
            out["value"] = float(raw) if raw.isdigit() else None
        elif key == "attempts":
            out[key] = int(raw) if raw.isdigit() else raw
        else:
            out[key] = raw
    return out


def printable(text: Any) -> str:
    """``text`` with every character that is not printable (C0 incl. NUL, ESC, BEL; DEL;
    C1; line and format characters) made a space: external text (a hook's answer, an
    error) must never reach a terminal, a status or ``git commit-tree`` raw (git
    refuses a NUL, which would fail the whole pass's write-back)."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def one_line(text: Any) -> str:
    """``text`` printable, on one line, its runs of blanks collapsed."""
    return " ".join(printable(text).split())


def replica_trailer(replica: str | None) -> str:
    """``Sluice-Replica: <identity>``: which replica wrote the commit (leader election or
    ``--shards`` on; empty otherwise), so one writer per release can be checked from git."""
    return f"Sluice-Replica: {one_line(replica)}\n" if replica else ""


def format_commit(event: Event, replica: str | None = None) -> str:
    """The full commit message of ``event``; ``replica`` adds ``Sluice-Replica``."""
    subject = one_line(f"{event.release}: {event.summary}")
    body = []
    evidence = [e for e in event.evidence if not is_hook_result(e)]
    results = [e for e in event.evidence if is_hook_result(e)]
    if evidence:
        body.append(one_line("; ".join(evidence_words(e) for e in evidence)))
    if results:
        body.append(one_line("Hook results: " + "; ".join(hook_words(e) for e in results)))
    if event.reason:
        body.append(one_line(event.reason))
    if event.applied_after is not None:
        body.append(f"The step's routing was live {event.applied_after:.1f}s after its commit; "
                    f"the check's window started then.")
    trailers = [("Release", event.release), ("Action", event.action)]
    if event.weight is not None:
        trailers.append(("Weight", str(event.weight)))
    if event.previous_weight is not None:
        trailers.append(("Previous-Weight", str(event.previous_weight)))
    if event.step is not None:
        trailers.append(("Step", f"{event.step}/{event.steps}" if event.steps else str(event.step)))
    for key, value in (("Version", event.version), ("Stable", event.stable), ("Phase", event.phase)):
        if value:
            trailers.append((key, value))
    if event.reason:
        trailers.append(("Reason", one_line(event.reason)))
    if event.applied_after is not None:
        trailers.append(("Applied-After", f"{event.applied_after:.1f}s"))
    if event.trigger:
        trailers.append(("Trigger", event.trigger))
    trailers += [("Evidence", evidence_trailer(e)) for e in evidence]
    trailers += [("Hook", hook_trailer(e)) for e in results]
    trailers += [("Query", one_line(f"{e['name']} {e['query']}")) for e in event.evidence if e.get("query")]
    trailers += [("Answer", one_line(f"{e['name']} {e['answer']}")) for e in event.evidence if e.get("answer")]
    if replica:
        trailers.append(("Replica", replica))
    # every value printable, on one line (defence in depth: whatever text an event carries,
    # git accepts the message and no trailer is forged or split)
    parts = [subject] + body + ["\n".join(f"Sluice-{k}: {one_line(v)}" for k, v in trailers)]
    return "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class ParsedCommit:
    """The Sluice trailers of one commit message."""

    subject: str
    release: str
    action: str
    trailers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        values = self.trailers.get(key)
        return values[-1] if values else None

    def weight(self, key: str = "Sluice-Weight") -> int | None:
        value = self.get(key)
        return int(value) if value and value.lstrip("-").isdigit() else None

    def evidence(self) -> list[dict[str, Any]]:
        """The check's evidence (``Sluice-Evidence``), with its queries and answers."""
        return self._said([parse_evidence(v) for v in self.trailers.get("Sluice-Evidence", ())])

    def hooks(self) -> list[dict[str, Any]]:
        """The fire-and-record hook results the commit records (``Sluice-Hook``), with their answers."""
        return self._said([parse_hook(v) for v in self.trailers.get("Sluice-Hook", ())])

    def _said(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for key, trailer in (("query", "Sluice-Query"), ("answer", "Sluice-Answer")):
            said = dict(v.partition(" ")[::2] for v in self.trailers.get(trailer, ()))
            for item in items:
                if item.get("name") in said:
                    item[key] = said[item["name"]]
        return items


def parse_evidence(text: str) -> dict[str, Any]:
    """Inverse of ``evidence_trailer``."""
    tokens = text.split()
    out: dict[str, Any] = {}
    for tok in tokens:
        if "=" in tok:
            key, _, raw = tok.partition("=")
            if not out:
                out["name"], key = key, "value"
            if key == "dryRun":
                out[key] = raw == "true"
                continue
            try:
                out[key] = float(raw) if raw != "nodata" else None
            except ValueError:
                out[key] = raw
        else:
            out["ok"] = tok == "ok"
            if tok != "ok":
                out["outcome"] = tok
    return out


def parse_commit(message: str) -> ParsedCommit | None:
    """The Sluice trailers of ``message``, None for a commit without them."""
    lines = message.strip().splitlines()
    if not lines:
        return None
    trailers: dict[str, list[str]] = {}
    for line in reversed(lines):
        match = TRAILER.match(line.strip())
        if not match:
            if line.strip():
                break
            continue
        trailers.setdefault(match.group(1), []).insert(0, match.group(2).strip())
    release = (trailers.get("Sluice-Release") or [""])[-1]
    action = (trailers.get("Sluice-Action") or [""])[-1]
    if not release or not action:
        return None
    return ParsedCommit(lines[0], release, action, {k: tuple(v) for k, v in trailers.items()})
