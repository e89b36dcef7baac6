"""Where read-only commands get a config repo from: a local checkout (read in
place, never written) or a URL (cloned into a cache directory of ours)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from git import GitCommandError

from reconciler.adapters.files import read_tree
from reconciler.adapters.gitrepo import Credentials, GitRepo
from reconciler.core.loader import load_files
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
        if self.url:
            tip = self.repo.sync()
            return load_files(self.repo.read_files(tip))
        return load_files(read_tree(self.path))

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
