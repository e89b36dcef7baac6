"""Helpers shared by the commands: load a repo directory, find a release by
name, print problems. Output to stdout is for users; diagnostics go to stderr."""

from __future__ import annotations

import click

from reconciler.adapters.files import read_tree
from reconciler.core.loader import load_files
from reconciler.core.model import Release, RepoLoad


def load_repo_dir(path: str) -> RepoLoad:
    """Load the config repo checked out at ``path`` (read-only)."""
    return load_files(read_tree(path))


def find_release(releases: list[Release], ref: str) -> Release | None:
    """``namespace/name``, or ``name`` where that is unique; None when absent."""
    if "/" in ref:
        return next((r for r in releases if r.key == ref), None)
    hits = [r for r in releases if r.name == ref]
    if len(hits) > 1:
        raise click.UsageError(
            f"release name {ref!r} is ambiguous: " + ", ".join(sorted(r.key for r in hits)))
    return hits[0] if hits else None


def pick_release(loaded: RepoLoad, ref: str) -> Release:
    """Like find_release, but a missing or invalid release is a usage error."""
    rel = find_release(loaded.releases, ref)
    if rel is not None:
        return rel
    bad = [p for p in loaded.problems if p.release and (p.release == ref or p.release.endswith("/" + ref))]
    if bad:
        raise click.ClickException(f"release {ref} is invalid:\n" + "\n".join(map(str, bad)))
    raise click.UsageError(f"no release {ref!r} in this repo")
