"""One reconcile pass: a straight pipeline wiring the adapters to the core.

    sync git -> load + validate -> observe (cluster, metrics) -> decide
      -> apply rollbacks at once -> commit + push (recomputed on conflict)
      -> apply the committed state -> report

Invariant 1: traffic is applied only after its commit landed, except a
rollback, which is applied first and committed right after. Invariant 7:
invalid releases are reported and left as they run; every other release
goes on. Invariant 4: a pass over unchanged git and cluster writes nothing.

Targets:
- ``kubernetes``: read live objects (one LIST per kind per namespace),
  server-side apply what differs, prune what git no longer has.
- ``git``: write the rendered objects to ``rendered/<ns>/<name>.yaml`` in the
  same commit as the status, for Argo CD or Flux to apply. Readiness comes
  from the cluster when one is given, else versions count as ready.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

from reconciler.adapters import notify
from reconciler.adapters.gitrepo import CommitPlan, GitRepo, Snapshot
from reconciler.adapters.prometheus import Prometheus, run_checks
from reconciler.core import analysis
from reconciler.core.decide import Decision, Observations, analysis_due, decide, iso
from reconciler.core.loader import LoadCache, load_files
from reconciler.core.messages import format_commit
from reconciler.core.model import Event, Problem, Readiness, Release, RepoLoad
from reconciler.core.render import render
from reconciler.core.serialize import dump_yaml
from reconciler.core.writeback import StatusEditError, set_status
from reconciler.adapters.trust import verify as verify_commits
from reconciler.errors import SluiceError, TrustError

log = logging.getLogger("sluice.controller")
RENDERED_DIR = "rendered/"


class Target(Protocol):
    """Where desired objects go, and where readiness comes from."""

    name: str

    def observe(self, releases: list[Release]) -> Mapping[str, Mapping[str, Readiness]]:
        """Readiness by release key, then version, for the releases' live versions."""

    def apply(self, desired: Mapping[str, list[dict]], *, keep: set[str], urgent: bool = False) -> "ApplyReport":
        """Make the cluster match ``desired`` (release key -> objects)."""


@dataclass
class ApplyReport:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    drifted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class ReleaseOutcome:
    release: str
    phase: str
    weight: int
    step: int
    event: Event | None = None
    error: str | None = None


@dataclass
class PassReport:
    tip: str = ""
    pushed: bool = False
    commits: list[str] = field(default_factory=list)
    push_retries: int = 0
    outcomes: dict[str, ReleaseOutcome] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    applied: ApplyReport | None = None
    error: str | None = None
    analysis: dict[str, tuple] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)   # monotonic marks, for benchmarks


