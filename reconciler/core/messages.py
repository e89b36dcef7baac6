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

A ``start`` or ``retarget`` commit also names the person's commit that asked
for the rollout (``Sluice-Trigger: <sha>``): commit statuses are posted there.

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
    verdict = "ok" if item.get("ok") else item.get("outcome", "failed")
    dry = " (dry run: not judged)" if item.get("dryRun") else ""
    return f"{item['name']} {value}" + (f" ({', '.join(facts)})" if facts else "") + f" {verdict}{dry}"


def evidence_trailer(item: Mapping[str, Any]) -> str:
    """``request-success-rate=99.92 min=99 window=1m provider=prometheus ok`` (one token per fact, for programs)."""
    value = _num(item["value"]) if item.get("value") is not None else "nodata"
    parts = [f"{item['name']}={value}"]
    parts += [f"{b}={_num(item[b])}" for b in _BOUNDS + ("stable", "window", "provider") if item.get(b) is not None]
    if item.get("dryRun"):
        parts.append("dryRun=true")
    parts.append("ok" if item.get("ok") else item.get("outcome", "failed"))
    return " ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_commit(event: Event) -> str:
    """The full commit message of ``event``."""
    subject = _one_line(f"{event.release}: {event.summary}")
    body = []
    if event.evidence:
        body.append("; ".join(evidence_words(e) for e in event.evidence))
    if event.reason:
        body.append(_one_line(event.reason))
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
        trailers.append(("Reason", _one_line(event.reason)))
    if event.applied_after is not None:
        trailers.append(("Applied-After", f"{event.applied_after:.1f}s"))
    if event.trigger:
        trailers.append(("Trigger", event.trigger))
    trailers += [("Evidence", evidence_trailer(e)) for e in event.evidence]
    trailers += [("Query", _one_line(f"{e['name']} {e['query']}")) for e in event.evidence if e.get("query")]
    parts = [subject] + body + ["\n".join(f"Sluice-{k}: {v}" for k, v in trailers)]
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
        items = [parse_evidence(v) for v in self.trailers.get("Sluice-Evidence", ())]
        queries = dict(v.partition(" ")[::2] for v in self.trailers.get("Sluice-Query", ()))
        for item in items:
            if item.get("name") in queries:
                item["query"] = queries[item["name"]]
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
