"""What a change to the config repo will do: the review of a pull request.

Pure: two loaded repos (base and head) in, a Plan out. For every release the
change touches: its validation at head, what the rollout will do (strategy,
the step schedule with weights and times, expected healthy duration, time
to roll back when checks fail, gates and who must act), the diff of the
rendered objects, and the warnings a reviewer wants.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from reconciler.core import revision, routes, sizing
from reconciler.core.decide import interval, manual_promotion, max_failed, schedule, stages, step_gates
from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.loader import is_config_path, locate
from reconciler.core.model import LIVE_PHASES, Problem, Release, RepoLoad
from reconciler.core.render import render, target_container
from reconciler.core.serialize import dump_yaml

PLAN_API = "sluice.dev/plan/v1"


@dataclass
class ReleasePlan:
    release: str
    file: str
    change: str                     # added | modified | removed | invalid
    summary: str
    strategy: str | None = None
    schedule: list[dict[str, Any]] = field(default_factory=list)
    healthy_seconds: float | None = None
    rollback_seconds: float | None = None
    gates: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    diff: str = ""
    revision: str | None = None     # the new revision's name when a rollout starts
    reasons: list[str] = field(default_factory=list)   # why it starts: image, template fields, config
    emergency: list[str] = field(default_factory=list)  # promote --full / rollback requested by this change

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "file": self.file, "change": self.change, "summary": self.summary,
                "strategy": self.strategy, "schedule": self.schedule, "healthySeconds": self.healthy_seconds,
                "rollbackSeconds": self.rollback_seconds, "gates": self.gates, "warnings": self.warnings,
                "problems": [p.to_json() for p in self.problems], "diff": self.diff,
                "revision": self.revision, "reasons": self.reasons, "emergency": self.emergency}


@dataclass
class Plan:
    releases: list[ReleasePlan]

    @property
    def invalid(self) -> bool:
        return any(r.problems for r in self.releases)

    @property
    def exit_code(self) -> int:
        """0 nothing to do, 2 changes planned, 1 invalid (terraform -detailed-exitcode style)."""
        if self.invalid:
            return 1
        return 2 if self.releases else 0

    def to_json(self) -> dict[str, Any]:
        return {"apiVersion": PLAN_API, "valid": not self.invalid, "exitCode": self.exit_code,
                "releases": [r.to_json() for r in self.releases]}


def _warnings(rel: Release) -> list[str]:
    out = []
    if not rel.metrics and rel.is_mesh:
        out.append("no analysis metrics: steps advance on time alone")
    containers = rel.template.get("containers") or []   # spec.template, or an adopted Deployment's
    which = target_container(rel)
    if not any(c.get("readinessProbe") for c in containers if c["name"] == which):
        out.append(f"container {which!r} has no readinessProbe: 'ready' means only 'started'")
    if rel.is_mesh and not manual_promotion(rel):
        out.append("promotion to 100% needs no human approval (gates.promotion: manual adds one)")
    step_s = interval(rel, 1) if rel.is_mesh else None
    default_window = (rel.spec.get("analysis") or {}).get("interval")
    for metric in rel.metrics:
        window = metric.get("interval") or default_window
        if window and step_s is not None and parse_duration(window) > step_s:
            out.append(f"metric {metric['name']} looks back {window}, longer than the {format_duration(step_s)} "
                       "interval: a check can judge the previous step's traffic")
    weights = [0] + [s.weight for s in stages(rel) if s.weight]
    # blue/green, A/B and dark launches switch at once by design; judge canary weights only
    for a, b in zip(weights, weights[1:] + ([100] if len(weights) > 1 else [])):
        if b - a > 50:
            out.append(f"a jump of {b - a} points of traffic ({a}% -> {b}%) in one step")
            break
    if rel.spec.get("skipAnalysis"):
        out.append("skipAnalysis: true: every stage advances on time alone, no metric is checked "
                   "(a hotfix path: remove it once the hotfix is out)")
    image = rel.target["image"]
    tag = image.rsplit("/", 1)[-1]
    if "@" not in tag and (":" not in tag or tag.endswith(":latest")):
        out.append(f"target image {image!r} has no tag or uses 'latest': a rollback may not restore what ran")
    return out


def _what_happens(base: Release | None, head: Release) -> str:
    new = revision.target(head)
    target = revision.display(new)
    stable_entry = head.status.get("stable")
    stable = revision.display(stable_entry) if stable_entry and stable_entry.get("version") else None
    canary_entry = head.status.get("canary")
    canary = revision.display(canary_entry) if canary_entry and canary_entry.get("version") else None
    live = head.status.get("phase") in LIVE_PHASES
    if stable is None:
        return f"first deploy of {target}"
    if _requested(base, head, "rollback"):
        return f"emergency rollback to {str(head.spec['rollback']).partition('@')[0]} at once, no canary"
    if live and not revision.same(canary_entry, new):
        return f"retarget mid-rollout: {canary} goes back to 0%, {target} starts from step 1"
    if head.spec.get("abort") and not (base and base.spec.get("abort")):
        return f"abort: {canary or target} rolls back to {stable}"
    if _requested(base, head, "promote"):
        return f"emergency promote --full: {canary or target} goes to 100% now, remaining steps and analysis skipped"
    if head.spec.get("paused") and not (base and base.spec.get("paused")):
        return "pause the rollout where it is"
    if not revision.same(new, stable_entry) and not live:
        return f"start a {head.strategy_kind} rollout {stable} -> {target}"
    if base is not None and base.spec.get("strategy") != head.spec.get("strategy"):
        return "change the rollout schedule" + (" of the running rollout" if live else "")
    if base is not None and str(base.spec.get("approve")) != str(head.spec.get("approve")) and head.spec.get("approve"):
        return f"approve {head.spec['approve']}"
    return NOT_A_REVISION


# a change that starts no revision (routes, ports, trafficPolicy, sizing): applied on the next pass to every
# version at once, so no rollout schedule is printed (docs/release-spec.md "Routing changes are not revisions")
NOT_A_REVISION = "update the spec: applies at once to every version (not a revision)"


def _routing_warnings(base: Release | None, head: Release) -> list[str]:
    """Routing changes that reach 100% of traffic at once and can break it: a TLS mode, a port's protocol."""
    if base is None or not head.is_mesh:
        return []
    out = []
    tls = lambda rel: ((rel.service.get("trafficPolicy") or {}).get("tls") or {}).get("mode")
    if tls(base) != tls(head):
        out.append(f"trafficPolicy.tls.mode {tls(base) or 'unset'} -> {tls(head) or 'unset'} applies to every "
                   "version at once: do it with a new revision or in a maintenance window")
    was = {p["name"]: routes.route_kind(p) for p in base.ports}
    for port in head.ports:
        if port["name"] in was and was[port["name"]] != routes.route_kind(port):
            out.append(f"port {port['name']!r} changes protocol ({was[port['name']]} -> {routes.route_kind(port)} "
                       "routes) for every version at once: do it with a new revision or in a maintenance window")
    return out