class GitTarget:
    """Rendered manifests in git; readiness from a cluster if one is readable.

    Without a cluster every version counts as ready: the GitOps tool that
    applies ``rendered/`` owns readiness then, and analysis still guards
    each step (docs/operations.md says so).
    """

    name = "git"

    def __init__(self, readiness: Callable[[list[Release]], Mapping[str, Mapping[str, Readiness]]] | None = None):
        self._readiness = readiness

    def observe(self, releases: list[Release]) -> Mapping[str, Mapping[str, Readiness]]:
        if self._readiness is not None:
            return self._readiness(releases)
        return {rel.key: {v["version"]: Readiness(v["version"], "ready")
                          for v in (rel.status.get("canary"), rel.status.get("stable"), rel.target)
                          if v and v.get("version")} for rel in releases}

    def apply(self, desired, *, keep, urgent=False) -> ApplyReport:
        return ApplyReport()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Controller:
    """Runs passes over one config repo for one target."""

    def __init__(self, repo: GitRepo, target: Target, *, prometheus: Prometheus | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 notify: Callable[[str, Event, Mapping[str, Any]], None] | None = None,
                 can_write: Callable[[], bool] = lambda: True, trust=None):
        self.repo, self.target, self.prometheus = repo, target, prometheus
        self.clock, self.notify, self.can_write = clock, notify, can_write
        self.trust = trust            # a TrustPolicy: act only on signed commits
        self.refused: str | None = None
        self.cache = LoadCache()
        self.last: PassReport | None = None

    # --- steps -------------------------------------------------------------
    def _observe(self, rel: Release, ready: Mapping[str, Readiness], settings: Mapping[str, Any],
                 now: datetime) -> Observations:
        readiness = dict(ready.get(rel.key) or {})
        if not analysis_due(rel, now):
            return Observations(readiness)
        canary = rel.status["canary"]["version"]
        stable = (rel.status.get("stable") or {}).get("version", canary)
        try:
            checks = analysis.plan_checks(rel, settings, canary_version=canary, stable_version=stable)
        except analysis.TemplateError as exc:
            log.warning("release=%s analysis template error: %s", rel.key, exc)
            return Observations(readiness)
        results = run_checks(self._provider(settings), checks, now)
        return Observations(readiness, results, analysis.verdict(results, rel, settings))

    def _provider(self, settings: Mapping[str, Any]) -> Prometheus | None:
        if self.prometheus is not None:
            return self.prometheus
        prom = (settings.get("providers") or {}).get("prometheus")
        return Prometheus(prom["address"]) if prom else None

    def _rendered_path(self, rel_key: str) -> str:
        return f"{RENDERED_DIR}{rel_key}.yaml"

    def _plans(self, snap: Snapshot, loaded: RepoLoad, decisions: dict[str, tuple[Release, Observations, Decision]],
               now: datetime, committed: dict[str, Decision]) -> list[CommitPlan]:
        """The commits of this pass, recomputed from ``snap`` (the current remote tip)."""
        committed.clear()
        plans: list[CommitPlan] = []
        tip_files = snap.read_files()
        fresh = load_files(tip_files, cache=self.cache)
        fresh_by_key = fresh.by_key()
        rendered_now = snap.read_files((RENDERED_DIR,)) if self.target.name == "git" else {}
        render_only: dict[str, bytes | None] = {}
        for key, (rel, obs, decision) in sorted(decisions.items()):
            cur = fresh_by_key.get(key)
            if cur is None:
                continue   # removed or made invalid meanwhile: nothing to write for it
            if cur.blob != rel.blob:
                decision = decide(cur, obs, now)   # a human changed it meanwhile: decide again on theirs
            committed[key] = decision
            files: dict[str, bytes | None] = {}
            if decision.event is not None:
                try:
                    files[cur.path] = set_status(tip_files[cur.path].decode(), decision.status).encode()
                except StatusEditError as exc:
                    log.error("release=%s cannot write status: %s", key, exc)
                    continue
            if self.target.name == "git":
                out = dump_yaml(render(cur.with_status(decision.status), fresh.settings)).encode()
                path = self._rendered_path(key)
                if rendered_now.get(path) != out:
                    files[path] = out
            if not files:
                continue
            if decision.event is None:
                render_only.update(files)   # no step happened: one commit for all of them
                continue
            plans.append(CommitPlan(files, format_commit(decision.event)))
        if self.target.name == "git":
            known = {r.key for r in fresh.releases} | {p.release for p in fresh.problems if p.release}
            render_only.update({p: None for p in rendered_now if p[len(RENDERED_DIR):-5] not in known})
        if render_only:
            n = len(render_only)
            plans.append(CommitPlan(render_only, f"sluice: render manifests ({n} file{'s' * (n != 1)})\n\n"
                                                 "Sluice-Release: -\nSluice-Action: render\n"))
        return plans

    def _record_drift(self, decisions, loaded: RepoLoad, now: datetime) -> None:
        """Live objects edited behind git's back: note it in status (a commit), then repair."""
        detect = getattr(self.target, "detect_drift", None)
        if detect is None:
            return
        quiet = {k: render(rel.with_status(d.status), loaded.settings)
                 for k, (rel, _, d) in decisions.items() if d.event is None}
        for key, objects in detect(quiet).items():
            rel, obs, d = decisions[key]
            status = {**d.status, "drift": {"detectedAt": iso(now), "objects": objects}}
            log.warning("release=%s drift: %s differ from git; putting them back", key, ", ".join(objects))
            event = Event(key, "drift", f"repair drift in {', '.join(objects)}", weight=status.get("weight"),
                          phase=status.get("phase"), reason="live objects differed from git")
            decisions[key] = (rel, obs, Decision(status, event, next_check_in=d.next_check_in))

    # --- the pass ------------------------------------------------------------
    def run_pass(self) -> PassReport:
        report = PassReport()
        try:
            report.tip = self.repo.sync()
            if self.trust is not None and self.trust.enabled:
                verdict = verify_commits(self.repo.workdir, report.tip, self.trust)
                if not verdict.ok:   # apply nothing new; the cluster stays as it is
                    raise TrustError(f"refusing {report.tip[:12]}: {verdict.reason}")
            loaded = load_files(self.repo.read_files(report.tip), cache=self.cache)
        except SluiceError as exc:
            report.error = str(exc)
            self.refused = str(exc) if isinstance(exc, TrustError) else None
            log.error("sync failed: %s", exc)
            self.last = report
            return report
        report.problems = list(loaded.problems)
        for problem in loaded.problems:
            log.warning("release=%s invalid: %s", problem.release or "-", problem)
        now = self.clock()
        try:
            ready = self.target.observe(loaded.releases)
        except SluiceError as exc:   # cluster unreachable or forbidden: decide nothing blind
            report.error = str(exc)
            log.error("observe failed: %s", exc)
            self.last = report
            return report
        decisions: dict[str, tuple[Release, Observations, Decision]] = {}
        for rel in loaded.releases:
            obs = self._observe(rel, ready, loaded.settings, now)
            if obs.analysis is not None:
                report.analysis[rel.key] = obs.analysis
            decisions[rel.key] = (rel, obs, decide(rel, obs, now))
        report.timings["decided"] = time.monotonic()
        keep = {p.release for p in loaded.problems if p.release}
        self._record_drift(decisions, loaded, now)
        writer = self.can_write()
        # a rollback reaches the cluster before its commit (invariant 1's one exception)
        urgent = {k: render(rel.with_status(d.status), loaded.settings)
                  for k, (rel, _, d) in decisions.items() if d.urgent}
        if urgent and writer and self.target.name != "git":
            self.target.apply(urgent, keep=keep, urgent=True)
            report.timings["rollback_applied"] = time.monotonic()
        committed: dict[str, Decision] = {}
        if writer:
            try:
                result = self.repo.write(lambda snap: self._plans(snap, loaded, decisions, now, committed))
                report.pushed, report.commits, report.push_retries = result.pushed, result.commits, result.retries
                if result.pushed:
                    report.tip = result.tip
            except SluiceError as exc:
                report.error = str(exc)
                committed.clear()
                log.error("write-back failed: %s", exc)
        statuses = {k: (committed[k].status if k in committed else rel.status) for k, (rel, _, _) in decisions.items()}
        if writer and self.target.name != "git":
            desired = {k: render(rel.with_status(statuses[k]), loaded.settings) for k, (rel, _, _) in decisions.items()}
            desired.update({k: v for k, v in urgent.items() if k not in committed})
            report.applied = self.target.apply(desired, keep=keep)
        for key, (rel, _, decision) in decisions.items():
            d = committed.get(key)
            st = statuses[key]
            event = d.event if d else None
            report.outcomes[key] = ReleaseOutcome(key, st.get("phase", "Idle"), int(st.get("weight", 0)),
                                                  int(st.get("step", 0)), event)
            if event is not None:
                log.info("release=%s action=%s %s", key, event.action, event.summary)
                if d.notify and self.notify:
                    self.notify(d.notify, event, loaded.settings)
                elif d.notify:
                    notify.send(loaded.settings, d.notify, event, report.tip)
        self.last = report
        return report

