"""Is a version's Deployment able to take traffic? Read from its status.

Ready only when the controller has seen the latest spec (observedGeneration
>= generation) and updated = ready = available = desired replicas, and at
least one replica is wanted (a Deployment scaled to 0 serves nothing).
Desired is the larger of the Deployment's ``spec.replicas`` and ``need``,
the pods the release's status asks for (sizing.py: the next weight's), so
a Deployment not yet scaled (an applier behind, an HPA not yet at its new
minimum) is not ready. Scaling when it has at least ``serving`` pods (what
its current weight needs) but not yet all: it may keep its traffic, not get
more (decide.py). Failed
when Kubernetes says ProgressDeadlineExceeded, or when ``deadline`` seconds
passed since ``since`` without becoming ready.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from reconciler.core.model import Readiness


def deployment_readiness(version: str, dep: Mapping[str, Any] | None, *, now: datetime | None = None,
                         since: datetime | None = None, deadline_s: float | None = None,
                         need: int | None = None, serving: int = 0) -> Readiness:
    if dep is None:
        return Readiness(version, "missing", "no Deployment yet")
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    meta = dep.get("metadata") or {}
    # what the status asks for counts even before the Deployment (or its HPA) caught up
    want = max(int(spec.get("replicas", 1)), need or 0)
    if int(spec.get("replicas", 1)) == 0:   # scaled to nothing (kubectl scale, a scaler at 0): it cannot take traffic
        return Readiness(version, "progressing", "scaled to 0 replicas")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False" \
                and cond.get("reason") == "ProgressDeadlineExceeded":
            return Readiness(version, "failed", "ProgressDeadlineExceeded")
    seen = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 1))
    counts = [int(status.get(k, 0)) for k in ("updatedReplicas", "readyReplicas", "availableReplicas")]
    if seen and all(c >= want for c in counts) and int(status.get("replicas", want)) <= want:
        return Readiness(version, "ready")
    msg = f"{counts[1]}/{want} ready" + ("" if seen else ", spec not observed yet")
    if serving and all(c >= serving for c in counts):
        # it serves its current weight; the pods its next weight needs are still starting
        return Readiness(version, "scaling", f"{msg}: scaling up before traffic moves")
    if now and since and deadline_s is not None and (now - since).total_seconds() > deadline_s:
        return Readiness(version, "failed", f"not ready after {deadline_s:.0f}s: {msg}")
    return Readiness(version, "progressing", msg)