def _requested(base: Release | None, head: Release, key: str) -> bool:
    """Does this change set ``spec.<key>`` (an emergency request) anew?"""
    return bool(head.spec.get(key)) and str(head.spec.get(key)) != str((base.spec if base else {}).get(key))


def _why(base: Release | None, head: Release) -> tuple[str | None, list[str]]:
    """The new revision's name and why it differs from what runs, when this change starts one."""
    new = revision.target(head)
    stable = head.status.get("stable")
    live = head.status.get("phase") in LIVE_PHASES
    if not stable or not stable.get("version") or revision.same(new, stable) and not live:
        return None, []
    if live and revision.same(new, head.status.get("canary")):
        return None, []
    if base is not None:
        was = {"image": base.target.get("image"), **revision.snapshot(base)}
    else:
        was = {"image": stable.get("image"), **((head.status.get("snapshots") or {}).get(revision.name_of(stable)) or {})}
    return new["revision"], revision.reasons(was, head) or ["content changed"]


def _emergency(base: Release | None, head: Release) -> list[str]:
    out = []
    if _requested(base, head, "promote"):
        out.append(f"promote --full {head.spec['promote']}: 100% now, remaining steps, gates and analysis skipped")
    if _requested(base, head, "rollback"):
        name = str(head.spec["rollback"]).partition("@")[0]
        window = [revision.name_of(p) for p in head.status.get("previous") or ()]
        out.append(f"rollback --to {name}: 100% at once, no canary, while its pods still run (scaleDownDelay); "
                   "else once they are back at full size" if name in window else
                   f"rollback --to {name}: NOT in the rollback window ({', '.join(window) or 'empty'}): ignored")
    return out


