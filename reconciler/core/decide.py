"""The rollout decision: (release, observations, now) -> (new status, event).

Pure: no I/O, no clock (``now`` is passed in). The controller observes
readiness and runs analysis checks, then calls ``decide``; the returned
status is what it commits (with the Event as the commit message) and then
applies. Calling ``decide`` again on the decided status with nothing new
observed returns the same status and no event (idempotent passes).

Every strategy is a list of stages (``_stages``): a canary step is a stage at
a weight; a blue/green, A/B or mirror iteration is a stage at weight 0 with
its match or mirror route on; a dark launch is one stage that waits for a
human. ``status.step`` counts stages (0 = the new version is starting and
gets no traffic yet). A stage ends with a check: pass -> next stage (or
promotion after the last); fail -> one more failed check, and a rollback when
failed checks reach ``maxFailedChecks``; hold -> nothing moves. The full
state machine and timing formulas are in docs/rollout.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.trusted import parse_time, status_problems
from reconciler.core.notifications import kind_of
from reconciler.core.model import (
    DEFAULT_INTERVAL, DEFAULT_MAX_FAILED_CHECKS, DEFAULT_PROGRESS_DEADLINE, DEFAULT_SCALE_DOWN_DELAY,
    DOWN_PHASES, LIVE_PHASES, Applied, Event, MetricResult, Readiness, Release, canary_step_specs, canary_steps,
)
from reconciler.core import adopt, hooks, revision

LIVE = LIVE_PHASES
NOT_READY_RECHECK = 5.0   # seconds between readiness looks while a version starts
APPLIED_RECHECK = 2.0     # seconds between looks at the applier while a step's routing is not live yet
APPLIED_RECHECK_LATER = 15.0   # ... once it has waited a minute (a stuck applier is not polled every 2s)
STEP_SCOPED = ("appliedAt", "heldBy")   # status fields of one step: a new step starts without them


@dataclass(frozen=True)
class Observations:
    readiness: Mapping[str, Readiness]          # version -> readiness of its Deployment
    analysis: tuple[MetricResult, ...] | None = None   # a check run this pass
    verdict: str | None = None                  # pass | fail | hold for that check (analysis.verdict)
    running: tuple[Mapping[str, Any], ...] | None = None   # what runs (observed.running); None: unknown
    rollback: Mapping[str, Any] | None = None  # a rollback applied whose commit has not landed
    applied: Applied | None = None             # is the status's routing live, since when (None: not asked)
    guard: bool = False                        # ``analysis`` is a guard check: only a metric out of bounds
                                               # counts (the step's own window is not complete or not open)


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    event: Event | None = None
    urgent: bool = False           # rollback: apply traffic before pushing (invariant 1)
    next_check_in: float | None = None

    @property
    def notify(self) -> str | None:
        """Who hears of this decision: its event's kind (core.notifications.KINDS), None for none."""
        return kind_of(self.event) if self.event is not None else None


@dataclass(frozen=True)
class Stage:
    weight: int
    label: str                     # how the stage reads in a commit subject


# --- time --------------------------------------------------------------------
def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")




# --- the shape of a rollout --------------------------------------------------
def _strategy_setting(rel: Release, key: str, default: Any) -> Any:
    return rel.strategy.get(key, default)


def interval(rel: Release, step: int | None = None) -> float:
    """Seconds a stage lasts before it is judged (and between re-checks): the
    step's own ``pause`` when a canary step has one, else ``interval``."""
    strat, index = rel.strategy, step
    if rel.strategy_kind == "mirror" and step is not None and step > int(strat.get("iterations", 5)):
        strat, index = strat.get("canary") or strat, step - int(strat.get("iterations", 5))
    if strat.get("steps") and index is not None and rel.strategy_kind in ("canary", "mirror"):
        specs = canary_step_specs(strat)
        if 1 <= index <= len(specs) and specs[index - 1].get("pause") is not None:
            return parse_duration(specs[index - 1]["pause"])
    return parse_duration(strat.get("interval", DEFAULT_INTERVAL))


def step_gates(rel: Release) -> list[int]:
    """1-based stages that wait for an approval before they start: ``gates.steps``
    and canary steps written ``{weight: N, approval: true}``."""
    gates = set((rel.spec.get("gates") or {}).get("steps") or [])
    strat, offset = rel.strategy, 0
    if rel.strategy_kind == "mirror":
        strat, offset = rel.strategy.get("canary") or {}, int(rel.strategy.get("iterations", 5))
    if rel.strategy_kind in ("canary", "mirror"):
        gates |= {offset + i for i, s in enumerate(canary_step_specs(strat), 1) if s.get("approval")}
    return sorted(gates)


def max_failed(rel: Release) -> int:
    return int(_strategy_setting(rel, "maxFailedChecks", DEFAULT_MAX_FAILED_CHECKS))


def stages(rel: Release) -> list[Stage]:
    kind, strat = rel.strategy_kind, rel.strategy
    if kind == "canary":
        return [Stage(w, f"{w}%") for w in canary_steps(strat)]
    if kind in ("blueGreen", "abTesting"):
        n = int(strat.get("iterations", 5))
        what = "preview" if kind == "blueGreen" else "match route"
        return [Stage(0, f"{what} check {i}/{n}") for i in range(1, n + 1)]
    if kind == "mirror":
        n = int(strat.get("iterations", 5))
        out = [Stage(0, f"mirror {strat.get('percentage', 100)}% check {i}/{n}") for i in range(1, n + 1)]
        return out + [Stage(w, f"{w}%") for w in canary_steps(strat.get("canary") or {})]
    if kind == "darkLaunch":
        return [Stage(0, "dark launch")]
    return []   # rolling, recreate: readiness is the whole story


def manual_promotion(rel: Release) -> bool:
    return rel.strategy_kind == "darkLaunch" or (rel.spec.get("gates") or {}).get("promotion") == "manual"


def approved(rel: Release, version: str, gate: str) -> bool:
    """Does ``spec.approve`` approve ``gate`` (``promotion`` or ``step-N``) of ``version``?"""
    value = str(rel.spec.get("approve") or "")
    ver, _, upto = value.partition("@")
    canary = rel.status.get("canary") or {}
    # the revision name approves; the version only where it alone names the revision, so an
    # approval left from an earlier rollout of the same version never approves new content
    names = revision.approval_names(canary) if canary.get("version") == version else {version}
    if ver not in names:
        return False
    if not upto or upto == "promotion":
        return True
    return gate.startswith("step-") and upto.isdigit() and int(gate[5:]) <= int(upto)


