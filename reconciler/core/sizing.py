"""How many pods each version of a release runs, step by step.

Pure. Pods are ready BEFORE traffic moves: while a rollout stands at stage N
the new version already runs what stage N+1 needs, ``ceil(full x share(N+1) /
100)`` and at least 1; at the last stage (the next move is the promotion)
it runs the full size. A stage's share is its weight (canary, the follow-on
canary of a mirror), the mirrored % (mirror stages: shadow traffic is load),
the full size (blue/green: a switch moves everything at once), or
``strategy.<kind>.replicas`` capped at full (A/B and dark launch: the share
a match catches is unknown; full when unset). A promotion that waits for a
person (dark launch, ``gates.promotion: manual``) keeps the last stage's
size until the approval (or ``spec.promote``) is in git, then runs full
size; the switch waits for those pods (decide.py holds on "scaling").

The stable version runs the full size; with ``strategy.canary.dynamicStableScale``
it shrinks one step behind the traffic, as the new version grows one step
ahead: at step N it runs ``ceil(full x (100 - w(N-1)) / 100)``, the share it
served before this step (at least 1, so a rollback has pods to go to). The
step's routing and the Deployments go out in the same pass, Deployments
first: sized this way, a VirtualService apply that fails (a webhook refusal)
still leaves stable the pods of the traffic that stays live. Rolled back or at
rest it is full again in the same apply; while a retarget waits for it
(``status.heldBy: stable``, decide.py) it is full and the old new version
keeps its weight. A retiring version keeps the count it had at promotion;
a rolled-back one runs 0. ``spec.rollback`` to a revision whose pods are gone
brings it up as the new version at full size before any traffic moves
(``status.rollbackTo``).

``full`` is ``spec.replicas``, or each bound of ``spec.autoscaling`` (one
HorizontalPodAutoscaler per version, min and max scaled alike). When an
autoscaler owns replicas (``spec.autoscaling``, or ``autoscaling.scalerRef``
naming one Sluice does not render: rolling and recreate only, whose one
Deployment it can name) the Deployment carries no ``replicas``.
docs/release-spec.md "Sizing" has the table; ``problems`` refuses what no
sizing can serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from reconciler.core import revision
from reconciler.core.decide import approved, manual_promotion, stages
from reconciler.core.model import DOWN_PHASES, LIVE_PHASES, MESH_STRATEGIES, STRATEGIES, Release

_Raw = tuple[tuple[Any, ...], str, bool]   # (path, message, points-at-key), as the loader locates them


@dataclass(frozen=True)
class Size:
    """One version's pods. ``replicas``: the Deployment's ``spec.replicas`` (None: an
    autoscaler owns it). ``hpa``: (minReplicas, maxReplicas) of the HPA Sluice renders
    for it (None: none). ``need``: pods that must be ready before the next traffic move
    (None: an outside scaler decides, unknown). ``serving``: pods its traffic needs now."""

    replicas: int | None
    hpa: tuple[int, int] | None = None
    need: int | None = None
    serving: int = 0


def pods(full: int, share: float) -> int:
    """``share`` % of ``full`` pods, rounded up, at least 1 (0 only when ``full`` is 0)."""
    if full <= 0:
        return 0
    return min(full, max(1, math.ceil(full * share / 100 - 1e-9)))


def autoscaling(rel: Release) -> Mapping[str, Any]:
    return rel.spec.get("autoscaling") or {}


def outside_scaler(rel: Release) -> bool:
    """An autoscaler Sluice does not render owns replicas (``autoscaling.scalerRef``)."""
    return bool(autoscaling(rel).get("scalerRef"))


def own_hpa(rel: Release) -> bool:
    """Sluice renders one HPA per live version (``autoscaling`` with min/max)."""
    return bool(autoscaling(rel)) and not outside_scaler(rel)


def dynamic_stable(rel: Release) -> bool:
    return rel.strategy_kind == "canary" and bool(rel.strategy.get("dynamicStableScale"))


def _share(rel: Release, full: int, stage: int) -> float:
    """% of full size the new version's traffic at ``stage`` (1-based; 0: none) needs."""
    if stage <= 0:
        return 0.0
    kind, strat = rel.strategy_kind, rel.strategy
    if kind in ("abTesting", "darkLaunch"):
        cap = strat.get("replicas")
        return 100.0 if cap is None or full <= 0 else min(100.0, 100.0 * int(cap) / full)
    if kind == "blueGreen":
        return 100.0
    if kind == "mirror" and stage <= int(strat.get("iterations", 5)):
        return float(strat.get("percentage", 100))
    return float(stages(rel)[stage - 1].weight)


def _switch_next(rel: Release, status: Mapping[str, Any], step: int) -> bool:
    """Is the next traffic move the switch to 100% (so the new version must be full)?"""
    n = len(stages(rel))
    canary = status.get("canary") or {}
    if status.get("rollbackTo"):
        return True   # spec.rollback to a revision whose pods are gone: 100% once it is full (decide.py)
    if rel.spec.get("promote") and str(rel.spec["promote"]) in revision.approval_names(canary):
        return True   # promote --full: 100% as soon as the full size is ready
    if rel.strategy_kind == "blueGreen" or step >= n:
        return not manual_promotion(rel) or approved(rel, str(canary.get("version", "")), "promotion")
    return False


def new_pods(rel: Release, full: int, step: int, *, switch: bool | None = None) -> tuple[int, int]:
    """(pods it runs, pods its current traffic needs) for the new version at ``step``;
    ``switch``: whether the next move is the switch to 100% (default: from the status)."""
    n = len(stages(rel))
    serving = pods(full, _share(rel, full, min(step, n))) if step else 0
    if _switch_next(rel, rel.status, step) if switch is None else switch:
        return full, serving
    run = pods(full, _share(rel, full, min(step + 1, n))) if n else full
    return max(run, serving), serving