def _schedule(rel: Release, sched: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """Each stage of a healthy run with its weight, time and pods: ``pods`` has the new
    and stable version's counts (of spec.replicas, or of minReplicas under autoscaling)
    once that stage's traffic is live; ``stable`` is null once promoted (it retires)."""
    pods = sizing.at_stages(rel)
    new, stable = revision.target(rel)["version"], (rel.status.get("stable") or {}).get("version")
    return [{"step": i, "weight": w, "at": format_duration(t), "atSeconds": t,
             "pods": {"new": pods[i]["new"], "stable": pods[i]["stable"], "of": pods[i]["full"],
                      "newVersion": new, "stableVersion": stable,
                      "autoscaled": sizing.own_hpa(rel), "scaler": bool(sizing.outside_scaler(rel))}}
            for i, (w, t) in enumerate(sched, 1)]


def _pods_line(s: Mapping[str, Any]) -> str:
    """``step 2: 20% -> v2 2 pods (of 10), v1 10 pods`` (pods: what runs once the step is live)."""
    p = s["pods"]
    what = "min pods" if p["autoscaled"] else "pods"
    old = f", {p['stableVersion'] or 'stable'} {p['stable']} {what}" if p["stable"] is not None else \
        f", {p['stableVersion'] or 'stable'} retires"
    return f"step {s['step']}: {s['weight']}% -> {p['newVersion']} {p['new']} {what} (of {p['of']}){old}"


def _render_text(rel: Release | None, settings) -> list[str]:
    if rel is None:
        return []
    return dump_yaml(render(rel, settings)).splitlines(keepends=True)


def plan_release(base: Release | None, head: Release | None, base_settings, head_settings,
                 problems: list[Problem], path: str) -> ReleasePlan:
    key = (head or base).key if (head or base) else path
    if problems:
        return ReleasePlan(problems[0].release or key, path, "invalid", "invalid: nothing will change until fixed",
                           problems=problems)
    if head is None:
        return ReleasePlan(key, path, "removed", "removed: its objects will be pruned",
                           diff="".join(difflib.unified_diff(_render_text(base, base_settings), [],
                                                             f"base/{path}", f"head/{path}")))
    sched = schedule(head)
    plan = ReleasePlan(head.key, path, "added" if base is None else "modified", _what_happens(base, head),
                       strategy=head.strategy_kind)
    plan.revision, plan.reasons = _why(base, head)
    plan.emergency = _emergency(base, head)
    rolls = head.is_mesh and plan.summary != NOT_A_REVISION   # nothing rolls out: no schedule to show
    plan.schedule = _schedule(head, sched) if rolls else []
    plan.healthy_seconds = sched[-1][1] if rolls else None
    plan.rollback_seconds = max_failed(head) * interval(head, 1) if rolls else None
    name = plan.revision or revision.target(head)["revision"]
    plan.gates = [f"step {g}: an approver runs `sluice approve {head.key} --step {g}` (spec.approve: {name}@{g})"
                  for g in step_gates(head)]
    if manual_promotion(head):
        plan.gates.append(f"promotion: an approver runs `sluice approve {head.key} --promotion` "
                          f"(spec.approve: {name}@promotion)")
    plan.warnings = _warnings(head) + _routing_warnings(base, head)
    stable = head.status.get("stable") or {}
    if base is not None and stable.get("version") and not stable.get("hash") \
            and revision.content_hash(base) != revision.content_hash(head) and revision.same(revision.target(head), stable):
        plan.warnings.append("status.stable was recorded before revisions: this template/config change is adopted "
                             "in place (pods restart at once, no canary); change it in a later commit instead")
    plan.diff = "".join(difflib.unified_diff(_render_text(base, base_settings), _render_text(head, head_settings),
                                             f"base/{path}", f"head/{path}"))
    return plan


def _skip_analysis_lint(rel: Release, files: Mapping[str, bytes] | None) -> list[Problem]:
    """``skipAnalysis`` is a hotfix path: refused on a normal change (``--allow-skip-analysis`` lets a hotfix through)."""
    message = ("spec.skipAnalysis: true skips every metric check: refused on a normal change "
               "(a hotfix branch runs `sluice plan --allow-skip-analysis`)")
    return locate(rel.path, (files or {}).get(rel.path, b""), [(("spec", "skipAnalysis"), message)], rel.key)


def _release_path(path: str, paths: set[str]) -> str:
    """A changed config file ``releases/<ns>/<name>/<file>`` stands for its release's file."""
    if is_config_path(path, paths):
        stem = "/".join(path.split("/")[:3])
        return f"{stem}.yaml" if f"{stem}.yaml" in paths else f"{stem}.yml"
    return path


def build_plan(base: RepoLoad, head: RepoLoad, changed: set[str], *, allow_skip_analysis: bool = False,
               files: Mapping[str, bytes] | None = None) -> Plan:
    """Plan every release whose file is in ``changed`` (paths that differ between base and head;
    a changed config file counts for its release). ``files``: head's files, to locate lints."""
    b, h = {r.path: r for r in base.releases}, {r.path: r for r in head.releases}
    known = set(b) | set(h) | set(head.invalid) | changed
    out = []
    settings_changed = "sluice.yaml" in changed
    for path in sorted({_release_path(p, known) for p in changed if p.startswith("releases/")}):
        lints = [] if allow_skip_analysis or path not in h or not h[path].spec.get("skipAnalysis") \
            else _skip_analysis_lint(h[path], files)
        out.append(plan_release(b.get(path), h.get(path), base.settings, head.settings,
                                head.invalid.get(path, []) + lints, path))
    if settings_changed:
        bad = [p for p in head.problems if p.file == "sluice.yaml"]
        if bad:
            out.append(ReleasePlan("sluice.yaml", "sluice.yaml", "invalid", "invalid settings", problems=bad))
    return Plan(out)


_MD_ESCAPE = re.compile(r"([|])")


def markdown(plan: Plan) -> str:
    lines = ["### Sluice plan", ""]
    if not plan.releases:
        return "### Sluice plan\n\nNo release changes.\n"
    lines += ["| release | change | strategy | what happens | healthy run | rollback within | warnings |",
              "|---|---|---|---|---|---|---|"]
    for r in plan.releases:
        icon = "❌" if r.problems else ("⚠️" if r.warnings else "✅")
        summary = _MD_ESCAPE.sub(r"\\\1", r.summary)
        lines.append(f"| {icon} `{r.release}` | {r.change} | {r.strategy or '-'} | {summary} | "
                     f"{format_duration(r.healthy_seconds) if r.healthy_seconds is not None else '-'} | "
                     f"{format_duration(r.rollback_seconds) if r.rollback_seconds is not None else '-'} | "
                     f"{len(r.warnings)} |")
    for r in plan.releases:
        lines += ["", f"<details><summary><code>{r.release}</code>: {r.summary}</summary>", ""]
        for p in r.problems:
            lines.append(f"- ❌ `{p}`")
        if r.revision:
            lines.append(f"- new revision `{r.revision}`: " + "; ".join(r.reasons))
        for e in r.emergency:
            lines.append(f"- 🚨 emergency: {e}")
        if r.schedule:
            lines.append("Schedule when healthy: " + ", ".join(f"{s['weight']}% at {s['at']}" for s in r.schedule))
            lines += ["", "Pods (ready before traffic moves):", ""] + [f"- {_pods_line(s)}" for s in r.schedule] + [""]
        for g in r.gates:
            lines.append(f"- gate: {g}")
        for w in r.warnings:
            lines.append(f"- ⚠️ {w}")
        if r.diff:
            lines += ["", "```diff", r.diff.rstrip("\n"), "```"]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def text(plan: Plan) -> str:
    if not plan.releases:
        return "No release changes.\n"
    out = []
    for r in plan.releases:
        out.append(f"{r.release} ({r.change}): {r.summary}")
        for p in r.problems:
            out.append(f"  error: {p}")
        if r.revision:
            out.append(f"  new revision: {r.revision} ({'; '.join(r.reasons)})")
        for e in r.emergency:
            out.append(f"  emergency: {e}")
        if r.strategy:
            out.append(f"  strategy: {r.strategy}")
        if r.schedule:
            out.append("  schedule: " + ", ".join(f"{s['weight']}% at {s['at']}" for s in r.schedule))
            out += [f"  {_pods_line(s)}" for s in r.schedule]
        if r.healthy_seconds is not None:
            out.append(f"  healthy run: {format_duration(r.healthy_seconds)}; "
                       f"rollback within {format_duration(r.rollback_seconds)} of a failing step")
        for g in r.gates:
            out.append(f"  gate: {g}")
        for w in r.warnings:
            out.append(f"  warning: {w}")
        if r.diff:
            out.append("  rendered objects:")
            out += ["    " + line for line in r.diff.rstrip("\n").splitlines()]
        out.append("")
    return "\n".join(out)