def schedule(rel: Release) -> list[tuple[int, float]]:
    """A healthy run: (new version's weight, seconds from start) at each stage, then promotion."""
    out, t = [], 0.0
    for i, stage in enumerate(stages(rel), 1):
        out.append((stage.weight, t))
        t += interval(rel, i)
    out.append((100, t))
    return out


# --- helpers building statuses and events ------------------------------------
def _ver(d: Mapping[str, Any] | None) -> dict[str, str] | None:
    """A status entry's identity: version, image, and revision + hash when recorded."""
    return revision.entry(d)


def _evidence(obs: Observations) -> tuple[dict[str, Any], ...]:
    return tuple(r.to_status() for r in obs.analysis or ())


def _verdict(obs: Observations) -> str | None:
    """The check's verdict, as analysis.verdict judged it (one place decides pass/fail/hold)."""
    if obs.analysis is None:
        return None
    if obs.verdict not in ("pass", "fail", "hold"):
        raise ValueError("Observations with analysis need the verdict of analysis.verdict")
    return obs.verdict


def _failure_words(obs: Observations) -> str:
    bad = [r for r in obs.analysis or () if not r.ok and not r.dry_run]   # a dry run never speaks for a decision
    return "; ".join(f"{r.name} {r.message or r.outcome}" for r in bad)


class _Ctx:
    """One decision's inputs and the event builder."""

    def __init__(self, rel: Release, obs: Observations, now: datetime):
        self.rel, self.obs, self.now = rel, obs, now
        self.st: dict[str, Any] = dict(rel.status)
        self.target = revision.target(rel)
        if rel.spec.get("skipAnalysis") and analysis_due(rel, now, obs.applied):
            # a hotfix: each stage passes when its time is up, with no metrics asked
            self.obs = replace(obs, analysis=(), verdict="pass")

    def event(self, action: str, summary: str, status: Mapping[str, Any], *, reason: str = "",
              evidence: bool = False, prev: int | None = None) -> Event:
        canary = _ver(status.get("canary")) or _ver(self.st.get("canary")) or self.target
        n = len(stages(self.rel))
        return Event(
            release=self.rel.key, action=action, summary=summary, weight=status.get("weight"),
            previous_weight=prev if prev is not None else self.st.get("weight"),
            step=status.get("step") if n else None, steps=n or None, version=revision.display(canary),
            stable=revision.display(_ver(status.get("stable"))) if status.get("stable") else None,
            phase=status.get("phase"),
            reason=reason, evidence=_evidence(self.obs) if evidence else (),
            applied_after=self.applied_after() if evidence else None)

    def applied_after(self) -> float | None:
        """Seconds from this step's commit to its routing being live, when a target told."""
        applied, started = self.obs.applied, parse_time(self.st.get("stepStartedAt"))
        if applied is None or applied.at is None or started is None:
            return None
        return max(0.0, (applied.at - started).total_seconds())


def _start(c: _Ctx, action: str = "start", note: str = "") -> Decision:
    stable = _ver(c.st.get("stable"))
    stable = revision.entry(c.st.get("stable"))
    new = revision.display(c.target)
    status = {"phase": "Progressing", "message": f"starting {new}",
              "stable": stable, "canary": dict(c.target), "weight": 0, "step": 0, "failedChecks": 0,
              "startedAt": iso(c.now), "stepStartedAt": iso(c.now)}
    for key in ("rolledBack", "retiring", "previous", "snapshots"):
        if c.st.get(key):
            status[key] = c.st[key]
    n = len(stages(c.rel))
    kind = c.rel.strategy_kind
    was = (c.st.get("snapshots") or {}).get(revision.name_of(stable))
    why = "; ".join(filter(None, [note] + (revision.reasons(stable, c.rel, was) if action == "start" else [])))
    what = f"{kind} {revision.display(stable)} -> {new}" + (f" ({n} steps)" if n else "")
    summary = f"{action} {what}" + (f": {note}" if note else "")
    return Decision(status, c.event(action, summary, status, reason=why, prev=0),
                    next_check_in=NOT_READY_RECHECK)


def _promote(c: _Ctx, reason: str = "") -> Decision:
    canary = _stable_entry(c, c.st["canary"])
    old = revision.entry(c.st.get("stable"))
    status = {"phase": "Promoted", "message": f"{revision.display(canary)} promoted",
              "stable": canary, "weight": 100, "step": 0, "failedChecks": c.st.get("failedChecks", 0),
              "startedAt": c.st.get("startedAt"), "stepStartedAt": iso(c.now)}
    if c.st.get("lastAnalysis"):
        status["lastAnalysis"] = c.st["lastAnalysis"]
    if c.obs.analysis is not None:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    delay = parse_duration(c.rel.spec.get("scaleDownDelay", DEFAULT_SCALE_DOWN_DELAY))
    if old and revision.name_of(old) != revision.name_of(canary) and c.rel.is_mesh:
        status["retiring"] = {**old, "until": iso(c.now + timedelta(seconds=delay))}
    status["previous"] = _window(c, old) or None
    status = {k: v for k, v in status.items() if v is not None}
    prev = c.st.get("weight", 0)
    summary = f"promote {revision.display(canary)} {prev}% -> 100%" + (" (full: remaining steps skipped)"
                                                                     if reason.startswith("promote --full") else "")
    return Decision(status, c.event("promote", summary, status, reason=reason, evidence=c.obs.analysis is not None,
                                    prev=prev), next_check_in=delay if "retiring" in status else None)


DEFAULT_ROLLBACK_WINDOW = 3


def _stable_entry(c: _Ctx, e: Mapping[str, Any]) -> dict[str, Any]:
    """``e`` as it becomes stable: named and hashed (``decide`` records the snapshot of
    what it runs in ``status.snapshots``, so it keeps rendering as it ran)."""
    out = revision.entry(e) or {}
    if revision.same(e, c.target):
        out.update({"revision": c.target["revision"] if e.get("hash") else revision.name_of(e),
                    "hash": c.target["hash"]})
    return out