def served_before(rel: Release, step: int) -> int:
    """The new version's weight at the step before ``step`` (0 before step 2): what stays
    live if the routing of ``step`` is never applied."""
    all_stages = stages(rel)
    return all_stages[min(step, len(all_stages) + 1) - 2].weight if step >= 2 and all_stages else 0


def stable_pods(rel: Release, full: int, step: int, live: bool = True) -> int:
    """Pods of the stable version at status ``step`` of a live rollout (``len(stages) + 1``:
    promoted): full, unless dynamicStableScale: then the share it served before this step,
    so it shrinks one step behind the traffic."""
    if not live or not dynamic_stable(rel) or rel.status.get("heldBy") == "stable":
        return full
    return pods(full, 100 - served_before(rel, step))


def _bounds(rel: Release) -> list[int]:
    """The full size: [replicas], or [minReplicas, maxReplicas] of spec.autoscaling."""
    auto = autoscaling(rel)
    if own_hpa(rel):
        low = int(auto.get("minReplicas", 1))
        return [low, max(low, int(auto["maxReplicas"]))]
    return [rel.replicas]


def full_size(rel: Release) -> Size:
    """The full size of one version (rolling and recreate run one Deployment at it)."""
    counts = _bounds(rel)
    return _size(rel, counts, counts[0])


def _size(rel: Release, counts: list[int], serving: int) -> Size:
    if own_hpa(rel):
        low, high = counts
        return Size(None, (low, max(low, high)), need=low, serving=min(serving, low))
    if outside_scaler(rel):
        return Size(None, None, None, 0)
    return Size(counts[0], None, need=counts[0], serving=serving)


def sizes(rel: Release) -> dict[str, Size]:
    """The Size of each revision ``rel``'s status keeps running, by revision name
    (render.py names its Deployment and HPA after it)."""
    st = rel.status
    phase = st.get("phase")
    live = phase in LIVE_PHASES and bool((st.get("canary") or {}).get("version"))
    step = int(st.get("step", 0))
    out: dict[str, Size] = {}
    stable = st.get("stable") if (st.get("stable") or {}).get("version") else revision.target(rel)
    full = [stable_pods(rel, f, step, live) for f in _bounds(rel)]
    out[revision.name_of(stable)] = _size(rel, full, full[0])
    retiring = st.get("retiring")
    if retiring and retiring.get("version"):
        kept = [stable_pods(rel, f, len(stages(rel)) + 1) for f in _bounds(rel)]   # its count at promotion
        out.setdefault(revision.name_of(retiring), _size(rel, kept, 0))
    down = st.get("rolledBack")
    if down and down.get("version") and phase in DOWN_PHASES:
        out.setdefault(revision.name_of(down), Size(0, None, None, 0))
    if live and revision.name_of(st["canary"]) != revision.name_of(stable):
        counts = [new_pods(rel, f, step) for f in _bounds(rel)]
        out[revision.name_of(st["canary"])] = _size(rel, [c[0] for c in counts], counts[0][1])
    return out


def at_stages(rel: Release) -> list[dict[str, Any]]:
    """A healthy run's pods per stage (0 = the new version starting, then each stage,
    then promoted): ``{step, weight, new, stable, full}``, counts of ``spec.replicas``
    (of ``minReplicas`` under spec.autoscaling). For ``sluice plan``."""
    full = _bounds(rel)[0]
    all_stages = stages(rel)
    n = len(all_stages)
    out = []
    for step in range(n + 1):
        weight = all_stages[step - 1].weight if step else 0
        # a manual promotion is shown approved: the pods that must be up before the switch
        new, _ = new_pods(rel, full, step, switch=rel.strategy_kind == "blueGreen" or step >= n)
        out.append({"step": step, "weight": weight, "new": new, "stable": stable_pods(rel, full, step),
                    "full": full})
    # promoted: the old version keeps its last count until scaleDownDelay, then retires
    out.append({"step": n + 1, "weight": 100, "new": full, "stable": None, "full": full})
    return out


def problems(doc: Mapping[str, Any]) -> list[_Raw]:
    """What no sizing can serve, in a schema-valid release (the loader locates each)."""
    spec = doc.get("spec") or {}
    kind = next((k for k in spec.get("strategy") or {} if k in STRATEGIES), "")
    out: list[_Raw] = []
    if (spec.get("autoscaling") or {}).get("scalerRef") and kind in MESH_STRATEGIES:
        # a scaler names one Deployment; a mesh strategy runs one per version (<name>-<revision>), the new
        # one created by each rollout: the outside scaler would never size it, nor follow it at promotion
        out.append((("spec", "autoscaling", "scalerRef"), f"autoscaling.scalerRef names one Deployment, but {kind} "
                    "runs one Deployment per version (<name>-<revision>): an outside scaler would leave the new "
                    "version at 1 pod. Use spec.autoscaling with minReplicas/maxReplicas (Sluice renders an HPA "
                    "per version) or a rolling/recreate strategy (one Deployment <name>)", True))
    if spec.get("replicas") == 0 and "autoscaling" not in spec:
        why = ("a version with 0 pods cannot take traffic" if kind in MESH_STRATEGIES else
               "a release at 0 pods never becomes ready, so every rollout would end Failed")
        out.append((("spec", "replicas"), f"spec.replicas is 0: {why} (set at least 1; delete the release file to remove "
                    "it from the cluster)", False))
    return out
