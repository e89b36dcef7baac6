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

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.model import (
    DEFAULT_INTERVAL, DEFAULT_MAX_FAILED_CHECKS, DEFAULT_PROGRESS_DEADLINE, DEFAULT_SCALE_DOWN_DELAY,
    Event, MetricResult, Readiness, Release, canary_steps,
)

LIVE = ("Progressing", "Paused", "WaitingApproval")
NOT_READY_RECHECK = 5.0   # seconds between readiness looks while a version starts


@dataclass(frozen=True)
class Observations:
    readiness: Mapping[str, Readiness]          # version -> readiness of its Deployment
    analysis: tuple[MetricResult, ...] | None = None   # a check run this pass
    verdict: str | None = None                  # pass | fail | hold for that check


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    event: Event | None = None
    urgent: bool = False           # rollback: apply traffic before pushing (invariant 1)
    notify: str | None = None      # started | promoted | rolledBack | waitingApproval
    next_check_in: float | None = None


@dataclass(frozen=True)
class Stage:
    weight: int
    label: str                     # how the stage reads in a commit subject


# --- time --------------------------------------------------------------------
def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


# --- the shape of a rollout --------------------------------------------------
def _strategy_setting(rel: Release, key: str, default: Any) -> Any:
    return rel.strategy.get(key, default)


def interval(rel: Release, step: int | None = None) -> float:
    """Seconds a stage lasts before it is judged."""
    strat = rel.strategy
    if rel.strategy_kind == "mirror" and step is not None and step > int(strat.get("iterations", 5)):
        strat = strat.get("canary") or strat
    return parse_duration(strat.get("interval", DEFAULT_INTERVAL))


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
    if ver != version:
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
    return {"version": d["version"], "image": d.get("image", "")} if d and d.get("version") else None


def _evidence(obs: Observations) -> tuple[dict[str, Any], ...]:
    return tuple(r.to_status() for r in obs.analysis or ())


def _verdict(obs: Observations) -> str | None:
    if obs.verdict:
        return obs.verdict
    if obs.analysis is None:
        return None
    if all(r.ok for r in obs.analysis):
        return "pass"
    return "hold" if any(r.outcome == "error" for r in obs.analysis) and \
        not any(r.outcome in ("failed", "nodata") for r in obs.analysis) else "fail"


def _failure_words(obs: Observations) -> str:
    bad = [r for r in obs.analysis or () if not r.ok]
    return "; ".join(f"{r.name} {r.message or r.outcome}" for r in bad)


class _Ctx:
    """One decision's inputs and the event builder."""

    def __init__(self, rel: Release, obs: Observations, now: datetime):
        self.rel, self.obs, self.now = rel, obs, now
        self.st: dict[str, Any] = dict(rel.status)
        self.target = {"version": rel.target["version"], "image": rel.target["image"]}

    def event(self, action: str, summary: str, status: Mapping[str, Any], *, reason: str = "",
              evidence: bool = False, prev: int | None = None) -> Event:
        canary = _ver(status.get("canary")) or _ver(self.st.get("canary")) or self.target
        n = len(stages(self.rel))
        return Event(
            release=self.rel.key, action=action, summary=summary, weight=status.get("weight"),
            previous_weight=prev if prev is not None else self.st.get("weight"),
            step=status.get("step") if n else None, steps=n or None, version=canary["version"],
            stable=(_ver(status.get("stable")) or {}).get("version"), phase=status.get("phase"),
            reason=reason, evidence=_evidence(self.obs) if evidence else ())


def _start(c: _Ctx, action: str = "start", note: str = "") -> Decision:
    stable = _ver(c.st.get("stable"))
    status = {"phase": "Progressing", "message": f"starting {c.target['version']}",
              "stable": stable, "canary": dict(c.target), "weight": 0, "step": 0, "failedChecks": 0,
              "startedAt": iso(c.now), "stepStartedAt": iso(c.now)}
    if c.st.get("rolledBack"):
        status["rolledBack"] = c.st["rolledBack"]
    if c.st.get("retiring"):
        status["retiring"] = c.st["retiring"]
    n = len(stages(c.rel))
    kind = c.rel.strategy_kind
    what = f"{kind} {stable['version']} -> {c.target['version']}" + (f" ({n} steps)" if n else "")
    summary = f"{action} {what}" + (f": {note}" if note else "")
    return Decision(status, c.event(action, summary, status, reason=note, prev=0), notify="started",
                    next_check_in=NOT_READY_RECHECK)