def _window(c: _Ctx, old: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``status.previous``: the last ``spec.rollbackWindow`` stable revisions, newest first."""
    n = int(c.rel.spec.get("rollbackWindow", DEFAULT_ROLLBACK_WINDOW))
    prev = list(c.st.get("previous") or [])
    if not old or not old.get("hash"):
        return prev[:n]   # an entry from before revisions cannot be returned to safely
    return revision.remember(prev, old, iso(c.now), n)


def _adopt(c: _Ctx) -> Decision:
    """A stable entry written before revisions: record its name, hash and snapshot.
    Its Deployment ``<name>-<version>`` keeps its name and pod template: no restart."""
    stable = _stable_entry(c, c.st["stable"])
    status = {**c.st, "stable": stable}
    name = revision.name_of(stable)
    return Decision(status, c.event("adopt", f"adopt {revision.display(stable)} as revision {name}", status,
                                    prev=c.st.get("weight", 100),
                                    reason=f"status recorded before revisions; hash {stable['hash']}"))


def _full_promote(c: _Ctx) -> Decision | None:
    """``spec.promote: <revision>`` (``sluice promote --full``): 100% now, remaining steps,
    gates and analysis skipped; never before the new revision is ready."""
    want = str(c.rel.spec.get("promote") or "")
    canary = c.st["canary"]
    done = f"{want}#{canary.get('hash', '')}"
    if not want or want not in revision.approval_names(canary) or c.st.get("promoteDone") == done:
        return None
    ready = c.obs.readiness.get(revision.name_of(canary))
    if ready is None or not ready.ready:
        return None   # readiness still gates it: the usual path holds and reports
    d = _promote(c, reason=f"promote --full by spec.promote: {want}")
    return replace(d, status={**d.status, "promoteDone": done})   # acts once, for this content only


def _rollback_to(c: _Ctx) -> Decision | None:
    """``spec.rollback: <revision>@<n>`` (``sluice rollback --to``): serve that revision of
    the rollback window (``status.previous``, with its snapshot) at 100% at once, no canary:
    it already ran at 100%. What was running or rolling out is recorded as rolled back, so
    it does not start again before a retry or a new target. Each request acts once
    (``status.rollbackDone``). Applied before its commit lands (invariant 1's exception).

    Its pods still run (it is ``status.retiring``, within scaleDownDelay): the switch is
    at once. They are gone: it is brought up first, as the new version at full size
    (``status.rollbackTo``, sizing.py), while the stable keeps 100% (a rollout in flight
    is rolled back at once); traffic moves once it is ready, as promote --full waits."""
    want = str(c.rel.spec.get("rollback") or "")
    if not want or want == str(c.st.get("rollbackDone") or ""):
        return None
    name = want.partition("@")[0]
    back = next((dict(p) for p in c.st.get("previous") or () if revision.name_of(p) == name), None)
    if back is None or name not in (c.st.get("snapshots") or {}) or revision.name_of(c.st.get("stable")) == name:
        return None   # not a revision Sluice can return to as it ran: the usual flow goes on
    old = revision.entry(c.st.get("stable"))
    waited = c.st.get("rollbackTo") == want   # brought up by an earlier pass; its canary entry is `back`
    live = c.st.get("phase") in LIVE and c.st.get("canary") and not waited
    new = {**revision.entry(back), "revision": name}
    down = revision.entry(c.st["canary"]) if live else (None if revision.same(c.target, back) else c.target)
    if waited:
        down = revision.entry(c.st.get("rolledBack"))
    running = revision.name_of(c.st.get("retiring")) == name or not c.rel.is_mesh
    if not running:
        ready = c.obs.readiness.get(name)
        if waited and not (ready and ready.ready):
            return Decision(c.st, next_check_in=NOT_READY_RECHECK)   # its pods are starting; stable keeps 100%
        if not waited:
            return _rollback_to_start(c, want, new, down, live)
    status: dict[str, Any] = {"phase": "Promoted", "message": f"rolled back to {revision.display(new)} by spec.rollback",
                              "stable": new, "weight": 100, "step": 0, "failedChecks": 0,
                              "startedAt": iso(c.now), "stepStartedAt": iso(c.now), "rollbackDone": want}
    delay = parse_duration(c.rel.spec.get("scaleDownDelay", DEFAULT_SCALE_DOWN_DELAY))
    if old and c.rel.is_mesh:
        status["retiring"] = {**old, "until": iso(c.now + timedelta(seconds=delay))}
    if down:
        status["rolledBack"] = {**down, "retry": int(c.rel.spec.get("retry", 0)),
                                "reason": f"rollback --to {name}", "at": iso(c.now)}
    rest = [p for p in c.st.get("previous") or () if revision.name_of(p) != name]
    n = int(c.rel.spec.get("rollbackWindow", DEFAULT_ROLLBACK_WINDOW))
    status["previous"] = rest[:n] or None   # the revision rolled back from is not one to return to
    status["snapshots"] = c.st.get("snapshots")
    status = {k: v for k, v in status.items() if v is not None}
    gone = revision.display(c.st["canary"] if live else old)
    prev = int(c.st.get("weight", 0)) if live else 100
    summary = f"rollback {gone} -> {revision.display(new)}: {revision.display(new)} 100% now (spec.rollback)"
    if waited:
        summary += ", once its pods were ready"
    event = Event(release=c.rel.key, action="rollback", summary=summary, weight=100, previous_weight=100 - prev,
                  version=revision.display(new), stable=revision.display(new), phase="Promoted",
                  reason=f"rollback --to {name} ({want}): a revision of the rollback window, no canary")
    return Decision(status, event, urgent=True, next_check_in=delay)


def _rollback_to_start(c: _Ctx, want: str, new: Mapping[str, Any], down: Mapping[str, Any] | None,
                       live: bool) -> Decision:
    """``spec.rollback`` to a revision whose pods are gone: bring it up at full size as
    the new version, the stable serving 100% meanwhile; ``_rollback_to`` switches once
    it is ready. A rollout in flight is rolled back now (urgent, as any rollback)."""
    name = revision.name_of(new)
    status: dict[str, Any] = {
        "phase": "Progressing", "stable": c.st.get("stable"), "canary": dict(new), "weight": 0, "step": 0,
        "failedChecks": 0, "startedAt": iso(c.now), "stepStartedAt": iso(c.now), "rollbackTo": want,
        "message": f"rollback --to {name}: its pods were scaled down; starting them at full size, "
                   f"{revision.display(c.st.get('stable'))} keeps 100% until they are ready"}
    for key in ("retiring", "previous", "snapshots", "rollbackDone"):
        if c.st.get(key):
            status[key] = c.st[key]
    if down:
        status["rolledBack"] = {**down, "retry": int(c.rel.spec.get("retry", 0)),
                                "reason": f"rollback --to {name}", "at": iso(c.now)}
    prev = int(c.st.get("weight", 0)) if live else 0
    summary = (f"rollback --to {name}: starting {revision.display(new)} at full size before traffic moves"
               + (f"; {revision.display(c.st['canary'])} {prev}% -> 0%" if live else ""))
    event = c.event("hold", summary, status, reason=f"rollback --to {name} ({want}): its pods are gone", prev=prev)
    return Decision(status, event, urgent=bool(live), next_check_in=NOT_READY_RECHECK)


def _stable_first(c: _Ctx) -> Decision | None:
    """A retarget while dynamicStableScale has shrunk the stable: the new target starts at
    0%, so the stable takes back the traffic of the version it replaces. Until the stable
    is at full size again (``status.heldBy: stable``, sizing.py) that version keeps its
    weight; no step moves. None: nothing to wait for."""
    from reconciler.core import sizing   # (sizing imports this module)
    stable = revision.name_of(c.st.get("stable"))
    full = sizing.full_size(c.rel).replicas
    if c.st.get("heldBy") != "stable":
        if full is None or sizing.stable_pods(c.rel, full, int(c.st.get("step", 0))) >= full:
            return None
        canary, weight = revision.display(c.st["canary"]), c.st.get("weight", 0)
        status = {**c.st, "heldBy": "stable",
                  "message": f"retarget to {revision.display(c.target)}: {canary} keeps {weight}% until "
                             f"{revision.display(c.st['stable'])} is back at {full} pods"}
        return Decision(status, c.event("hold", f"{canary} held at {weight}%: {stable} scales back to {full} "
                                                f"pods before the retarget", status,
                                        reason="dynamicStableScale"), next_check_in=NOT_READY_RECHECK)
    ready = c.obs.readiness.get(stable)
    return None if ready is not None and ready.ready else Decision(c.st, next_check_in=NOT_READY_RECHECK)


def _rollback(c: _Ctx, phase: str, reason: str, *, evidence: bool = True) -> Decision:
    canary = _ver(c.st.get("canary")) or c.target
    prev = c.st.get("weight", 0)
    status = {"phase": phase, "message": reason, "stable": _ver(c.st.get("stable")), "weight": 0,
              "step": c.st.get("step", 0), "failedChecks": c.st.get("failedChecks", 0),
              "startedAt": c.st.get("startedAt"), "stepStartedAt": iso(c.now),
              "rolledBack": {**canary, "retry": int(c.rel.spec.get("retry", 0)), "reason": reason, "at": iso(c.now)}}
    if c.obs.analysis is not None and evidence:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    elif c.st.get("lastAnalysis"):
        status["lastAnalysis"] = c.st["lastAnalysis"]
    if c.st.get("previous"):
        status["previous"] = c.st["previous"]   # the rollback window outlives a rollback
    status = {k: v for k, v in status.items() if v is not None}
    action = {"Aborted": "abort", "Failed": "rollback"}.get(phase, "rollback")
    summary = f"{action} {revision.display(canary)} {prev}% -> 0%: {reason}"
    return Decision(status, c.event(action, summary, status, reason=reason,
                                    evidence=evidence and c.obs.analysis is not None, prev=prev),
                    urgent=True)


def _pending_rollback(c: _Ctx, mark: Mapping[str, Any]) -> Decision:
    """A rollback applied before its commit landed (a crash, a rejected push): decide it
    again as it was decided, with its time and evidence, never undoing it."""
    phase = mark.get("phase") if mark.get("phase") in DOWN_PHASES else "RolledBack"
    at = mark.get("at") if parse_time(mark.get("at")) else iso(c.now)
    d = _rollback(c, phase, str(mark.get("reason") or "rolled back"), evidence=False)
    status = {**d.status, "stepStartedAt": at, "rolledBack": {**d.status["rolledBack"], "at": at}}
    seen = mark.get("lastAnalysis")
    if isinstance(seen, Mapping) and isinstance(seen.get("results"), list):
        status["lastAnalysis"] = dict(seen)
    evidence = tuple(r for r in (seen or {}).get("results") or () if isinstance(r, Mapping))
    return replace(d, status=status, event=replace(d.event, evidence=evidence))


def _wait_approval(c: _Ctx, gate: str) -> Decision:
    status = {**c.st, "phase": "WaitingApproval", "waitingFor": gate,
              "message": f"waiting for approval of {gate}: sluice approve {c.rel.key}"}
    if c.obs.analysis is not None:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    canary = revision.display(c.st["canary"])
    return Decision(status, c.event("wait-approval", f"{canary} waits for approval of {gate}", status,
                                    evidence=c.obs.analysis is not None))


def _enter_stage(c: _Ctx, step: int, *, action: str = "advance") -> Decision:
    """Move to ``step`` (1-based), honouring a step gate first."""
    all_stages = stages(c.rel)
    gates = step_gates(c.rel)
    canary = c.st["canary"]["version"]
    shown = revision.display(c.st["canary"])
    if step in gates and not approved(c.rel, canary, f"step-{step}") and c.st.get("phase") != "WaitingApproval":
        return _wait_approval(c, f"step-{step}")
    if step in gates and not approved(c.rel, canary, f"step-{step}"):
        return Decision(c.st)
    stage = all_stages[step - 1]
    prev = c.st.get("weight", 0)
    status = {**c.st, "phase": "Progressing", "weight": stage.weight, "step": step,
              "stepStartedAt": iso(c.now), "message": f"step {step}/{len(all_stages)}: {stage.label}"}
    status.pop("waitingFor", None)
    status.pop("stableServedUntil", None)
    if stage.weight >= 100 and prev < 100:
        status["stableServedUntil"] = iso(c.now)   # compareToStable reads stable's last window from here
    if c.obs.analysis is not None:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    kind = c.rel.strategy_kind
    if stage.weight or kind == "canary":
        summary = f"{kind} {shown} {prev}% -> {stage.weight}% (step {step}/{len(all_stages)})"
    else:
        summary = f"{kind} {shown} {stage.label}"
    return Decision(status, c.event(action, summary, status, evidence=c.obs.analysis is not None, prev=prev),
                    next_check_in=interval(c.rel, step))


def _after_last_stage(c: _Ctx) -> Decision:
    canary = c.st["canary"]["version"]
    if manual_promotion(c.rel) and not approved(c.rel, canary, "promotion"):
        if c.st.get("phase") == "WaitingApproval" and c.st.get("waitingFor") == "promotion":
            return Decision(c.st)
        return _wait_approval(c, "promotion")
    return _promote(c, reason="approved" if manual_promotion(c.rel) else "")


def _count_failure(c: _Ctx, step: int, words: str) -> Decision:
    """One more failed check at ``step``; a rollback when they reach maxFailedChecks."""
    failed = int(c.st.get("failedChecks", 0)) + 1
    limit = max_failed(c.rel)
    c.st["failedChecks"] = failed
    if failed >= limit:
        return _rollback(c, "RolledBack", f"{failed}/{limit} failed checks: {words}")
    status = {**c.st, "lastAnalysis": {"at": iso(c.now), "results": list(_evidence(c.obs))},
              "message": f"check failed {failed}/{limit}: {words}"}
    canary = revision.display(c.st["canary"])
    summary = f"{c.rel.strategy_kind} {canary} check failed {failed}/{limit} at {c.st.get('weight', 0)}%" + \
        (f" (step {step}/{len(stages(c.rel))})" if stages(c.rel) else "")
    return Decision(status, c.event("check-failed", summary, status, reason=words, evidence=True),
                    next_check_in=interval(c.rel, step))


def _judge(c: _Ctx, step: int) -> Decision:
    """A check at ``step`` came in: advance, count a failure, roll back, or hold."""
    verdict = _verdict(c.obs)
    if verdict == "pass":
        if step < len(stages(c.rel)):
            return _enter_stage(c, step + 1)
        return _after_last_stage(c)
    if verdict == "fail":
        return _count_failure(c, step, _failure_words(c.obs) or "check failed")
    if verdict == "hold":
        message = "analysis held: metrics provider unavailable, nothing advances"
        if c.st.get("message") == message:
            return Decision(c.st, next_check_in=interval(c.rel, step))
        status = {**c.st, "message": message}
        canary = revision.display(c.st["canary"])
        return Decision(status, c.event("hold", f"{c.rel.strategy_kind} {canary} held: metrics provider unavailable",
                                        status, reason=_failure_words(c.obs), evidence=True),
                        next_check_in=interval(c.rel, step))
    return Decision(c.st)


def status_doubts(rel: Release, now: datetime | None, running=None) -> list[tuple[tuple[Any, ...], str]]:
    """Why ``rel``'s status cannot be trusted to move traffic (trusted.status_problems
    with the stages of its strategy as the spec says now)."""
    return status_problems(rel, [stage.weight for stage in stages(rel)], now, running)


def rebuild_doubts(rel: Release, running: tuple[Mapping[str, Any], ...] | None) -> list[tuple[tuple[Any, ...], str]]:
    """Why a missing status cannot be rebuilt from what runs: a Deployment bearing the
    target's revision name runs other content (a template, config or image change under
    the same version), or the spec says abort. Rebuilding then would put untested
    content on every pod of that name; the release holds until a person restores the
    status (git history has it) or gives the target a new version."""
    adoption = adopt.problems(rel, running)   # spec.workloadRef: found, not Sluice's, told apart by version
    if adoption:
        return adoption
    if rel.status.get("stable") or not running:
        return []
    if adopt.workload_ref(rel):
        return adopt.lost_status(rel, running)
    target = revision.target(rel)
    for v in running:
        clash = v["version"] == target["revision"] and (
            v.get("image", "") != target["image"] or (v.get("hash") and v["hash"] != target["hash"]))
        if clash:
            return [(("status",), f"the status is missing and {rel.name}-{v['version']} runs other content than the "
                                  f"target of that name: restore the status block from git history, or give "
                                  f"spec.target a new version")]
    if rel.spec.get("abort"):
        return [(("spec", "abort"), "the status is missing and spec.abort is set: restore the status block from "
                                    "git history, or remove spec.abort to start the target's rollout")]
    return []


def rollback_doubts(rel: Release) -> list[tuple[tuple[Any, ...], str]]:
    """Why ``spec.rollback`` (``sluice rollback --to``) cannot be done: the revision it names
    is not in the rollback window with a snapshot (``_rollback_to`` would pass it by)."""
    want = str(rel.spec.get("rollback") or "")
    st = rel.status
    if not want or not st.get("stable") or want == str(st.get("rollbackDone") or ""):
        return []
    name = want.partition("@")[0]
    if revision.name_of(st.get("stable")) == name or st.get("rollbackTo") == want:
        return []
    window = [revision.name_of(p) for p in st.get("previous") or ()]
    if name in window and name in (st.get("snapshots") or {}):
        return []
    known = ", ".join(n for n in window if n in (st.get("snapshots") or {})) or "none"
    return [(("spec", "rollback"), f"spec.rollback names {name}, which is not a revision of the rollback window "
                                   f"recorded with its snapshot (status.previous: {known}): nothing was rolled "
                                   "back; name one of those, or remove spec.rollback")]


CHECKED = ("Progressing", "WaitingApproval")   # phases whose new version takes traffic and is judged


def analysis_at(rel: Release, applied: Applied | None = None) -> datetime | None:
    """When the next check of ``rel`` is due by its status; None when none is
    (before the first step, paused, not rolling out, or the step's routing not
    live yet). A release waiting for approval is still checked once per
    interval: its new version serves traffic while it waits, and a failure
    still rolls it back (the controller keeps the time of that check in memory,
    so waiting costs one query an interval and no commit).

    A check is due one interval after the latest of: the step's commit, the
    moment its routing was live (``applied``, or ``status.appliedAt``), the
    last check."""
    st = rel.status
    phase, step = st.get("phase"), int(st.get("step", 0))
    if phase not in CHECKED or step < 1 or not st.get("canary"):
        return None
    if applied is not None and applied.pending:
        return None
    marks = (st.get("stepStartedAt"), st.get("appliedAt"), (st.get("lastAnalysis") or {}).get("at"))
    since = [t for t in (*map(parse_time, marks), applied.at if applied is not None else None) if t]
    if not since:
        return datetime.min.replace(tzinfo=timezone.utc)
    return max(since) + timedelta(seconds=interval(rel, step))


def analysis_due(rel: Release, now: datetime, applied: Applied | None = None) -> bool:
    """Should the controller run a check for ``rel`` this pass?"""
    due = analysis_at(rel, applied)
    return due is not None and now >= due


def window_start(rel: Release, applied: Applied | None = None) -> datetime | None:
    """Where a check's query window may start: the moment the step's routing was
    live (``applied``, ``status.appliedAt``), else the step's commit. Traffic of
    an earlier weight is never judged as this step's."""
    st = rel.status
    if applied is not None and applied.at is not None:
        return applied.at
    return parse_time(st.get("appliedAt")) or parse_time(st.get("stepStartedAt"))


