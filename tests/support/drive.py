"""Drive the pure decision function through a rollout with a simulated clock,
as the controller would: observe, decide, keep the status, repeat."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from reconciler.core import analysis as analysis_mod
from reconciler.core import revision
from reconciler.core.decide import Observations, analysis_due, decide
from reconciler.core.model import MetricResult, Readiness, Release

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)


def ok(name="request-success-rate", value=99.9):
    return MetricResult(name, "ok", value, min=99)


def bad(name="request-success-rate", value=91.0):
    return MetricResult(name, "failed", value, min=99, message=f"{value} < min 99")


class Driver:
    """Holds a release and a clock; ``tick`` runs one controller pass."""

    def __init__(self, rel: Release, now: datetime = T0, settings=None):
        self.rel, self.now, self.settings = rel, now, settings or {}
        self.events = []
        self.decisions = []

    def tick(self, *, seconds: float = 0, ready: bool | str = True, results=None, verdict=None, **spec):
        self.now += timedelta(seconds=seconds)
        if spec:
            doc = dict(self.rel.doc)
            doc["spec"] = {**doc["spec"], **spec}
            self.rel = Release(self.rel.path, doc, files=self.rel.files)
        # readiness is keyed by revision name (the Deployment <name>-<revision>)
        versions = {revision.name_of(v) for v in (self.rel.status.get("canary"), self.rel.status.get("stable"),
                                                   revision.target(self.rel)) if v}
        state = ready if isinstance(ready, str) else ("ready" if ready else "progressing")
        readiness = {v: Readiness(v, state) for v in versions}
        analysis = None
        if analysis_due(self.rel, self.now):
            analysis = tuple(results) if results is not None else (ok(),)
        if analysis is not None and verdict is None:   # the production path: onNoData / onProviderError
            verdict = analysis_mod.verdict(analysis, self.rel, self.settings)
        d = decide(self.rel, Observations(readiness, analysis, verdict if analysis is not None else None), self.now)
        self.decisions.append(d)
        if d.event:
            self.events.append(d.event)
        self.rel = self.rel.with_status(d.status)
        return d

    @property
    def status(self):
        return self.rel.status


def walk(providers, rel: Release, settings=None, *, start: datetime, passes: int = 30, every: float = 60,
         stable: str = "v1"):
    """Run ``rel``'s rollout on simulated time against real metrics ``providers``
    (name -> provider), one pass every ``every`` seconds from ``start``, each
    check asked as the controller asks it (windows cut at the step's start).
    Returns the last release and [(seconds since start, event)]."""
    from reconciler.adapters.metrics import run_checks   # adapters: only the drivers of real stores need them

    settings = settings or {}
    events = []
    now = start
    for _ in range(passes):
        canary = (rel.status.get("canary") or {}).get("version", "v2")
        results = verdict = None
        if analysis_due(rel, now):
            checks = analysis_mod.plan_checks(rel, settings, canary_version=canary, stable_version=stable, now=now)
            results = run_checks(providers, checks, now)
            verdict = analysis_mod.verdict(results, rel, settings)
        d = decide(rel, Observations({canary: Readiness(canary, "ready")}, results, verdict), now)
        if d.event:
            events.append((int((now - start).total_seconds()), d.event))
        rel = rel.with_status(d.status)
        if rel.status["phase"] in ("Promoted", "RolledBack") and events:
            break
        now += timedelta(seconds=every)
    return rel, events
