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
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Protocol

import yaml

from reconciler.adapters.commitstatus import find_trigger
from reconciler.adapters.hooks import Gate, Sender
from reconciler.adapters.notify import Notifications
from reconciler.adapters.gitrepo import CommitPlan, GitRepo, Snapshot
from reconciler.adapters import metrics
from reconciler.adapters.metrics.prometheus import Prometheus
from reconciler.core import analysis, hooks
from reconciler.core import manifests, observed
from reconciler.core import revision
from reconciler.core.decide import (
    CHECKED, Decision, Observations, analysis_due, check_ignored, decide, interval, iso, overdue_at, rebuild_doubts,
    rollback_doubts, stages, status_doubts, wake_in, window_start,
)
from reconciler.core.bulk import collector_paused
from reconciler.core.loader import RELEASES_DIR, SETTINGS_FILE, LoadCache, load_files, locate
from reconciler.core.messages import format_commit, replica_trailer
from reconciler.core.shards import REPO_WIDE
from reconciler.core import notifications
from reconciler.core.model import LIVE_PHASES, Applied, Event, Problem, Readiness, Release, RepoLoad
from reconciler.core.policy import providers as configured_providers
from reconciler.core.render import render
from reconciler.core.serialize import dump_yaml
from reconciler.core.trusted import parse_time
from reconciler.core.writeback import StatusEditError, set_status
from reconciler.adapters.trust import verify as verify_commits
from reconciler.errors import SluiceError, TrustError

log = logging.getLogger("sluice.controller")


class Target(Protocol):
    """Where desired objects go, and where readiness comes from."""

    name: str
    clock: Callable[[], datetime]   # set by the controller: times a target records are on its clock
    # optional: ``owns`` (set by the controller under --shards: a release key -> this replica's?),
    # ``settles`` (apply takes ``settled=``) and ``partial`` (observe takes ``namespaces=``, apply ``scope=``)

    def observe(self, releases: list[Release]) -> None:
        """Read what is live for ``releases`` (one LIST per kind per namespace); a ``partial``
        target also takes ``namespaces=``: list only those, keep the rest as last observed."""

    def readiness(self, rel: Release) -> Mapping[str, Readiness]:
        """Readiness of ``rel``'s revisions (by revision name), from the last observation."""

    def apply(self, desired: Mapping[str, list[dict]], *, keep: set[str], urgent: bool = False) -> "ApplyReport":
        """Make the cluster match ``desired`` (release key -> objects). A ``settles`` target also
        takes ``settled=`` (releases not compared again) and a ``partial`` one ``scope=`` (prune
        only those releases' objects)."""

    def objects_of(self, release: str) -> list[dict]:
        """The live objects of ``release`` (``ns/name``) as last observed; empty when unknown."""

    def applied(self, rel: Release, desired: list[dict], settings: Mapping[str, Any]) -> Applied:
        """Whether the routing ``desired`` (rendered from ``rel``'s status) is live, and since when."""

    def after_push(self, commits: list[str], settings: Mapping[str, Any]) -> None:
        """Called after Sluice pushed ``commits``: the git target nudges its applier."""


@dataclass
class ApplyReport:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    drifted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)   # releases with something to do or that failed to compare


@dataclass
class ReleaseOutcome:
    release: str
    phase: str
    weight: int
    step: int
    event: Event | None = None
    error: str | None = None
    overdue_at: datetime | None = None   # the step should have moved on by itself by then (decide.overdue_at)
    failed_checks: int = 0


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
    release_errors: dict[str, str] = field(default_factory=dict)   # release -> what failed, this pass
    next_pass_in: float | None = None   # seconds until the earliest release wants another look
    settled: int = 0   # releases found at rest with nothing they depend on changed: not looked at again
    focused: int | None = None   # a pass that looked only at the releases changed or due (how many)
    carried: set[str] = field(default_factory=set)   # release errors of releases not looked at: the last pass's