def wake_in(rel: Release, decision: Decision, now: datetime) -> float | None:
    """Seconds until ``rel`` (with the decided status) wants another look; None:
    only a change in git (a person) or the poll interval moves it. A moment
    already past (a check that held, a commit that did not land) is retried
    after an interval or a readiness recheck, never at once: no busy loop."""
    after = rel.with_status(decision.status)
    st = decision.status
    step = int(st.get("step", 0))
    hints = []
    if decision.next_check_in is not None:
        hints.append(decision.next_check_in if decision.next_check_in > 0 else NOT_READY_RECHECK)
    due = analysis_at(after)
    if due is not None:
        wait = (due - now).total_seconds()
        hints.append(wait if wait > 0 else max(interval(after, step), NOT_READY_RECHECK))
    if st.get("phase") == "Progressing" and (step == 0 or st.get("notReadySince")):
        hints.append(NOT_READY_RECHECK)
    if st.get("heldBy") == "applier":
        hints.append(APPLIED_RECHECK_LATER)
    until = parse_time((st.get("retiring") or {}).get("until"))
    if until is not None:
        wait = (until - now).total_seconds()
        hints.append(wait if wait > 0 else NOT_READY_RECHECK)
    return min(hints) if hints else None


def overdue_at(rel: Release) -> datetime | None:
    """When a Progressing release's current step should have ended by on its own:
    the time its version may take to be ready (progressDeadline) plus every check
    it may fail before a rollback ((maxFailedChecks + 1) intervals). Past it and
    still on the same step, something holds it (a provider that keeps erring under
    onProviderError: hold, a stuck applier, passes failing); the alert
    SluiceReleaseStuck fires on it. None when nothing is expected to move by itself
    (waiting for approval, paused, at rest)."""
    st = rel.status
    started = parse_time(st.get("stepStartedAt")) if st.get("phase") == "Progressing" else None
    if started is None:
        return None
    step = int(st.get("step", 0))
    deadline = parse_duration(rel.spec.get("progressDeadline", DEFAULT_PROGRESS_DEADLINE))
    return started + timedelta(seconds=deadline + interval(rel, step) * (max_failed(rel) + 1))


