"""Can a release's ``status:`` block be trusted to move traffic? (invariant 9)

The status is Sluice's record in git of where a rollout stands. A person may
shorten a steps list under it, a bad merge may garble it, a hand edit may
drop a field. Deciding on such a status would move traffic on a guess, so
``status_problems`` names each doubt with the path to the offending field
(the loader turns paths into file:line) and the controller holds the
release: nothing applied, nothing committed, nothing pruned, until a person
fixes it. A *missing* status is not doubt: it is rebuilt from what runs
(``decide``), and never promoted.

Checks, in order of what they would break:

- a live phase (Progressing, Paused, WaitingApproval) needs ``canary`` with
  a version and ``stable`` with a version: there is nothing to route to
  without them;
- ``step`` within the strategy's stages (a shortened steps list), ``weight``
  the weight of that step, and ``waitingFor`` naming ``promotion`` or an
  existing ``step-N``;
- every timestamp RFC 3339 with a UTC offset (a naive time is ambiguous by
  hours) and not in the future (beyond ``CLOCK_SKEW``): a future
  ``stepStartedAt`` would stall a rollout, a past one could skip a window;
- ``stable`` must run: when the cluster serves another version (not the
  canary) and nothing of ``stable``, the status describes some other world.
  Only the canary, or nothing, running is a deleted stable Deployment: it is
  put back (drift), not doubted.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from reconciler.core.model import DOWN_PHASES, LIVE_PHASES, Release

CLOCK_SKEW = timedelta(minutes=5)   # clocks of people's laptops and CI runners drift; beyond this is doubt
TIMESTAMPS = (("startedAt",), ("stepStartedAt",), ("notReadySince",), ("appliedAt",), ("stableServedUntil",), ("lastAnalysis", "at"),
              ("retiring", "until"), ("rolledBack", "at"), ("drift", "detectedAt"))
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

Doubt = tuple[tuple[Any, ...], str]


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time with an offset; None for anything else (naive, garbage)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else None
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def _get(status: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = status
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _times(status: Mapping[str, Any], now: datetime | None) -> list[Doubt]:
    out: list[Doubt] = []
    for path in TIMESTAMPS:
        value = _get(status, path)
        if value is None:
            continue
        at = parse_time(value)
        where = ("status", *path)
        if at is None:
            out.append((where, f"status.{'.'.join(path)} {value!r} is not an RFC 3339 time with a UTC offset "
                               "(e.g. 2026-11-22T09:00:00Z)"))
        elif now is not None and path != ("retiring", "until") and at > now + CLOCK_SKEW:
            out.append((where, f"status.{'.'.join(path)} {value} is in the future (now {now:%Y-%m-%dT%H:%M:%SZ})"))
    return out


def _version_of(status: Mapping[str, Any], key: str) -> str | None:
    block = status.get(key)
    if not isinstance(block, Mapping):
        return None
    version = block.get("version")
    if not (isinstance(version, str) and version):
        return None
    # what runs is labelled with the revision name (revision.py); an entry from before revisions: its version
    name = block.get("revision")
    return name if isinstance(name, str) and name else version


def status_problems(rel: Release, stage_weights: list[int], now: datetime | None = None,
                    running: Iterable[str] | None = None) -> list[Doubt]:
    """Every reason not to trust ``rel.status`` (empty when it can be acted on).

    ``stage_weights``: the new version's weight at each stage of the release's
    strategy as the spec says now; ``running``: revisions the cluster (or the
    rendered manifests) serve with at least one replica, when known.
    """
    stage_count = len(stage_weights)
    status = rel.doc.get("status")
    if status is None or status == {}:
        return []   # missing: rebuilt from what runs, see decide
    if not isinstance(status, Mapping):
        return [(("status",), "status is not a mapping")]
    out: list[Doubt] = []
    phase = status.get("phase")
    live = phase in LIVE_PHASES
    if live and _version_of(status, "canary") is None:
        out.append((("status", "canary") if "canary" in status else ("status",),
                    f"status.phase is {phase} but status.canary has no version: what is rolling out is unknown"))
    if (live or phase in DOWN_PHASES or phase == "Promoted") and _version_of(status, "stable") is None:
        out.append((("status", "stable") if "stable" in status else ("status",),
                    f"status.phase is {phase} but status.stable has no version: what serves by default is unknown"))
    step = status.get("step", 0)
    if live and rel.is_mesh and isinstance(step, int) and not 0 <= step <= stage_count:
        out.append((("status", "step"), f"status.step {step} is beyond the {stage_count} steps the strategy has now "
                                        "(was the steps list shortened?): set spec.abort, or restore the steps"))
    weight = status.get("weight", 0)
    if live and rel.is_mesh and isinstance(step, int) and 0 <= step <= stage_count and isinstance(weight, int):
        expected = stage_weights[step - 1] if step else 0
        if weight != expected:
            out.append((("status", "weight"), f"status.weight {weight} is not the weight of step {step} "
                                              f"({expected}): the status and the steps disagree"))
    retry = (status.get("rolledBack") or {}).get("retry") if isinstance(status.get("rolledBack"), Mapping) else None
    if retry is not None and (not isinstance(retry, int) or isinstance(retry, bool)):
        out.append((("status", "rolledBack", "retry"), f"status.rolledBack.retry {retry!r} is not a whole number"))
    waiting = status.get("waitingFor")
    if phase == "WaitingApproval" and waiting is not None:
        m = re.fullmatch(r"step-(\d+)", str(waiting))
        if waiting != "promotion" and not (m and 1 <= int(m.group(1)) <= stage_count):
            out.append((("status", "waitingFor"), f"status.waitingFor {waiting!r} names no gate of this strategy"))
    if phase == "Paused" and status.get("pausedPhase") not in (None, *LIVE_PHASES):
        out.append((("status", "pausedPhase"), f"status.pausedPhase {status.get('pausedPhase')!r} is not a live phase"))
    out += _times(status, now)
    stable = _version_of(status, "stable")
    serving = set(running) if running is not None else set()
    elsewhere = serving - {_version_of(status, "canary") if live else None}
    if stable and stable not in serving and elsewhere:
        out.append((("status", "stable", "version"),
                    f"status.stable {stable} does not run while {', '.join(sorted(elsewhere))} serves: the status "
                    "describes another state; fix or remove the status block"))
    return out