@dataclass(frozen=True)
class Settled:
    """A release a full pass found at rest (no event, nothing to apply, no drift, no check,
    nothing scheduled: decide.wake_in is None), with the inputs that pass saw: its blob, the
    repo's other files, and its live objects' resourceVersions. While the inputs are the same,
    nothing can move it (time cannot: nothing is scheduled), so a pass reuses what was found
    instead of deciding, rendering and diffing it again: a no-op pass costs the LISTs."""
    inputs: tuple
    obs: Observations
    decision: Decision
    objects: tuple   # what identifies its objects (apiVersion, kind, namespace, name): kept, never pruned


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What names an object (a settled release's objects are not compared, only kept):
    a fraction of the object's memory at 10,000 releases."""
    meta = obj.get("metadata") or {}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")}}


def _whole(value: Any) -> int:
    """A count from a status field for metrics; 0 when a hand edit left something else there."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Controller:
    """Runs passes over one config repo for one target."""

    policy = None                 # the controller's policy (--policy-file): tenancy, trust, pod security
    # a pass on a new commit looks only at the releases the commit changed while the last full pass is this
    # recent and no other release is due (sluice run: its poll interval); every other pass looks at all
    full_every: float = 60.0
    _verified: str | None = None  # the tip verified last, not verified again within a push retry

    def __init__(self, repo: GitRepo, target: Target, *, prometheus: Prometheus | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 notify: Notifications | None = None,
                 can_write: Callable[[], bool] = lambda: True, trust=None,
                 owns: Callable[[str], bool] | None = None, replica: str | None = None):
        self.repo, self.target, self.prometheus = repo, target, prometheus
        target.clock = clock   # a target keeps the times it observes by the controller's clock
        self.clock, self.can_write = clock, can_write
        # --shards: this replica handles only the releases whose shard it holds (asked again before each
        # write), and prunes only theirs; ``replica`` names it in its commits (Sluice-Replica)
        self.owns, self.replica = owns or (lambda key: True), replica
        target.owns = owns   # None: every release is this replica's (the target then checks nothing)
        self.notify = notify          # notifications and commit statuses; built when sluice.yaml asks for one
        if notify is not None:
            notify.can_write = can_write   # a replica that lost its lease delivers nothing it queued
        self.trust = trust            # a TrustPolicy: act only on signed commits
        self.refused: str | None = None
        self.cache = LoadCache()
        self.last: PassReport | None = None
        self._checked: dict[str, datetime] = {}   # last check of a release waiting for approval (a throttle only)
        self._tip: str | None = None   # the commit this pass read: gating hooks name it
        # fire-and-record hook answers not yet in git (release -> answers), filled by the hook threads
        self._answers: dict[str, list[hooks.Answer]] = {}
        self._answers_lock = threading.Lock()
        self.hook_sender: Sender | None = None   # built when a committed event first fires a hook
        # releases at rest, by key: what their last full look saw (inputs) and found (nothing to do)
        self._settled: dict[str, Settled] = {}
        # what the last pass saw, for a focused pass: release -> blob (or its problems), the tip, the
        # repo's other files, when the last full pass ended well, and when each release wants a look
        self._seen: dict[str, str] | None = None
        self._seen_tip: str | None = None
        self._seen_config: int | None = None
        self._full_at: datetime | None = None
        self._due: dict[str, datetime] = {}
        self._held: dict[str, list[Problem]] = {}   # release -> why the last look held it (while deciding)

    # --- hooks (docs/hooks.md) ---------------------------------------------------
    def _gate(self, rel: Release, found: list[Mapping[str, Any]]) -> Gate | None:
        """Start ``rel``'s gating hooks ``found`` (in their own threads); None when there are none."""
        if not found:
            return None
        steps = len(stages(rel))
        return Gate([hooks.call(rel, h, steps=steps, commit=self._tip) for h in found])

    def _hook_answered(self, release: str, answer: hooks.Answer) -> None:
        """A fire-and-record hook's answer (on a hook thread): kept until a commit records it."""
        with self._answers_lock:
            kept = self._answers.setdefault(release, [])
            kept.append(answer)
            del kept[:-hooks.KEEP_RECORDED * 5]   # bounded, should a release stay held for long

    def _record_hooks(self, decisions: dict[str, tuple[Release, Observations, Decision]]) -> dict[str, list]:
        """Put the fire-and-record answers in hand into their releases' next commit (a commit of
        their own when nothing else happens): ``status.lastHooks`` and the commit's evidence.
        Returns what went in, dropped from memory only once its commit landed."""
        with self._answers_lock:
            waiting = {k: list(v) for k, v in self._answers.items() if v and k in decisions}
        for key, answers in waiting.items():
            rel, obs, d = decisions[key]
            if d.urgent:
                waiting[key] = []   # a rollback's commit carries nothing else; the next one does
                continue
            status = hooks.record(d.status, answers)
            event = (hooks.record_event(rel, status, answers) if d.event is None else
                     replace(d.event, evidence=tuple(d.event.evidence) + tuple(hooks.recorded(a) for a in answers)))
            decisions[key] = (rel, obs, replace(d, status=status, event=event))
        return waiting

    def _recorded(self, waiting: dict[str, list], committed: Mapping[str, Decision]) -> None:
        """Forget the answers whose commit landed: each is identified by its whole recorded entry
        (hook, type, time sent, attempts, status, took, answer) among the results the landed commit
        carries, all of them (never by what fits in ``status.lastHooks``: results arriving together
        may be more than it keeps). A commit decided again on a person's edit carries none."""
        with self._answers_lock:
            for key, answers in waiting.items():
                event = committed[key].event if key in committed else None
                carried = list(event.evidence) if event is not None else []
                done = [a for a in answers if hooks.recorded(a) in carried]
                self._answers[key] = [a for a in self._answers.get(key, []) if a not in done]

    def _fire(self, decisions, committed: Mapping[str, Decision], tip: str, report: PassReport) -> None:
        """Queue the fire-and-record hooks of the events just committed (never sent on this thread)."""
        for key, d in committed.items():
            if d.event is not None:
                self._isolated(report, key, "hooks", lambda key=key, d=d: self._fire_one(decisions[key][0], d, tip))

    def _fire_one(self, rel: Release, d: Decision, tip: str) -> None:
        found = hooks.fired(rel, d.event)
        if found and self.hook_sender is None:
            self.hook_sender = Sender(self._hook_answered, can_write=self.can_write)
        for hook in found:
            call = hooks.call(rel, hook, steps=len(stages(rel)), commit=tip, event=d.event, status=d.status)
            if not self.hook_sender.fire(rel.key, call):
                log.warning("release=%s hook=%s not sent: the hook sender is closed", rel.key, call.name)

    # --- steps -------------------------------------------------------------
    def _observe(self, rel: Release, settings: Mapping[str, Any], now: datetime,
                 rollback: Mapping[str, Any] | None = None) -> Observations:
        readiness = dict(self.target.readiness(rel))
        applied = self._applied(rel, settings)
        st, step = rel.status, int(rel.status.get("step", 0))
        if check_ignored(rel, Observations(readiness, applied=applied, rollback=rollback), now):
            # aborted, paused, retargeted, rolled back: decide acts before any check, so no gating
            # hook is sent (nor waited for) and no metric asked (docs/hooks.md)
            return Observations(readiness, applied=applied)
        ready = st.get("canary") and readiness.get(revision.name_of(st["canary"]))
        if (not (applied is not None and applied.pending)
                and hooks.pre_rollout_due(rel, bool(ready and ready.ready), now, interval(rel, 0))):
            # before step 1: the pre-rollout hooks are the check (decide: pass -> step 1)
            results = tuple(hooks.result(a) for a in self._gate(rel, hooks.of(rel, "pre-rollout")).answers())
            return Observations(readiness, results, analysis.verdict(results, rel, settings), applied=applied)
        # while a step's routing is not live, the canary is still judged at the weight that is, at that
        # weight's cadence (a guard: only a metric out of bounds counts), so a rollback never waits for an
        # applier; not at step 1 (the weight still live is 0%) nor for a hotfix (skipAnalysis)
        # The same after a restart, while the step's window restarts (when its routing went live is unknown)
        judged = st.get("phase") == "Progressing" and not rel.spec.get("skipAnalysis") and applied is not None
        waiting_for_applier = judged and applied.pending and step >= 2
        restarted = judged and applied.estimated and not analysis_due(rel, now, applied) and analysis_due(rel, now)
        guard = waiting_for_applier or restarted
        if guard:
            marks = (self._checked.get(rel.key), parse_time(st.get("stepStartedAt")),
                     parse_time((st.get("lastAnalysis") or {}).get("at")))
            every = interval(rel, step - 1 if waiting_for_applier else step)
            if now < max(filter(None, marks), default=now) + timedelta(seconds=every):
                return Observations(readiness, applied=applied)
            self._checked[rel.key] = now
        elif not analysis_due(rel, now, applied):
            return Observations(readiness, applied=applied)
        elif st.get("phase") == "WaitingApproval":   # checked once per interval while it waits; a pass commits nothing
            last = self._checked.get(rel.key)
            if last is not None and now < last + timedelta(seconds=interval(rel, step)):
                return Observations(readiness, applied=applied)
            self._checked[rel.key] = now
        # revision names: the pods' `version` label and the Deployment <name>-<revision>
        canary = revision.name_of(rel.status["canary"])
        stable = revision.name_of(rel.status.get("stable")) or canary
        try:   # an unknown variable errs its metric only (plan_checks); this is the net under that
            checks = analysis.plan_checks(rel, settings, canary_version=canary, stable_version=stable,
                                          now=now, applied_at=window_start(rel, None if guard else applied))
        except analysis.TemplateError as exc:
            # never "not checked": every metric is an error result, judged by onProviderError
            log.warning("release=%s analysis template error: %s", rel.key, exc)
            results = analysis.unplanned(rel, str(exc))
            return Observations(readiness, results, analysis.verdict(results, rel, settings), applied=applied,
                                guard=guard)
        gate = None if guard else self._gate(rel, hooks.gating(rel, step, len(stages(rel))))
        results = metrics.run_checks(self._provider(settings), checks, now)   # while the hooks are out
        if gate is not None:
            results += tuple(hooks.result(a) for a in gate.answers())
        return Observations(readiness, results, analysis.verdict(results, rel, settings), applied=applied,
                            guard=guard)

    def _applied(self, rel: Release, settings: Mapping[str, Any]) -> Applied | None:
        """Is the routing of ``rel``'s current step live (None: nothing is judged now, so nobody asks)?"""
        st = rel.status
        if st.get("phase") not in CHECKED or not st.get("canary") or not rel.is_mesh:
            return None
        return self.target.applied(rel, render(rel, settings), settings)

    def _provider(self, settings: Mapping[str, Any]) -> dict[str, metrics.Provider]:
        """The metrics providers by name: the policy file's when it defines any, else
        sluice.yaml's (tokenFile, basicAuth, headers, caFile, timeout); ``--prometheus``
        replaces the one named prometheus, the default of a metric that names none."""
        return metrics.build(configured_providers(settings, self.policy), override=self.prometheus)

    def _rendered_path(self, rel_key: str) -> str:
        return manifests.release_path(rel_key)

    def _plan_one(self, key: str, rel: Release, obs: Observations, decision: Decision, cur: Release,
                  tip_files: Mapping[str, bytes], settings, rendered_now: Mapping[str, bytes], now: datetime,
                  report: PassReport) -> tuple[Decision, dict[str, bytes | None]] | None:
        """One release's files for this commit round; None to write nothing for it."""
        if cur.blob != rel.blob:
            # a person changed it meanwhile: decide again on theirs, trusting it no more than the first
            doubts = self._doubts(cur, tip_files, now, self._running(cur))
            if doubts:
                self._hold(report, cur, doubts)
                return None
            decision = decide(cur, obs, now)
        files: dict[str, bytes | None] = {}
        if decision.event is not None:
            try:
                files[cur.path] = set_status(tip_files[cur.path].decode(), decision.status).encode()
            except StatusEditError as exc:
                log.error("release=%s cannot write status: %s", key, exc)
                return None
        if self.target.name == "git":
            body = dump_yaml(render(cur.with_status(decision.status), settings)).encode()
            path, data = manifests.release_path(key), manifests.with_header(body)
            if rendered_now.get(path) != data:
                files[path] = data
            self._bodies[key] = body
        return decision, files

    def _plans(self, snap: Snapshot, loaded: RepoLoad, decisions: dict[str, tuple[Release, Observations, Decision]],
               now: datetime, committed: dict[str, Decision], report: PassReport) -> list[CommitPlan]:
        """The commits of this pass, recomputed from ``snap`` (the current remote tip)."""
        committed.clear()
        plans: list[CommitPlan] = []
        tip_files = snap.read_files()
        fresh = load_files(tip_files, cache=self.cache, policy=self.policy)
        if any(p.file == SETTINGS_FILE for p in fresh.problems):
            return []   # invalid settings hold everything: not even a prune is committed (invariant 9)
        fresh_by_key = fresh.by_key()
        rendered_now = snap.read_files((manifests.ROOT,)) if self.target.name == "git" else {}
        render_only: dict[str, bytes | None] = {}
        self._bodies: dict[str, bytes] = {}
        for key, (rel, obs, decision) in sorted(decisions.items()):
            cur = fresh_by_key.get(key)
            if cur is None or not self.owns(key):
                continue   # removed or made invalid meanwhile, or its shard lost: nothing to write for it
            got = self._isolated(report, key, "commit", lambda: self._plan_one(
                key, rel, obs, decision, cur, tip_files, fresh.settings, rendered_now, now, report))
            if got is None:
                continue
            decision, files = got
            if decision.event is not None and decision.event.action in notifications.START_ACTIONS:
                # the person's commit that asked for this rollout, recorded now: commit statuses go there
                decision = replace(decision, event=replace(decision.event,
                                                           trigger=find_trigger(self.repo, snap.tip, cur.path)))
            committed[key] = decision
            if not files:
                continue
            if decision.event is None:
                render_only.update(files)   # no step happened: one commit for all of them
                continue
            plans.append(CommitPlan(files, format_commit(decision.event, replica=self.replica)))
        if self.target.name == "git":
            # kustomizations, and Sluice's own files of releases that left git; held ones stay
            held = ({r.key for r in fresh.releases} - set(self._bodies)) | {p.release for p in fresh.problems if p.release}
            held |= {k for k in map(manifests.key_of, rendered_now) if k and not self.owns(k)}   # other shards'
            in_commits = {path for plan in plans for path in plan.files}
            tree = {p: d for p, d in manifests.changes(self._bodies, rendered_now, held).items()
                    if p not in in_commits and p not in render_only}
            if plans and tree:   # ride along with the last step's commit: one commit fewer
                plans[-1] = CommitPlan({**plans[-1].files, **tree}, plans[-1].message)
            else:
                render_only.update(tree)
        if render_only:
            n = len(render_only)
            plans.append(CommitPlan(render_only, f"sluice: render manifests ({n} file{'s' * (n != 1)})\n\n"
                                                 "Sluice-Release: -\nSluice-Action: render\n"
                                                 + replica_trailer(self.replica)))
        return plans

    def _record_drift(self, decisions, loaded: RepoLoad, now: datetime, report: PassReport,
                      settled: set[str] = frozenset()) -> None:
        """Live objects changed behind git's back: note it in status (a commit), then repair.
        The same drift again (a repair the cluster keeps refusing, a person who keeps
        editing) is repaired each pass but committed once."""
        detect = getattr(self.target, "detect_drift", None)
        if detect is None:
            return
        for key, (rel, obs, d) in list(decisions.items()):
            if d.event is not None or d.urgent or key in settled:   # settled: its live objects did not change
                continue
            found = self._isolated(report, key, "drift", lambda rel=rel, d=d, key=key: detect(
                key, render(rel.with_status(d.status), loaded.settings)))
            if not found:
                continue
            objects = [name for name, _ in found]
            by = sorted({who for _, who in found})
            log.warning("release=%s drift: %s changed by %s, not git; putting them back", key, ", ".join(objects),
                        ", ".join(by))
            last = d.status.get("drift") or {}
            if last.get("objects") == objects and last.get("by") == by:
                continue   # recorded already
            status = {**d.status, "drift": {"detectedAt": iso(now), "objects": objects, "by": by}}
            event = Event(key, "drift", f"repair drift in {', '.join(objects)} (changed by {', '.join(by)})",
                          weight=status.get("weight"), phase=status.get("phase"),
                          reason=f"live objects changed by {', '.join(by)}, not by git")
            decisions[key] = (rel, obs, Decision(status, event, next_check_in=d.next_check_in))

    def _verify_tip(self, tip: str, *, again: bool = True) -> None:
        """Raise TrustError unless ``tip`` (and what it adds) is signed by a trusted key.
        Runs on the synced tip of every pass (``again``: today's keys, even for a tip
        seen before) and on every tip a push retry would build upon."""
        if self.trust is None or not self.trust.enabled or (not again and tip == self._verified):
            return
        self._verified = None
        verdict = verify_commits(self.repo.workdir, tip, self.trust)
        if not verdict.ok:   # apply nothing new; the cluster stays as it is
            self.refused = f"refusing {tip[:12]}: {verdict.reason}"
            raise TrustError(self.refused)
        self._verified = tip

    # --- the pass ------------------------------------------------------------
    def _isolated(self, report: PassReport, key: str, phase: str, fn: Callable[[], Any]) -> Any:
        """Run one release's step of the pass; whatever it raises becomes that
        release's error (log line, report, metric) and the other releases go on
        (invariant 7). The one place the pass catches everything."""
        try:
            return fn()
        except Exception as exc:   # noqa: BLE001 - a bug in one release must not stop the rest
            message = f"{phase} failed: {type(exc).__name__}: {exc}"
            log.error("release=%s phase=%s %s", key, phase, message, exc_info=not isinstance(exc, SluiceError))
            report.release_errors[key] = message
            return None

    def _running(self, rel: Release) -> tuple[dict, ...] | None:
        """What runs of ``rel``: its live objects; with the git target its rendered
        manifests, read only when the status is missing (None: not looked at)."""
        if self.target.name != "git":
            return tuple(observed.running(rel, self.target.objects_of(rel.key)))
        if rel.status.get("stable"):
            return None
        data = self.repo.read_file(self.repo.tip(), self._rendered_path(rel.key))
        objects = [o for o in yaml.safe_load_all(data) if isinstance(o, dict)] if data else []
        return tuple(observed.running(rel, objects))

    def _unsupported(self, rel: Release) -> list[tuple[tuple[Any, ...], str]]:
        """What this target cannot do for ``rel``: the git target writes manifests for an
        applier, and adopting a live object means reading and patching it (fail closed: held,
        never rolled out with weights that would never reach the adopted VirtualService).
        The kubernetes target: an object the release would create exists and is someone
        else's (KubernetesTarget.foreign_problems): held until it is removed or renamed."""
        if self.target.name != "git":
            return list(getattr(self.target, "foreign_problems", lambda _rel: [])(rel))
        out = []
        if rel.spec.get("workloadRef"):
            out.append((("spec", "workloadRef"), "workloadRef: adopting a Deployment needs --target kubernetes "
                        "(the git target cannot read it or scale it); give the release a template instead"))
        if (rel.spec.get("service") or {}).get("virtualServiceRef"):
            out.append((("spec", "service", "virtualServiceRef"), "virtualServiceRef: adopting a VirtualService "
                        "needs --target kubernetes (an applier would never patch one route of it); let Sluice "
                        "render its own"))
        return out

    def _doubts(self, rel: Release, files: Mapping[str, bytes], now: datetime,
                running: tuple[dict, ...] | None = None) -> list[Problem]:
        """Why ``rel``'s status cannot be trusted to move traffic, or be rebuilt from what
        runs when it is missing, at file:line (invariant 9)."""
        serving = [v["version"] for v in running if v["replicas"]] if running is not None else None
        doubts = (status_doubts(rel, now, serving) + rebuild_doubts(rel, running) + rollback_doubts(rel)
                  + self._unsupported(rel))
        return locate(rel.path, files.get(rel.path, b""), doubts, rel.key) if doubts else []

    @staticmethod
    def _hold(report: PassReport, rel: Release, problems: list[Problem]) -> None:
        """Hold ``rel`` this pass: reported with where and why; the caller decides nothing for it."""
        report.problems.extend(problems)
        for problem in problems:
            log.error("release=%s held: %s", rel.key, problem)

    def _focus(self, tip: str, config: int, seen: Mapping[str, str], now: datetime) -> set[str] | None:
        """The releases this pass needs to look at: those whose file (or validity, or shard)
        changed, were added or removed since the last pass, and those due (a step, a check, a
        readiness recheck: decide.wake_in). None for a full pass: nothing changed or is due (a
        poll: the pass that finds drift anywhere), the repo's other files changed, the last pass
        failed, the last full pass is older than ``full_every``, or the change is large."""
        if (not getattr(self.target, "partial", False) or self._seen is None or self._full_at is None
                or self.last is None or self.last.error or config != self._seen_config
                or not self._full_at <= now < self._full_at + timedelta(seconds=self.full_every)):   # or a step back
            return None
        focus = {k for k in seen.keys() | self._seen.keys() if seen.get(k) != self._seen.get(k)}
        focus |= {k for k, at in self._due.items() if at <= now}
        if not focus and tip == self._seen_tip:
            return None
        return focus if len(focus) <= max(10, len(seen) // 10) else None

    def _inputs(self, rel: Release, config: int) -> tuple | None:
        """What a settled ``rel`` depends on (see Settled); None when its target cannot tell."""
        if not getattr(self.target, "settles", False):
            return None
        # resourceVersions name object versions (the API server never gives two the same one)
        live = tuple(sorted((o.get("metadata") or {}).get("resourceVersion") or "" for o in self.target.objects_of(rel.key)))
        return (rel.blob, config, tuple(sorted(rel.files.items())), live)

    def _settle(self, decisions, inputs: Mapping[str, tuple | None], settled: set[str], committed, desired,
                report: PassReport, wake: Mapping[str, float | None], focus: set[str] | None = None) -> None:
        """Remember the releases this pass found at rest, forget every other one."""
        touched = report.applied.touched if report.applied is not None else set(decisions)
        with self._answers_lock:
            answering = {k for k, v in self._answers.items() if v}
        for key, (rel, obs, d) in decisions.items():
            if key in settled:
                continue
            c = committed.get(key)
            if (inputs.get(key) is None or d.event is not None or d.urgent or (c is not None and c.event is not None)
                    or obs.analysis is not None or obs.rollback is not None or key in report.release_errors or key in touched
                    or key not in desired or wake.get(key) is not None or key in answering or not self.owns(key)):
                self._settled.pop(key, None)
                continue
            self._settled[key] = Settled(inputs[key], obs, d, tuple(_identity(o) for o in desired[key]))
        for key in set(self._settled) - set(decisions):
            if focus is None or key in focus:
                del self._settled[key]

    def _decide_one(self, rel: Release, settings, files, now: datetime, report: PassReport):
        running = self._running(rel)
        doubts = self._doubts(rel, files, now, running)
        live = self.target.objects_of(rel.key) if self.target.name != "git" else ()
        pending = observed.pending_rollback(rel, live)
        if pending.hold:
            doubts.append(Problem(rel.path, pending.note or "", release=rel.key))
        if doubts:
            self._hold(report, rel, doubts)
            return None
        if pending.note:
            log.warning("release=%s %s", rel.key, pending.note)
        obs = self._observe(rel, settings, now, pending.mark)
        obs = replace(obs, running=running if not rel.status.get("stable") else None, rollback=pending.mark)
        if obs.analysis is not None:
            report.analysis[rel.key] = obs.analysis
        return rel, obs, self._note_unchecked(decide(rel, obs, now))

    def _note_unchecked(self, decision: Decision) -> Decision:
        """A rollout's commits say when nothing checked its readiness (the git target
        without cluster access), so ``sluice status`` can say so too."""
        if decision.event is None:
            return decision
        status = {k: v for k, v in decision.status.items() if k != "readinessChecked"}
        if getattr(self.target, "read_readiness", True) is False and status.get("phase") in LIVE_PHASES:
            status["readinessChecked"] = False
        return replace(decision, status=status)

    def _urgent_objects(self, rel: Release, decision: Decision, settings) -> list[dict]:
        """A rollback's objects, marked on the VirtualService so that the next pass
        (any replica, after a crash) honours it until its commit lands."""
        objs = render(rel.with_status(decision.status), settings)
        mark = observed.rollback_annotation(decision.status)
        for obj in objs:
            if obj.get("kind") == "VirtualService":
                obj["metadata"].setdefault("annotations", {})[observed.ROLLBACK_ANNOTATION] = mark
        return objs

    def run_pass(self) -> PassReport:
        """sync -> verify -> load -> observe -> decide -> urgent rollbacks -> commit -> apply -> report.
        The cyclic collector waits for the pass to end (core/bulk.py): at 10,000 releases it spent
        more time rescanning what the pass keeps than the pass spent working."""
        with collector_paused():
            return self._run_pass()

    def _run_pass(self) -> PassReport:
        report = PassReport()
        try:
            report.tip = self.repo.sync()
            self._verify_tip(report.tip)
            files = self.repo.read_files(report.tip)
            loaded = load_files(files, cache=self.cache, policy=self.policy)
        except SluiceError as exc:
            report.error = str(exc)
            self.refused = str(exc) if isinstance(exc, TrustError) else None
            log.error("sync failed: %s", exc)
            self.last = report
            return report
        self.refused = None
        self._tip = report.tip
        report.problems = list(loaded.problems)
        for problem in loaded.problems:
            log.warning("release=%s invalid: %s", problem.release or "-", problem)
        if any(p.file == SETTINGS_FILE for p in loaded.problems):
            # invalid settings hold every release: nothing observed, applied, pruned or committed (invariant 9)
            log.error("holding every release: %s is invalid", SETTINGS_FILE)
            self._seen = None   # what was seen before no longer says what is live: the next pass is a full one
            if self.notify is not None and self.can_write() and self.owns(REPO_WIDE):   # told once, by one replica
                self.notify.held([p for p in loaded.problems if p.file == SETTINGS_FILE])
            self.last = report
            return report
        now = self.clock()
        # the repo's files outside releases/ (sluice.yaml); a release's config files are its own input (rel.files)
        config = hash(tuple(sorted((p, d) for p, d in files.items() if not p.startswith(RELEASES_DIR))))
        seen = {rel.key: f"{rel.blob}:{hash(tuple(sorted(rel.files.items())))}" for rel in loaded.releases}
        for problem in loaded.problems:
            if problem.release:
                seen[problem.release] = seen.get(problem.release, "") + f"\0{problem}"
        seen = {k: v + ("" if self.owns(k) else "\0theirs") for k, v in seen.items()}   # a shard taken or lost
        focus = self._focus(report.tip, config, seen, now)
        try:
            if focus is None:
                self.target.observe(loaded.releases)
            else:   # only the namespaces of what changed are listed again
                self.target.observe([r for r in loaded.releases if r.key in focus],
                                    namespaces={k.partition("/")[0] for k in focus})
        except SluiceError as exc:   # cluster unreachable or forbidden: decide nothing blind
            report.error = str(exc)
            log.error("observe failed: %s", exc)
            self.last = report
            return report
        # held: invalid in git, untrusted status, or a failure of its own; left as it runs
        keep = {p.release for p in loaded.problems if p.release}
        if focus is not None:
            keep |= set(seen) - focus   # a focused pass leaves every other release as it is
            report.focused = len(focus)
        decisions: dict[str, tuple[Release, Observations, Decision]] = {}
        inputs: dict[str, tuple | None] = {}
        settled: set[str] = set()
        # another replica's shard: not looked at; nor, in a focused pass, what the commit did not change
        for rel in [r for r in loaded.releases if self.owns(r.key) and (focus is None or r.key in focus)]:
            inputs[rel.key] = self._inputs(rel, config)
            was = self._settled.get(rel.key)
            if was is not None and inputs[rel.key] == was.inputs:
                decisions[rel.key] = (rel, was.obs, was.decision)   # at rest, and nothing it depends on changed
                settled.add(rel.key)
                continue
            got = self._isolated(report, rel.key, "decide",
                                 lambda rel=rel: self._decide_one(rel, loaded.settings, files, now, report))
            if got is None:
                keep.add(rel.key)
            else:
                decisions[rel.key] = got
        report.timings["decided"] = time.monotonic()
        report.settled = len(settled)
        self._record_drift(decisions, loaded, now, report, settled)
        recording = self._record_hooks(decisions)
        writer = self.can_write()
        # a rollback reaches the cluster before its commit (invariant 1's one exception)
        urgent: dict[str, list[dict]] = {}
        for k, (rel, _, d) in decisions.items():
            if d.urgent:
                objs = self._isolated(report, k, "render", lambda rel=rel, d=d: self._urgent_objects(rel, d, loaded.settings))
                if objs is not None:
                    urgent[k] = objs
        urgent = {k: objs for k, objs in urgent.items() if self.owns(k)}   # its shard still ours, right before
        if urgent and writer and self.target.name != "git":
            self.target.apply(urgent, keep=keep, urgent=True)
            report.timings["rollback_applied"] = time.monotonic()
        committed: dict[str, Decision] = {}
        # nothing to commit: no event, no hook answer to record, no manifests (the git target): no write
        if writer and (self.target.name == "git" or any(d.event is not None or d.urgent for _, _, d in decisions.values())
                       or any(recording.values())):
            try:
                result = self.repo.write(lambda snap: self._plans(snap, loaded, decisions, now, committed, report),
                                         verify=lambda tip: self._verify_tip(tip, again=False))   # each retry's tip too
                report.pushed, report.commits, report.push_retries = result.pushed, result.commits, result.retries
                if result.pushed:
                    report.tip = result.tip
                    self.target.after_push(result.commits, loaded.settings)   # the git target nudges its applier
                self._recorded(recording, committed)
                self._fire(decisions, committed, report.tip, report)   # queued only: a dead hook never slows a pass
            except SluiceError as exc:
                report.error = str(exc)
                committed.clear()
                log.error("write-back failed: %s", exc)
        statuses = {k: (committed[k].status if k in committed else rel.status) for k, (rel, _, _) in decisions.items()}
        desired: dict[str, list[dict]] = {}
        if writer and self.target.name != "git":
            for k, (rel, _, _) in decisions.items():
                if k in settled:
                    desired[k] = list(self._settled[k].objects)
                    continue
                if k in urgent and k not in committed:
                    desired[k] = urgent[k]   # its commit did not land: the mark stays until it does
                    continue
                objs = self._isolated(report, k, "render", lambda rel=rel, k=k: render(rel.with_status(statuses[k]),
                                                                                          loaded.settings))
                if objs is None:
                    keep.add(k)
                else:
                    desired[k] = objs
            lost = {k for k in desired if not self.owns(k)}   # a shard lost mid-pass: nothing of it written or pruned
            mine = {k: o for k, o in desired.items() if k not in lost}
            if getattr(self.target, "settles", False):   # settled: their objects are not compared again
                report.applied = self.target.apply(mine, keep=keep | lost, settled=settled - lost, scope=focus)
            else:
                report.applied = self.target.apply(mine, keep=keep | lost)
        wakes: dict[str, float | None] = {}
        for key, (rel, _, decision) in decisions.items():
            d = committed.get(key)
            st = statuses[key]
            event = d.event if d else None
            prev = self.last.outcomes.get(key) if key in settled and self.last is not None else None
            if prev is not None and prev.event is None and prev.error is None:
                report.outcomes[key] = prev   # settled: as the last pass found it
            else:
                report.outcomes[key] = ReleaseOutcome(key, st.get("phase", "Idle"), int(st.get("weight", 0)),
                                                      int(st.get("step", 0)), event, report.release_errors.get(key),
                                                      self._isolated(report, key, "schedule", lambda rel=rel, st=st:
                                                                     overdue_at(rel.with_status(st))),
                                                      _whole(st.get("failedChecks")))
            # a decision that committed nothing still says when to look again (pods coming up, a recheck)
            hint = None if key in settled else self._isolated(report, key, "schedule", lambda rel=rel, d=d, dec=decision: wake_in(
                rel, d or Decision(dict(rel.status), next_check_in=dec.next_check_in), now))
            wakes[key] = hint
            if event is not None:
                log.info("release=%s action=%s %s", key, event.action, event.summary)
        try:
            self._settle(decisions, inputs, settled, committed, desired, report, wakes, focus)
        except Exception:   # noqa: BLE001 - a shortcut only: without it every release is looked at in full
            log.exception("cannot remember the releases at rest; the next pass looks at every one")
            self._settled.clear()
        self._carry(report, loaded, seen, focus)
        for key, message in report.release_errors.items():
            if key not in report.outcomes:
                report.outcomes[key] = ReleaseOutcome(key, "Error", 0, 0, None, message)
        # notify: queued only; the notifier's threads deliver, so a dead receiver never slows a pass
        if self.notify is None and notifications.configured(loaded.settings, self.policy):
            self.notify = Notifications(can_write=self.can_write)
        if self.notify is not None and writer:   # one replica speaks: a follower's errors are the leader's too
            try:
                self.notify.publish(report, loaded, self.policy)
            except Exception:   # noqa: BLE001 - telling people must never fail the pass that did the work
                log.exception("notifications of this pass could not be queued")
        report.next_pass_in = self._schedule(report, seen, config, focus, wakes, now)
        self.last = report
        return report

    def _carry(self, report: PassReport, loaded: RepoLoad, seen: Mapping[str, str], focus: set[str] | None) -> None:
        """A focused pass reports the releases it did not look at as the last pass left them:
        outcome (no event), release error (``carried``: not counted again) and any hold found
        while deciding (untrusted status, a foreign object), which is also kept for the next."""
        from_git = {id(p) for p in loaded.problems}
        held: dict[str, list[Problem]] = {}
        for problem in report.problems:
            if problem.release and id(problem) not in from_git:
                held.setdefault(problem.release, []).append(problem)
        if focus is not None and self.last is not None:
            for key, out in self.last.outcomes.items():
                if key in seen and key not in focus and key not in report.outcomes:
                    report.outcomes[key] = out if out.event is None else replace(out, event=None)
            for key, message in self.last.release_errors.items():
                if key in seen and key not in focus and key not in report.release_errors:
                    report.release_errors[key] = message
                    report.carried.add(key)
            for key, problems in self._held.items():
                if key in seen and key not in focus:
                    report.problems.extend(problems)
                    held[key] = problems
        self._held = held

    def _schedule(self, report: PassReport, seen: dict[str, str], config: int, focus: set[str] | None,
                  wakes: Mapping[str, float | None], now: datetime) -> float | None:
        """Remember what this pass saw and when each release wants a look (decide.wake_in);
        seconds until the earliest of those or the next full pass (drift within full_every)."""
        for key in (set(self._due) | set(wakes)) if focus is None else focus:
            self._due.pop(key, None)
        self._due.update({k: now + timedelta(seconds=h) for k, h in wakes.items() if h is not None})
        self._seen, self._seen_tip, self._seen_config = seen, report.tip, config
        if focus is None and report.error is None:
            self._full_at = now
        due = list(self._due.values())
        full_at = self._full_at + timedelta(seconds=self.full_every) if self._full_at is not None else None
        if getattr(self.target, "partial", False) and full_at is not None and full_at > now:
            due.append(full_at)
        return max(0.0, min((at - now).total_seconds() for at in due)) if due else None