def _not_ready(c: _Ctx, canary: str, step: int, ready: Readiness) -> Decision:
    """The new version cannot take traffic: hold its weight, count due checks as
    failed, and roll back once progressDeadline has passed since it stopped being
    ready (since the rollout started, at step 0)."""
    deadline = parse_duration(c.rel.spec.get("progressDeadline", DEFAULT_PROGRESS_DEADLINE))
    weight = c.st.get("weight", 0)
    live = c.obs.applied.at if c.obs.applied is not None else None   # a late applier does not eat the deadline
    since = parse_time(c.st.get("notReadySince")) or (
        max(filter(None, (parse_time(c.st.get("stepStartedAt")), live))) if step == 0 else None)
    if since is not None and c.now - since > timedelta(seconds=deadline):
        where = "" if step == 0 else f" at {weight}%"
        return _rollback(c, "Failed", f"{canary} not ready{where} for {format_duration(deadline)} "
                                      f"(progressDeadline){': ' + ready.message if ready.message else ''}",
                         evidence=False)
    if c.obs.analysis is not None and step >= 1 and c.st.get("phase") == "Progressing":
        words = "; ".join(filter(None, [f"{canary} not ready ({ready.message or ready.state})", _failure_words(c.obs)]))
        decision = _count_failure(c, step, words)
        if decision.status.get("phase") == "Progressing":
            decision.status.setdefault("notReadySince", iso(c.now))
        return decision
    if step >= 1 and not c.st.get("notReadySince"):
        # recorded in git, so a restarted controller measures the deadline from the same moment
        status = {**c.st, "notReadySince": iso(c.now),
                  "message": f"{canary} not ready ({ready.message or ready.state}): holding at {weight}%"}
        return Decision(status, c.event("hold", f"{canary} not ready: hold at {weight}%", status,
                                        reason=ready.message or ready.state))
    return Decision(c.st)


