"""A release's promotion history, built from the commits that touched its file.

Sluice's own commits carry trailers (reconciler.core.messages): start, each
step, pause, approval, promotion, rollback, abort, with weights and
evidence. A human commit to the file is an ``edit`` record with its author
and subject, so the history shows who steered and when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from reconciler.core.messages import parse_commit

HISTORY_API = "sluice.dev/history/v1"
_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)
_NUMBERS = ("Sluice-Weight", "Sluice-Previous-Weight")


@dataclass(frozen=True)
class RawCommit:
    """What the git adapter reads per commit."""

    sha: str
    author: str
    email: str
    at: str            # ISO-8601 author date
    message: str


@dataclass(frozen=True)
class HistoryRecord:
    commit: str
    at: str
    author: str
    email: str
    action: str          # start|advance|check-failed|promote|rollback|abort|pause|...|edit
    subject: str
    by_sluice: bool
    weight: int | None = None
    previous_weight: int | None = None
    step: str | None = None
    version: str | None = None
    stable: str | None = None
    phase: str | None = None
    reason: str | None = None
    evidence: tuple[dict[str, Any], ...] = ()
    hooks: tuple[dict[str, Any], ...] = ()   # fire-and-record hook results the commit records (Sluice-Hook)

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit, "at": self.at, "author": self.author, "email": self.email,
            "action": self.action, "subject": self.subject, "bySluice": self.by_sluice,
            "weight": self.weight, "previousWeight": self.previous_weight, "step": self.step,
            "version": self.version, "stable": self.stable, "phase": self.phase,
            "reason": self.reason, "evidence": list(self.evidence), "hooks": list(self.hooks),
        }


def _well_formed(parsed) -> bool:
    """Sluice writes weights as ASCII digits; anything else (``²`` passes str.isdigit but not
    int) is a forged or garbled trailer: the commit is read as a person's edit, not Sluice's."""
    return all(parsed.get(key) is None or _WHOLE.fullmatch(parsed.get(key)) for key in _NUMBERS)


def record(raw: RawCommit, release: str) -> HistoryRecord:
    parsed = parse_commit(raw.message)
    subject = raw.message.strip().splitlines()[0] if raw.message.strip() else ""
    if parsed is None or parsed.release != release or not _well_formed(parsed):
        return HistoryRecord(raw.sha, raw.at, raw.author, raw.email, "edit", subject, False)
    return HistoryRecord(
        commit=raw.sha, at=raw.at, author=raw.author, email=raw.email, action=parsed.action,
        subject=subject, by_sluice=True, weight=parsed.weight(),
        previous_weight=parsed.weight("Sluice-Previous-Weight"), step=parsed.get("Sluice-Step"),
        version=parsed.get("Sluice-Version"), stable=parsed.get("Sluice-Stable"),
        phase=parsed.get("Sluice-Phase"), reason=parsed.get("Sluice-Reason"),
        evidence=tuple(parsed.evidence()), hooks=tuple(parsed.hooks()),
    )


def history(raws: Iterable[RawCommit], release: str) -> list[HistoryRecord]:
    """Records oldest first from commits given newest first (``git log`` order)."""
    return [record(r, release) for r in reversed(list(raws))]
