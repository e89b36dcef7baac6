"""What the read-only views show: one row per release (``sluice status``, the
dashboard) and the files they are built from.

A row comes from the committed spec and its ``status:`` block, plus the last
author to touch the file. Where the files come from depends on the source:

- a local checkout: its work tree, read in place (``Source.path``);
- a URL: Sluice's cache clone at its fetched tip (the caller decides when to
  fetch: ``sluice status`` on every read, the dashboard every ``--every``);
- the controller's own clone (``sluice run``): a second, read-only handle on
  it (``clone_reader``) at the tip its last pass fetched; it never fetches,
  never takes a lock and never shares a cache with the controller.

Nothing here writes anywhere.
"""

from __future__ import annotations

import os
from datetime import datetime

from reconciler.adapters.files import read_tree
from reconciler.adapters.gitrepo import GitRepo
from reconciler.cli.source import Source
from reconciler.core import revision
from reconciler.core.decide import stages
from reconciler.core.bulk import collector_paused
from reconciler.core.loader import LoadCache, key_from_path, load_files
from reconciler.core.model import RepoLoad
from reconciler.core.trusted import parse_time
from reconciler.errors import SluiceError


def age(at: str | None, now: datetime) -> str:
    """``3d``, ``5h``, ``12m``, ``40s`` since the time ``at``; ``-`` when unknown: missing,
    not a time, or a time without a UTC offset (the doubt the controller holds a release
    on, core/trusted.py: a naive time is ambiguous by hours)."""
    t = parse_time(at)
    if t is None:
        return "-"
    secs = max(0, int((now - t).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def release_rows(loaded: RepoLoad, changes: dict[str, tuple[str, str]]) -> list[dict]:
    """One dict per release, valid or not, sorted by namespace and name
    (the ``sluice.dev/status/v1`` row; reconciler/cli/commands/status.py documents it)."""
    out = []
    for rel in loaded.releases:
        st = rel.status
        last = changes.get(rel.path)
        # revisions as people read them: the version, or the revision name when it says more (v2-1a2b3c4d)
        stable, canary, target = st.get("stable") or {}, st.get("canary") or {}, revision.target(rel)
        out.append({
            "namespace": rel.namespace, "name": rel.name, "strategy": rel.strategy_kind,
            "phase": st.get("phase") or "Pending", "weight": st.get("weight", 0), "step": st.get("step", 0),
            "steps": len(stages(rel)), "stable": revision.display(stable) if stable.get("version") else None,
            "new": (revision.display(canary) if canary.get("version") else None) or (
                revision.display(target) if not revision.same(target, stable) else None),
            "target": revision.display(target), "message": st.get("message"),
            "lastChange": {"author": last[0], "at": last[1]} if last else None,
            "since": st.get("stepStartedAt") or st.get("startedAt"), "valid": True, "problems": [],
            "readinessChecked": st.get("readinessChecked", True) is not False, "heldBy": st.get("heldBy"),
            "waitingFor": st.get("waitingFor") if st.get("phase") == "WaitingApproval" else None})
    for path, problems in loaded.invalid.items():
        key = key_from_path(path)
        ns, _, name = key.partition("/")
        last = changes.get(path)
        out.append({"namespace": ns, "name": name, "strategy": None, "phase": "Invalid", "weight": None,
                    "step": None, "steps": None, "stable": None, "new": None, "target": None,
                    "message": str(problems[0]), "lastChange": {"author": last[0], "at": last[1]} if last else None,
                    "since": None, "valid": False, "problems": [p.to_json() for p in problems],
                    "readinessChecked": True, "heldBy": None, "waitingFor": None})
    return sorted(out, key=lambda r: (r["namespace"], r["name"]))


def rows(source: Source) -> list[dict]:
    """``release_rows`` of ``source`` as ``sluice status`` reads it (a URL is fetched first)."""
    with collector_paused():   # a row per release, all kept (core/bulk.py)
        loaded = source.load()
        return release_rows(loaded, source.last_changes({r.path for r in loaded.releases} | set(loaded.invalid)))


def read_current(source: Source, cache: LoadCache | None = None) -> tuple[RepoLoad, dict[str, tuple[str, str]]]:
    """The loaded repo and last changes of ``source`` WITHOUT fetching: a checkout's work
    tree, or a clone's fetched tip. ``cache`` keeps parsed files across calls (by blob id)."""
    if source.path is not None:
        loaded = load_files(read_tree(source.path), cache=cache)
    else:
        loaded = load_files(source.repo.read_files(source.repo.tip()), cache=cache)
    return loaded, source.last_changes({r.path for r in loaded.releases} | set(loaded.invalid))


def tip_of(source: Source) -> str | None:
    """The commit ``source`` shows (a checkout's HEAD, a clone's fetched tip); None without one."""
    if source.repo is None:
        return None
    try:
        return source.repo.tip() or None
    except SluiceError:   # nothing fetched yet, or a checkout without commits
        return None


class _CloneReader(GitRepo):
    """A read-only handle on a clone that ``GitRepo`` keeps: reads its fetched branch."""

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"


def clone_reader(workdir: str | os.PathLike, branch: str, url: str | None = None) -> Source:
    """A ``Source`` over the controller's bare clone at ``workdir``: a second handle of
    its own (own blob cache; opening it clears no lock and fetches nothing), reading
    ``refs/remotes/origin/<branch>``. Raises GitError until the clone exists."""
    repo = _CloneReader.open_local(workdir)
    repo.branch = branch
    if url:
        repo.url = url
    return Source(repo, None, None)


def weight_points(records) -> list:
    """The history records that set a weight (each step, promotion, rollback): the
    points of the weight-over-time chart, oldest first."""
    return [r for r in records if r.weight is not None]