def _wait_applied(c: _Ctx, canary: str, applied: Applied) -> Decision:
    """The step's routing is not live yet (the git target's applier has not
    applied its commit): the step is not judged. Past the target's deadline,
    counted from the later of the step's commit and when the target began
    waiting for this routing, the rollout is held, once, with a message naming
    what it waits for; it goes on by itself when the routing is live. A
    rollback never waits for this."""
    weight = c.st.get("weight", 0)
    started = max(filter(None, (parse_time(c.st.get("stepStartedAt")), applied.since)), default=None)
    waited = (c.now - started).total_seconds() if started is not None else 0.0
    recheck = APPLIED_RECHECK if waited < 60 else APPLIED_RECHECK_LATER
    if applied.deadline is not None and waited > applied.deadline and c.st.get("heldBy") != "applier":
        message = (f"held at {weight}%: {applied.waiting or 'the routing is not live'} for more than "
                   f"{format_duration(applied.deadline)}; the rollout goes on once it is live")
        status = {**c.st, "heldBy": "applier", "message": message}
        return Decision(status, c.event("hold", f"{canary} held at {weight}%: routing not applied", status,
                                        reason=applied.waiting), next_check_in=recheck)
    return Decision(c.st, next_check_in=recheck)


def _progressing(c: _Ctx) -> Decision:
    canary = revision.display(c.st["canary"])
    ready = c.obs.readiness.get(revision.name_of(c.st["canary"])) or Readiness(canary, "missing")
    step = int(c.st.get("step", 0))
    if ready.state == "failed":
        return _rollback(c, "Failed", f"{canary} never became ready: {ready.message or 'progress deadline exceeded'}",
                         evidence=False)
    applied = c.obs.applied
    pending = applied is not None and applied.pending and c.st.get("phase") == "Progressing"
    if pending and step == 0 and applied.deadline is not None:
        # the rollout's first commit (the new version's Deployment) is not applied by the applier yet: not
        # the version's fault (the kubernetes target applies itself: readiness and progressDeadline judge)
        return _wait_applied(c, canary, applied)
    if applied is not None and applied.at is not None and c.st.get("appliedAt") is None:
        c.st["appliedAt"] = iso(applied.at + timedelta(microseconds=999_999))   # whole seconds, never early
    if not pending and c.st.pop("heldBy", None) and c.obs.analysis is None:
        status = {**c.st, "message": f"{canary} at {c.st.get('weight', 0)}% is live: the rollout goes on"}
        return Decision(status, c.event("resume", f"{canary} at {c.st.get('weight', 0)}% applied: the rollout "
                                                  "goes on", status), next_check_in=interval(c.rel, step))
    scaling = ready.state == "scaling" and step >= 1   # serves its weight; the next one's pods are starting
    if not ready.ready and not scaling:
        return _not_ready(c, canary, step, ready)
    if c.st.pop("notReadySince", None) and c.obs.analysis is None:
        # ready again: say so now; with a check due, its decision carries the news
        status = {**c.st, "message": f"{canary} ready again at {c.st.get('weight', 0)}%"}
        return Decision(status, c.event("ready", f"{canary} ready again at {c.st.get('weight', 0)}%", status))
    if not c.rel.is_mesh:
        return _promote(c)
    if step == 0:
        if c.obs.analysis is not None:
            return _judge(c, 0)   # the pre-rollout hooks answered (core.hooks): pass -> step 1, else counted
        if hooks.gates_first_step(c.rel):
            return Decision(c.st, next_check_in=NOT_READY_RECHECK)   # never past them unasked
        return _enter_stage(c, 1)
    if c.obs.guard:
        # judged before the step's own window: at the weight still live while the step's routing is not
        # applied, or since a restart (when the routing went live is unknown). A metric out of bounds
        # counts; no data does not (at the weight still live the canary may have no traffic); a pass
        # never advances
        bad = [r for r in c.obs.analysis or () if r.outcome == "failed" and not r.dry_run]
        if bad:
            words = "; ".join(f"{r.name} {r.message or r.outcome}" for r in bad)
            why = ("at the weight still live: this step's routing is not applied yet" if pending else
                   "a guard check: this step's window restarted with the controller")
            return _count_failure(c, step, f"{words} ({why})")
    if pending:
        return _wait_applied(c, canary, applied)
    if c.obs.guard:
        return Decision(c.st, next_check_in=_until_due(c, step))
    if scaling and _verdict(c.obs) != "fail":
        # pods are ready before traffic moves (sizing.py): no step, approval or promotion until the
        # new version has what the next weight needs; a failing check still counts
        return Decision(c.st, next_check_in=NOT_READY_RECHECK)
    if c.st.get("phase") == "WaitingApproval":
        waiting = c.st.get("waitingFor", "promotion")
        ok = approved(c.rel, c.st["canary"]["version"], waiting)
        verdict = _verdict(c.obs) if c.obs.analysis is not None else None
        if verdict == "fail" or (ok and verdict == "hold"):
            # fail closed: an approval never moves traffic in a pass whose check (metrics, pre-promotion
            # hooks) failed or could not be judged; it counts as any failed check (a dark launch rolls back)
            return _judge(c, step)
        if ok and verdict is None and _last_check_failed(c.st):
            # approved between checks, after one that failed: the next check decides (fail closed)
            return Decision(c.st, next_check_in=_until_due(c, step))
        if ok:
            if waiting == "promotion":
                return _promote(c, reason=f"approved: {c.rel.spec.get('approve')}")
            return _enter_stage(c, int(waiting[5:]), action="approve")
        return Decision(c.st)
    if c.obs.analysis is None:
        return Decision(c.st, next_check_in=_until_due(c, step))
    return _judge(c, step)


