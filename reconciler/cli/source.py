"""Where read-only commands get a config repo from: a local checkout (read in
place, never written) or a URL (cloned into a cache directory of ours)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from git import GitCommandError

from reconciler.adapters.files import read_tree
from reconciler.adapters.gitrepo import Credentials, GitRepo
from reconciler.adapters.loadcache import DiskLoadCache, cache_file
from reconciler.core.loader import LoadCache, load_files
from reconciler.core.model import RepoLoad
from reconciler.errors import GitError


def cache_dir() -> Path:
    base = os.environ.get("SLUICE_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "sluice"


@dataclass
class Source:
    repo: GitRepo | None      # None: a plain directory, no git history
    path: str | None          # local checkout
    url: str | None

    def load(self) -> RepoLoad:
        """The repo as committed (a URL: fetched first) or as checked out, parsed and checked
        only where a file's blob changed since the last call on this repo (the cache on disk)."""
        with kept_cache(self.url or os.path.abspath(self.path)) as cache:
            if self.url:
                tip = self.repo.sync()
                return load_files(self.repo.read_files(tip), cache=cache)
            return load_files(read_tree(self.path), cache=cache)

    def last_changes(self, paths: set[str], depth: int = 5000) -> dict[str, tuple[str, str]]:
        """path -> (author, ISO date) of the newest commit touching it, one walk of at most ``depth`` commits."""
        if self.repo is None or not paths:
            return {}
        ref = self.repo.remote_ref
        try:
            out = self.repo.git("log", f"-n{depth}", "--format=\x1e%an\x1f%aI", "--name-only", "--no-renames", ref,
                                "--", "releases")
        except GitCommandError:   # a repo with no commits yet has no history to show
            return {}
        found: dict[str, tuple[str, str]] = {}
        for chunk in out.split("\x1e"):
            if not chunk.strip():
                continue
            head, _, names = chunk.partition("\n")
            author, _, date = head.partition("\x1f")
            for name in names.split():
                if name in paths and name not in found:
                    found[name] = (author, date)
            if len(found) == len(paths):
                break
        return found


@contextlib.contextmanager
def kept_cache(what: str) -> Iterator[LoadCache]:
    """The loader's cache for the repo ``what`` (a path or URL), read from Sluice's cache
    dir and written back when the loads made in the block changed it."""
    disk = DiskLoadCache(cache_file(cache_dir(), what))
    cache = disk.open()
    before = cache.state()
    yield cache
    if cache.state() != before:
        disk.save(cache)


def open_source(where: str, branch: str = "main") -> Source:
    if "://" in where or where.startswith("git@"):
        key = hashlib.sha1(f"{where}@{branch}".encode()).hexdigest()[:16]
        repo = GitRepo(where, cache_dir() / key, branch, credentials=Credentials.from_env())
        return Source(repo, None, where)
    try:
        repo = GitRepo.open_local(where)
    except GitError:
        repo = None
    return Source(repo, where, None)