def _promote(c: _Ctx, reason: str = "") -> Decision:
    canary = _ver(c.st["canary"])
    old = _ver(c.st.get("stable"))
    status = {"phase": "Promoted", "message": f"{canary['version']} promoted",
              "stable": canary, "weight": 100, "step": 0, "failedChecks": c.st.get("failedChecks", 0),
              "startedAt": c.st.get("startedAt"), "stepStartedAt": iso(c.now)}
    if c.st.get("lastAnalysis"):
        status["lastAnalysis"] = c.st["lastAnalysis"]
    if c.obs.analysis is not None:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    delay = parse_duration(c.rel.spec.get("scaleDownDelay", DEFAULT_SCALE_DOWN_DELAY))
    if old and old["version"] != canary["version"] and c.rel.is_mesh:
        status["retiring"] = {**old, "until": iso(c.now + timedelta(seconds=delay))}
    status = {k: v for k, v in status.items() if v is not None}
    prev = c.st.get("weight", 0)
    summary = f"promote {canary['version']} {prev}% -> 100%"
    return Decision(status, c.event("promote", summary, status, reason=reason, evidence=c.obs.analysis is not None,
                                    prev=prev), notify="promoted", next_check_in=delay if "retiring" in status else None)


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
    status = {k: v for k, v in status.items() if v is not None}
    action = {"Aborted": "abort", "Failed": "rollback"}.get(phase, "rollback")
    summary = f"{action} {canary['version']} {prev}% -> 0%: {reason}"
    return Decision(status, c.event(action, summary, status, reason=reason,
                                    evidence=evidence and c.obs.analysis is not None, prev=prev),
                    urgent=True, notify="rolledBack")


def _wait_approval(c: _Ctx, gate: str) -> Decision:
    status = {**c.st, "phase": "WaitingApproval", "waitingFor": gate,
              "message": f"waiting for approval of {gate}: sluice approve {c.rel.key}"}
    if c.obs.analysis is not None:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    canary = c.st["canary"]["version"]
    return Decision(status, c.event("wait-approval", f"{canary} waits for approval of {gate}", status,
                                    evidence=c.obs.analysis is not None), notify="waitingApproval")


def _enter_stage(c: _Ctx, step: int, *, action: str = "advance") -> Decision:
    """Move to ``step`` (1-based), honouring a step gate first."""
    all_stages = stages(c.rel)
    gates = (c.rel.spec.get("gates") or {}).get("steps") or []
    canary = c.st["canary"]["version"]
    if step in gates and not approved(c.rel, canary, f"step-{step}") and c.st.get("phase") != "WaitingApproval":
        return _wait_approval(c, f"step-{step}")
    if step in gates and not approved(c.rel, canary, f"step-{step}"):
        return Decision(c.st)
    stage = all_stages[step - 1]
    prev = c.st.get("weight", 0)
    status = {**c.st, "phase": "Progressing", "weight": stage.weight, "step": step,
              "stepStartedAt": iso(c.now), "message": f"step {step}/{len(all_stages)}: {stage.label}"}
    status.pop("waitingFor", None)
    if c.obs.analysis is not None:
        status["lastAnalysis"] = {"at": iso(c.now), "results": list(_evidence(c.obs))}
    kind = c.rel.strategy_kind
    if stage.weight or kind == "canary":
        summary = f"{kind} {canary} {prev}% -> {stage.weight}% (step {step}/{len(all_stages)})"
    else:
        summary = f"{kind} {canary} {stage.label}"
    return Decision(status, c.event(action, summary, status, evidence=c.obs.analysis is not None, prev=prev),
                    next_check_in=interval(c.rel, step))


def _after_last_stage(c: _Ctx) -> Decision:
    canary = c.st["canary"]["version"]
    if manual_promotion(c.rel) and not approved(c.rel, canary, "promotion"):
        if c.st.get("phase") == "WaitingApproval" and c.st.get("waitingFor") == "promotion":
            return Decision(c.st)
        return _wait_approval(c, "promotion")
    return _promote(c, reason="approved" if manual_promotion(c.rel) else "")


def _judge(c: _Ctx, step: int) -> Decision:
    """A check at ``step`` came in: advance, count a failure, roll back, or hold."""
    verdict = _verdict(c.obs)
    if verdict == "pass":
        if step < len(stages(c.rel)):
            return _enter_stage(c, step + 1)
        return _after_last_stage(c)
    if verdict == "fail":
        failed = int(c.st.get("failedChecks", 0)) + 1
        limit = max_failed(c.rel)
        c.st["failedChecks"] = failed
        words = _failure_words(c.obs) or "check failed"
        if failed >= limit:
            return _rollback(c, "RolledBack", f"{failed}/{limit} failed checks: {words}")
        status = {**c.st, "lastAnalysis": {"at": iso(c.now), "results": list(_evidence(c.obs))},
                  "message": f"check failed {failed}/{limit}: {words}"}
        canary = c.st["canary"]["version"]
        summary = f"{c.rel.strategy_kind} {canary} check failed {failed}/{limit} at {c.st.get('weight', 0)}%" + \
            (f" (step {step}/{len(stages(c.rel))})" if stages(c.rel) else "")
        return Decision(status, c.event("check-failed", summary, status, reason=words, evidence=True),
                        next_check_in=interval(c.rel, step))
    if verdict == "hold":
        message = "analysis held: metrics provider unavailable, nothing advances"
        if c.st.get("message") == message:
            return Decision(c.st, next_check_in=interval(c.rel, step))
        status = {**c.st, "message": message}
        canary = c.st["canary"]["version"]
        return Decision(status, c.event("hold", f"{c.rel.strategy_kind} {canary} held: metrics provider unavailable",
                                        status, reason=_failure_words(c.obs), evidence=True),
                        next_check_in=interval(c.rel, step))
    return Decision(c.st)


