"""The ``git`` target: Sluice writes ``rendered/``, a GitOps applier applies it.

Two questions the controller asks of every release, answered here:

- Is each version ready? From the cluster when Sluice may read it (one LIST
  of Deployments per namespace per pass, ``version_readiness`` as with the
  kubernetes target); without cluster access every version counts as ready
  (``sluice run`` says so at start-up; docs/operations.md says what is then
  not protected).
- Is the routing of the release's status live, and since when (``applied``)?
  The commit that set it is the last commit that changed the release's
  rendered file; the applier (Argo CD or Flux, adapters/applier.py) must
  report that commit or a later one as applied and healthy. The first moment
  this process sees it so is when the step's analysis window may open; a
  restarted controller that finds it already applied starts the window then
  (later, never earlier). Without an applier the target cannot tell, and the
  window opens at the step's commit.

After each push the applier is nudged (``after_push``) so a step costs
seconds rather than the applier's poll interval. Each applier object is read
at most once per pass; nothing here writes to the cluster except the nudge's
one annotation.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import yaml

from reconciler.adapters import applier as appliers_mod
from reconciler.adapters.applier import ApplierClient, ApplierRef, Appliers, ApplierState
from reconciler.adapters.cluster import SELECTOR, version_readiness
from reconciler.core import manifests, revision
from reconciler.core.diff import ObjRef
from reconciler.core.durations import format_duration
from reconciler.core.model import Applied, Readiness, Release
from reconciler.core.serialize import canonical, dump_yaml, object_key
from reconciler.errors import ClusterForbidden

log = logging.getLogger("sluice.gittarget")
SEEN_LIMIT = 10_000   # (release, commit) pairs remembered as applied; one per release is live


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def short(sha: str | None) -> str:
    return (sha or "?")[:7]


class GitTarget:
    """Rendered manifests in git; readiness and the applier's progress from the cluster.

    ``cluster``: a :class:`~reconciler.adapters.cluster.Cluster` Sluice may read
    (get/list) and, for the nudge only, patch the applier's objects with; None
    without cluster access (readiness is then not protected). ``repo``: Sluice's clone, for the
    commits' ancestry. ``appliers``: which applier deploys each folder.
    ``clock``: the controller sets its own.
    """

    name = "git"

    def __init__(self, cluster=None, *, repo=None, appliers: Appliers | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.cluster, self.repo = cluster, repo
        self.appliers = appliers or Appliers()
        self.read_readiness = cluster is not None
        self.clock = clock
        self.client = ApplierClient(cluster) if cluster is not None else None
        self.live: dict[ObjRef, dict] = {}
        self._objects: dict[ApplierRef, tuple[dict | None, ApplierState | None, str]] = {}   # this pass
        self._tip: str | None = None
        self._rendered: tuple[str, dict[str, bytes]] | None = None   # (tip, rendered/ files at it)
        self._changed: dict[tuple[str, str], str | None] = {}        # (tip, path) -> last commit changing it
        self._ancestry: dict[tuple[str, str], bool | None] = {}      # (commit, applier revision) -> descends
        self._seen: dict[tuple[str, str], datetime] = {}             # (release, commit) -> first seen applied
        self._waiting: dict[tuple[str, str], datetime] = {}          # (release, commit) -> first seen not applied
        self._guessed: set[tuple[str, str]] = set()                   # seen applied at first look: time unknown
        self._unreadable: dict[str, Exception] = {}                  # namespace -> why its LIST failed, this pass

    @property
    def applier_deadline(self) -> float:
        """Seconds a step waits for the applier before the rollout is held."""
        return self.appliers.deadline

    def describe(self) -> str:
        """One line for start-up and status: what protects a step with this target."""
        ready = ("readiness from the cluster (Deployments)" if self.read_readiness else
                 "readiness NOT checked: no cluster access, every version counts as ready and "
                 "progressDeadline never fires (docs/operations.md)")
        if self.appliers.default is None:
            applier = "no applier: a step's analysis window opens when its commit lands"
        else:
            applier = (f"analysis waits for {self.appliers.default} (deadline "
                       f"{format_duration(self.appliers.deadline)}, nudge {'on' if self.appliers.nudge else 'off'})")
        return f"{ready}; {applier}"

    # --- observe -------------------------------------------------------------------
    def observe(self, releases: list[Release]) -> None:
        self._objects = {}
        self._tip = None
        keys = {r.key for r in releases}
        self._seen = {k: v for k, v in self._seen.items() if k[0] in keys}
        self._waiting = {k: v for k, v in self._waiting.items() if k[0] in keys}
        self._guessed = {k for k in self._guessed if k in self._seen}
        self._unreadable = {}
        if not self.read_readiness:
            self.live = {}
            return
        live: dict[ObjRef, dict] = {}
        for ns in sorted({r.namespace for r in releases}):
            path = self.cluster._path("apps", "v1", "deployments", ns)
            try:   # a namespace Sluice may not read holds its own releases, not the others
                data = self.cluster._call("list", "deployments.apps", ns, "GET", path,
                                          query=[("labelSelector", SELECTOR)])
            except ClusterForbidden:
                self._unreadable[ns] = ClusterForbidden(
                    f"forbidden: cannot list deployments.apps in namespace {ns}, which the git target reads "
                    "for readiness: bind deploy/gitops/readiness.yaml there")
                continue
            for item in (data or {}).get("items") or []:
                name = (item.get("metadata") or {}).get("name")
                if name:
                    live[ObjRef("apps/v1", "Deployment", ns, name)] = item
        self.live = live

    def readiness(self, rel: Release) -> Mapping[str, Readiness]:
        if rel.namespace in self._unreadable:
            raise self._unreadable[rel.namespace]   # that release is held, nothing decided blind
        if self.read_readiness:
            return version_readiness(rel, self.live)
        return {revision.name_of(v): Readiness(revision.name_of(v), "ready")
                for v in (rel.status.get("canary"), rel.status.get("stable"), revision.target(rel))
                if v and v.get("version")}

    def apply(self, desired, *, keep, urgent=False):
        from reconciler.controller import ApplyReport
        return ApplyReport()   # the applier applies what git holds

    def objects_of(self, release: str) -> list[dict]:
        return []

    # --- the applier ------------------------------------------------------------------
    def applied(self, rel: Release, desired: list[dict], settings: Mapping[str, Any]) -> Applied:
        ref = self.appliers.for_release(rel, settings)
        if ref is None:
            return Applied(None, known=False)   # no applier: the window opens when the step was committed
        wait = self.appliers.deadline
        if self.client is None or self.repo is None:
            return Applied(None, waiting=f"{ref}: Sluice has no cluster access to read it", deadline=wait)
        want, why = self._routing_commit(rel, desired)
        if want is None:
            return Applied(None, waiting=why, deadline=wait)
        seen = self._seen.get((rel.key, want))
        if seen is not None:
            return Applied(seen, deadline=wait, estimated=(rel.key, want) in self._guessed)
        was_waiting = (rel.key, want) in self._waiting
        for key in [k for k in self._waiting if k[0] == rel.key and k[1] != want]:
            del self._waiting[key]   # an earlier commit of this release: no longer waited for
        since = self._waiting.setdefault((rel.key, want), self.clock())   # the deadline counts from here
        _, state, why = self._read(ref)
        if state is None:
            return Applied(None, waiting=f"{ref}: {why}, waiting for {short(want)}", deadline=wait, since=since)
        reached = [r for r in state.revisions if self._descends(want, r)]
        first = int(rel.status.get("step", 0)) == 0   # the new version's Deployment: readiness judges its health
        if (state.synced if first else state.done) and reached:
            at = self.clock()
            self._remember(rel.key, want, at)
            self._waiting.pop((rel.key, want), None)
            if not was_waiting:   # already applied when first looked at (a restart): since when is unknown
                self._guessed.add((rel.key, want))
            return Applied(at, deadline=wait, estimated=not was_waiting)
        at = f"at {short(state.revision)}" if state.revision else "nothing applied yet"
        unknown = [r for r in state.revisions if self._ancestry.get((want, r)) is None]
        note = " (not fetched by Sluice yet)" if state.revisions and len(unknown) == len(state.revisions) else ""
        return Applied(None, waiting=f"{ref}: {at}{note} ({state.words}), waiting for {short(want)}",
                       deadline=wait, since=since)

    def after_push(self, commits: list[str], settings: Mapping[str, Any]) -> None:
        """Nudge each configured applier once; failures are logged, never raised."""
        self._tip = None   # the push moved the tip
        if not commits or not self.appliers.nudge or self.client is None:
            return
        now = self.clock()
        for ref in self.appliers.configured(settings):
            obj = (self._objects.get(ref) or (None,))[0]
            try:
                done = appliers_mod.nudge(self.client, ref, obj, now)
                log.info("nudged %s: %s", ref, ", ".join(done))
            except Exception as exc:   # noqa: BLE001 - a nudge only saves time: never worth a failed pass
                log.warning("cannot nudge %s (it applies on its own poll interval): %s", ref, exc)

    # --- helpers ----------------------------------------------------------------------
    def _read(self, ref: ApplierRef) -> tuple[dict | None, ApplierState | None, str]:
        if ref not in self._objects:   # at most one GET per applier object per pass
            self._objects[ref] = appliers_mod.read_state(self.client, ref)
        return self._objects[ref]

    def _tip_now(self) -> str:
        if self._tip is None:
            self._tip = self.repo.tip()
        return self._tip

    def _files(self, tip: str) -> dict[str, bytes]:
        if self._rendered is None or self._rendered[0] != tip:
            self._rendered = (tip, self.repo.read_files(tip, (manifests.ROOT,)))
        return self._rendered[1]

    def _routing_commit(self, rel: Release, desired: list[dict]) -> tuple[str | None, str]:
        """(the commit that set ``desired``'s routing, or None and why not)."""
        tip = self._tip_now()
        path = manifests.release_path(rel.key)
        data = self._files(tip).get(path)
        if data is None:
            return None, f"{path} is not in git yet"
        if desired and not _same(data, desired):
            return None, f"{path} at {short(tip)} does not carry this status's routing yet"
        key = (tip, path)
        if key not in self._changed:
            if len(self._changed) > SEEN_LIMIT:
                self._changed.clear()
            self._changed[key] = self.repo.last_change(path, tip)
        commit = self._changed[key]
        return (commit, "") if commit else (None, f"{path} has no commit")

    def _descends(self, commit: str, revision_: str) -> bool:
        key = (commit, revision_)
        if self._ancestry.get(key) is None:   # unknown (not fetched yet) is asked again next time
            if len(self._ancestry) > SEEN_LIMIT:
                self._ancestry.clear()
            full = revision_ if len(revision_) >= 40 else None
            if full is None:   # an abbreviated sha: only an exact prefix of the commit counts
                self._ancestry[key] = commit.startswith(revision_) or None
            else:
                self._ancestry[key] = self.repo.is_ancestor(commit, full)
        return bool(self._ancestry[key])

    def _remember(self, release: str, commit: str, at: datetime) -> None:
        for key in [k for k in self._seen if k[0] == release]:
            del self._seen[key]   # an older step's commit: never asked again
            self._guessed.discard(key)
        if len(self._seen) > SEEN_LIMIT:
            self._seen.clear()
            self._guessed.clear()
        self._seen[(release, commit)] = at


def _same(data: bytes, desired: list[dict]) -> bool:
    """Does the rendered file hold ``desired``? Its bytes as Sluice writes them; else
    the same objects (a file written by another Sluice version's serializer)."""
    if data == manifests.with_header(dump_yaml(desired).encode()):
        return True
    try:
        docs = [d for d in yaml.safe_load_all(data) if isinstance(d, dict)]
    except yaml.YAMLError:
        return False
    want = {object_key(o): canonical(o) for o in desired}
    have = {object_key(o): o for o in docs}
    return want == have