def _last_check_failed(st: Mapping[str, Any]) -> bool:
    """Did the last recorded check (status.lastAnalysis) fail? Dry runs never count."""
    results = (st.get("lastAnalysis") or {}).get("results") or []
    return any(isinstance(r, Mapping) and r.get("ok") is False and not r.get("dryRun") for r in results)


def _until_due(c: _Ctx, step: int) -> float:
    """Seconds until the step's next check, its routing's live time included (an
    interval after the step's commit can be a moment too early: never wait a
    whole interval more for that moment)."""
    due = analysis_at(c.rel, c.obs.applied)
    if due is None:
        return interval(c.rel, step)
    return max((due - c.now).total_seconds(), 0.05)


def _without_status(c: _Ctx) -> Decision:
    """No status (a first deploy, or a status lost to a bad merge): rebuild from what runs.

    Nothing runs: the target is deployed at once, there is nothing to protect.
    Only the target runs: adopt it as stable. Something else serves: the version
    with the most traffic other than the target is stable, and the target goes
    through the strategy from its first step, even if it already had a share.
    The target found scaled to 0 beside a serving version was rolled back: it
    stays rolled back until ``spec.retry`` changes. A lost status never promotes."""
    found = next((v for v in c.obs.running or () if v.get("adopted")), None)
    if found is not None:
        if adopt.lost_status(c.rel, c.obs.running or ()):
            return Decision(c.st)   # not a first adoption: held (rebuild_doubts says why, at file:line)
        return _adopt_workload(c, found)
    target = c.target
    seen = [v for v in c.obs.running or () if v.get("version") and not v.get("adopted")]
    serving = [v for v in seen if v.get("replicas", 1)]

    def is_target(v: Mapping[str, Any]) -> bool:
        same_name = v["version"] == target.get("revision", target["version"]) and v.get("image", "") == target["image"]
        return same_name and (not v.get("hash") or not target.get("hash") or v["hash"] == target["hash"])
    others = [_ver(v) for v in serving if not is_target(v)]
    if not serving:
        status = {"phase": "Promoted", "message": f"{target['version']} deployed", "stable": _stable_entry(c, target),
                  "weight": 100, "step": 0, "failedChecks": 0, "stepStartedAt": iso(c.now)}
        return Decision(status, c.event("deploy", f"deploy {target['version']}", status, prev=0))
    if not others:
        status = {"phase": "Promoted", "message": f"{target['version']} adopted from what runs (status was missing)",
                  "stable": _stable_entry(c, target), "weight": 100, "step": 0, "failedChecks": 0,
                  "stepStartedAt": iso(c.now)}
        return Decision(status, c.event("adopt", f"adopt {target['version']} as stable (status was missing)",
                                        status, prev=100, reason="status was missing; rebuilt from what runs"))
    current = others[0]
    if any(is_target(v) and not v.get("replicas", 1) for v in seen):
        reason = (f"status was missing; {target['version']} runs at 0 replicas beside {current['version']}: "
                  "it was rolled back (bump spec.retry to try it again)")
        status = {"phase": "RolledBack", "message": reason, "stable": current, "weight": 0, "step": 0,
                  "failedChecks": 0, "stepStartedAt": iso(c.now),
                  "rolledBack": {**_ver(target), "retry": int(c.rel.spec.get("retry", 0)), "reason": reason,
                                 "at": iso(c.now)}}
        return Decision(status, c.event("adopt", f"adopt {current['version']} as stable, {target['version']} "
                                                 "rolled back (status was missing)", status, prev=0, reason=reason))
    c.st = {"stable": current}
    if c.rel.is_mesh:
        c.st["weight"] = 0
    return _start(c, note=f"status was missing; stable {current['version']} from what runs")