def analysis_due(rel: Release, now: datetime) -> bool:
    """Should the controller run a check for ``rel`` this pass?"""
    st = rel.status
    phase, step = st.get("phase"), int(st.get("step", 0))
    if phase not in ("Progressing", "WaitingApproval") or step < 1 or not st.get("canary"):
        return False
    if phase == "WaitingApproval" and not rel.metrics:
        return False
    since = [t for t in (parse_time(st.get("stepStartedAt")), parse_time((st.get("lastAnalysis") or {}).get("at"))) if t]
    if not since:
        return True
    return now >= max(since) + timedelta(seconds=interval(rel, step))


def _progressing(c: _Ctx) -> Decision:
    canary = c.st["canary"]["version"]
    ready = c.obs.readiness.get(canary) or Readiness(canary, "missing")
    step = int(c.st.get("step", 0))
    if ready.state == "failed":
        return _rollback(c, "Failed", f"{canary} never became ready: {ready.message or 'progress deadline exceeded'}",
                         evidence=False)
    if not ready.ready:
        started = parse_time(c.st.get("stepStartedAt")) or c.now
        deadline = parse_duration(c.rel.spec.get("progressDeadline", DEFAULT_PROGRESS_DEADLINE))
        if step == 0 and c.now - started > timedelta(seconds=deadline):
            return _rollback(c, "Failed", f"{canary} not ready after {format_duration(deadline)} (progressDeadline)",
                             evidence=False)
        return Decision(c.st, next_check_in=NOT_READY_RECHECK)
    if not c.rel.is_mesh:
        return _promote(c)
    if step == 0:
        return _enter_stage(c, 1)
    if c.st.get("phase") == "WaitingApproval":
        waiting = c.st.get("waitingFor", "promotion")
        if approved(c.rel, canary, waiting):
            if waiting == "promotion":
                return _promote(c, reason=f"approved: {c.rel.spec.get('approve')}")
            return _enter_stage(c, int(waiting[5:]), action="approve")
        if c.obs.analysis is not None and _verdict(c.obs) == "fail":
            return _judge(c, step)   # a dark launch still rolls back on failing checks
        return Decision(c.st)
    if c.obs.analysis is None:
        return Decision(c.st, next_check_in=interval(c.rel, step))
    return _judge(c, step)


def decide(release: Release, obs: Observations, now: datetime) -> Decision:
    """The next status of ``release`` and the event to commit, if any."""
    c = _Ctx(release, obs, now)
    st, spec, target = c.st, release.spec, c.target
    stable = _ver(st.get("stable"))
    phase = st.get("phase")
    if stable is None:   # first deploy: nothing to compare against, the target is stable at once
        status = {"phase": "Promoted", "message": f"{target['version']} deployed", "stable": dict(target),
                  "weight": 100, "step": 0, "failedChecks": 0, "stepStartedAt": iso(now)}
        return Decision(status, c.event("deploy", f"deploy {target['version']}", status, prev=0))
    live = phase in LIVE and st.get("canary")
    if live:
        canary = _ver(st["canary"])
        if spec.get("abort"):
            return _rollback(c, "Aborted", "aborted by spec.abort", evidence=False)
        if canary != target:
            if target == stable:
                return _rollback(c, "RolledBack", f"target set back to {stable['version']}", evidence=False)
            return _start(c, "retarget", f"{canary['version']} replaced by {target['version']}")
        if spec.get("paused"):
            if phase == "Paused":
                return Decision(st)
            status = {**st, "phase": "Paused", "pausedPhase": phase, "message": "paused by spec.paused"}
            return Decision(status, c.event("pause", f"pause {canary['version']} at {st.get('weight', 0)}%", status))
        if phase == "Paused":
            status = {**st, "phase": st.get("pausedPhase", "Progressing"), "stepStartedAt": iso(now),
                      "message": "resumed"}
            status.pop("pausedPhase", None)
            return Decision(status, c.event("resume", f"resume {canary['version']} at {st.get('weight', 0)}%", status))
        return _progressing(c)
    # not rolling out
    if target != stable:
        down = st.get("rolledBack") or {}
        same_try = _ver(down) == target and int(down.get("retry", 0)) == int(spec.get("retry", 0))
        if spec.get("abort") or same_try:
            return Decision(st)
        return _start(c)
    retiring = st.get("retiring")
    if retiring:
        until = parse_time(retiring.get("until")) or now
        if now >= until:
            status = {k: v for k, v in st.items() if k != "retiring"}
            return Decision(status, c.event("finalize", f"scale down {retiring.get('version')}", status, prev=100))
        return Decision(st, next_check_in=(until - now).total_seconds())
    return Decision(st)