def _adopt_workload(c: _Ctx, found: Mapping[str, Any]) -> Decision:
    """``spec.workloadRef`` on a first pass: the Deployment that runs becomes the stable
    revision (named by its ``version`` label) as it is, its pod template recorded in
    ``status.adopted`` as the template of new revisions. Nothing of it changes; the
    target, when it differs, rolls out from the next pass through the strategy."""
    record = adopt.status_of(found)
    stable = {"version": found["version"], "image": found["image"], "revision": found["version"],
              "hash": revision.hash_of_content(found["image"], adopt.snapshot(c.rel, record))}
    status = {"phase": "Promoted", "message": f"Deployment {found['adopted']} adopted as stable {found['version']}",
              "stable": stable, "weight": 100, "step": 0, "failedChecks": 0, "stepStartedAt": iso(c.now),
              "adopted": record}
    return Decision(status, c.event("adopt", f"adopt Deployment {found['adopted']} as stable {found['version']}",
                                    status, prev=0, reason=f"spec.workloadRef: {found['adopted']} runs "
                                                           f"{found['image']}; its pod template is the template "
                                                           "of new revisions"))


def _decide(release: Release, obs: Observations, now: datetime) -> Decision:
    """The next status of ``release`` and the event to commit, if any (before snapshots)."""
    c = _Ctx(release, obs, now)
    st, spec, target = c.st, release.spec, c.target
    stable = _ver(st.get("stable"))
    phase = st.get("phase")
    if stable is None:
        return _without_status(c)
    live = phase in LIVE and st.get("canary")
    if live:
        return _before_check(c) or _progressing(c)
    # not rolling out
    back = _rollback_to(c)
    if back is not None:
        return back
    if not revision.same(target, stable):
        down = st.get("rolledBack") or {}
        same_try = revision.same(down, target) and int(down.get("retry", 0)) == int(spec.get("retry", 0))
        if spec.get("abort") or same_try:
            return _retire(c) or Decision(st)   # (a rollback --to leaves the old stable retiring)
        return _start(c)
    if not st["stable"].get("hash"):
        return _adopt(c)
    return _retire(c) or Decision(st)


def _before_check(c: _Ctx) -> Decision | None:
    """What a live rollout does before any check is looked at: a person's rollback --to, a
    pending rollback, spec.abort, a new target, promote --full, a pause or a resume. None:
    the rollout goes on (``_progressing``), where checks count."""
    st, spec, target, now = c.st, c.rel.spec, c.target, c.now
    stable, canary, phase = _ver(st.get("stable")), _ver(st["canary"]), st.get("phase")
    back = _rollback_to(c)   # a person's rollback --to: before anything, pending or not
    if back is not None:
        return back
    pending = c.obs.rollback
    if pending and revision.name_of(pending) == revision.name_of(st["canary"]):
        return _pending_rollback(c, pending)
    if spec.get("abort"):
        return _rollback(c, "Aborted", "aborted by spec.abort", evidence=False)
    if not revision.same(canary, target):
        if revision.same(target, stable):
            return _rollback(c, "RolledBack", f"target set back to {stable['version']}", evidence=False)
        return _stable_first(c) or _start(c, "retarget", f"{revision.display(canary)} replaced by "
                                                         f"{revision.display(target)}")
    full = _full_promote(c)
    if full is not None:
        return full
    if spec.get("paused"):
        if phase == "Paused":
            return Decision(st)
        status = {**st, "phase": "Paused", "pausedPhase": phase, "message": "paused by spec.paused"}
        return Decision(status, c.event("pause", f"pause {revision.display(canary)} at {st.get('weight', 0)}%",
                                        status))
    if phase == "Paused":
        status = {**st, "phase": st.get("pausedPhase", "Progressing"), "stepStartedAt": iso(now),
                  "message": "resumed"}
        status.pop("pausedPhase", None)
        return Decision(status, c.event("resume", f"resume {revision.display(canary)} at {st.get('weight', 0)}%",
                                        status))
    return None


def check_ignored(release: Release, obs: Observations, now: datetime) -> bool:
    """Whether a check of ``release`` now would not count: decide acts before it looks at one
    (``_before_check``: spec.abort, a pause, a retarget or its wait for the stable, a rollback
    --to, a pending rollback, promote --full). The controller sends no gating hook then, so
    none is waited for in vain. ``obs`` without analysis."""
    st = release.status
    if st.get("phase") not in LIVE or not st.get("canary") or _ver(st.get("stable")) is None:
        return False
    return _before_check(_Ctx(release, obs, now)) is not None


def _retire(c: _Ctx) -> Decision | None:
    """The old revision kept after a promotion: scale it down once ``until`` has passed."""
    st, now = c.st, c.now
    retiring = st.get("retiring")
    if retiring:
        until = parse_time(retiring.get("until")) or now
        if now >= until:
            status = {k: v for k, v in st.items() if k != "retiring"}
            return Decision(status, c.event("finalize", f"scale down {revision.display(retiring)}", status, prev=100))
        return Decision(st, next_check_in=(until - now).total_seconds())
    return None


def decide(release: Release, obs: Observations, now: datetime) -> Decision:
    """The next status of ``release`` and the event to commit, if any.

    Each status it commits records in ``status.snapshots`` what its stable and
    retiring revisions run (``revision.snapshots``), so an old revision keeps
    rendering as it ran while the spec describes a new one."""
    d = _decide(release, obs, now)
    if d.event is None:
        return d
    if d.status.get("stepStartedAt") != release.status.get("stepStartedAt"):
        # a new step (or a new rollout, or a rollback): what was true of the last step's routing is not
        d = replace(d, status={k: v for k, v in d.status.items() if k not in STEP_SCOPED})
    # a person's emergency request acts once: remembered through every later transition
    for key in ("rollbackDone", "promoteDone", "adopted"):   # (adopted: what an adopted Deployment runs)
        if release.status.get(key) and key not in d.status:
            d = replace(d, status={**d.status, key: release.status[key]})
    snaps = revision.snapshots(release, d.status, revision.target(release))
    status = {k: v for k, v in d.status.items() if k != "snapshots"}
    if snaps:
        status["snapshots"] = snaps
    return replace(d, status=status)
