"""The controller's own clone of the config repo: sync, read, write, history.

The clone is bare and belongs to Sluice alone, so nothing a human does can
be lost in it and there is no work tree to keep clean. Commits are built
with git plumbing (a private index, ``write-tree``, ``commit-tree``) on top
of the remote tip, and pushed as one fast-forward. Never forced: a rejected
push means fetch, recompute on the new tip (the human may have paused,
aborted or retargeted the release), commit again, push again, with bounded
exponential backoff. Unpushed work is kept on ``refs/sluice/pending`` when
the engine gives up.

Git runs as a subprocess through GitPython's ``Repo.git`` (it raises
``GitCommandError`` on failure, unlike ``Remote.push``). Credentials never
touch the URL, .git/config, logs or errors: an HTTPS token goes in an
``http.extraHeader`` passed through ``GIT_CONFIG_*`` environment variables,
an SSH key through ``GIT_SSH_COMMAND``.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import collections.abc
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import git

from reconciler.core.history import HistoryRecord, RawCommit, history
from reconciler.errors import GitAuthError, GitError

log = logging.getLogger("sluice.git")
PENDING_REF = "refs/sluice/pending"
_AUTH_HINTS = ("authentication failed", "could not read username", "permission denied",
               "invalid username or password", "access denied", "terminal prompts disabled")
# an HTTP 401/403 as git reports it; a bare "401" matched a port such as 127.0.0.1:40113
_AUTH_STATUS = re.compile(r"(returned error|http|status)[^0-9]{0,12}\b(401|403)\b")
_MISSING_BRANCH = ("couldn't find remote ref", "not found in upstream", "remote branch")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to the remote. Values are secrets: never logged."""

    token: str | None = None            # HTTPS
    username: str = "x-access-token"    # the user name sent with a token (GitHub style)
    ssh_key_file: str | None = None     # SSH
    known_hosts_file: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(token={'***' if self.token else None}, ssh_key_file={self.ssh_key_file!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Credentials":
        """From SLUICE_GIT_TOKEN / SLUICE_GIT_TOKEN_FILE / SLUICE_GIT_SSH_KEY_FILE / SLUICE_GIT_KNOWN_HOSTS."""
        env = os.environ if env is None else env
        token = env.get("SLUICE_GIT_TOKEN")
        if not token and env.get("SLUICE_GIT_TOKEN_FILE"):
            token = Path(env["SLUICE_GIT_TOKEN_FILE"]).read_text().strip()
        return cls(token=token or None, username=env.get("SLUICE_GIT_USERNAME", "x-access-token"),
                   ssh_key_file=env.get("SLUICE_GIT_SSH_KEY_FILE") or None,
                   known_hosts_file=env.get("SLUICE_GIT_KNOWN_HOSTS") or None)

    def env(self) -> dict[str, str]:
        out = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true"}
        if self.token:
            basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
            out.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        if self.ssh_key_file:
            cmd = ["ssh", "-i", self.ssh_key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
            if self.known_hosts_file:
                cmd += ["-o", f"UserKnownHostsFile={self.known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
            out["GIT_SSH_COMMAND"] = shlex.join(cmd)
        return out

    def secrets(self) -> list[str]:
        out = []
        if self.token:
            out += [self.token, base64.b64encode(f"{self.username}:{self.token}".encode()).decode()]
        return out


@dataclass(frozen=True)
class Identity:
    name: str = "Sluice"
    email: str = "sluice@localhost"


@dataclass(frozen=True)
class CommitPlan:
    """One commit to make: file contents (None deletes) and its message."""

    files: Mapping[str, bytes | None]
    message: str


@dataclass
class PushResult:
    pushed: bool
    tip: str                         # remote tip after the write
    commits: list[str] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    error: str | None = None


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)


class Snapshot:
    """The repo at one commit, for a write's compute function to read."""

    def __init__(self, repo: "GitRepo", tip: str):
        self.repo, self.tip = repo, tip

    def read_files(self, prefixes: tuple[str, ...] = ("releases/", "sluice.yaml")) -> dict[str, bytes]:
        return self.repo.read_files(self.tip, prefixes)

    def read(self, path: str) -> bytes | None:
        return self.repo.read_file(self.tip, path)


class TreeFiles(collections.abc.Mapping):
    """A commit's files by path, read from git when first asked for (``prefetch`` reads
    several in one ``cat-file``)."""

    def __init__(self, repo: "GitRepo", blobs: dict[str, str]):
        self.repo, self.blobs = repo, blobs

    def prefetch(self, paths: Iterable[str], also: Mapping[str, str] | None = None) -> None:
        """Read ``paths`` in one ``cat-file`` (``also``: another commit's path -> blob id, read in the same one)."""
        where = [self.blobs, *([also] if also else [])]
        self.repo._cat(list(dict.fromkeys(ids[p] for p in paths for ids in where if p in ids)))

    def __getitem__(self, path: str) -> bytes:
        sha = self.blobs[path]
        self.repo._cat([sha])
        return self.repo._blobs[sha]

    def __iter__(self):
        return iter(self.blobs)

    def __len__(self) -> int:
        return len(self.blobs)

    def __contains__(self, path: object) -> bool:
        return path in self.blobs


class GitRepo:
    """Sluice's bare clone of ``url`` at ``workdir``, following ``branch``."""

    def __init__(self, url: str, workdir: str | os.PathLike, branch: str = "main", *,
                 credentials: Credentials | None = None, author: Identity = Identity(),
                 sign_config: Mapping[str, str] | None = None):
        self.url, self.branch = url, branch
        self.workdir = Path(workdir)
        self.creds = credentials or Credentials()
        self.author = author
        self.sign_config = dict(sign_config or {})
        self._repo: git.Repo | None = None
        self._blobs: dict[str, bytes] = {}
        self._graph_ok = False          # a commit-graph with changed-path filters exists

    @classmethod
    def open_local(cls, path: str | os.PathLike) -> "GitRepo":
        """A person's existing clone, read-only: reads follow its HEAD; nothing is written."""
        try:
            repo = git.Repo(path, search_parent_directories=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitError(f"{path}: not a git repository") from exc
        obj = cls(str(path), repo.git_dir)
        obj._repo = repo
        obj._local = True
        return obj

    # --- plumbing ---------------------------------------------------------
    _local = False

    @property
    def remote_ref(self) -> str:
        return "HEAD" if self._local else f"refs/remotes/origin/{self.branch}"

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**self.creds.env(), "GIT_COMMITTER_NAME": self.author.name,
               "GIT_COMMITTER_EMAIL": self.author.email, "GIT_AUTHOR_NAME": self.author.name,
               "GIT_AUTHOR_EMAIL": self.author.email, "LC_ALL": "C"}
        env.update(extra or {})
        return env

    def _fail(self, what: str, exc: git.GitCommandError) -> GitError:
        text = redact(f"{exc.stderr or exc}".strip(), self.creds.secrets())
        text = text.replace("stderr:", "").strip().strip("'").strip()
        low = text.lower()
        url = redact(self.url, self.creds.secrets())
        if any(h in low for h in _MISSING_BRANCH):
            return GitAuthError(f"{what}: branch {self.branch!r} does not exist on {url}")
        if any(h in low for h in _AUTH_HINTS) or _AUTH_STATUS.search(low):
            return GitAuthError(f"{what}: {url} refused our credentials ({text.splitlines()[-1] if text else 'denied'})")
        return GitError(f"{what} {url}: {text.splitlines()[-1] if text else exc.status}")

    def git(self, *args: str, env: Mapping[str, str] | None = None, **kw) -> str:
        assert self._repo is not None
        return self._repo.git.execute(["git", *args], env=self._env(env), **kw)

    # --- sync ---------------------------------------------------------------
    def _ensure(self) -> None:
        if self._repo is not None:
            return
        if (self.workdir / "HEAD").exists():
            self._clear_stale_locks()
            self._repo = git.Repo(self.workdir)
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._repo = git.Repo.init(self.workdir, bare=True)
        self.git("config", "remote.origin.url", self.url)
        self.git("config", "remote.origin.fetch", f"+refs/heads/{self.branch}:{self.remote_ref}")
        self.git("config", "gc.auto", "0")          # gc when we choose, never in the middle of a pass
        self.git("config", "core.commitGraph", "true")

    def _clear_stale_locks(self) -> None:
        """A controller killed mid-fetch or mid-commit leaves ``*.lock`` files that
        would fail every later git call. The clone is this process's alone (each
        replica has its own workdir), so at start-up any lock is stale."""
        for lock in [*self.workdir.glob("*.lock"), *(self.workdir / "refs").rglob("*.lock")]:
            log.warning("removing stale git lock %s left by a previous run", lock.name)
            lock.unlink(missing_ok=True)

    def sync(self) -> str:
        """Fetch the remote branch; returns its tip sha."""
        self._ensure()
        try:
            self.git(*self._fetch_config(), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin",
                     f"+refs/heads/{self.branch}:{self.remote_ref}")
        except git.GitCommandError as exc:
            raise self._fail("fetch", exc) from exc
        tip = self.tip()
        self._ensure_graph()
        return tip

    def _fetch_config(self) -> list[str]:
        """``-c`` options of a fetch. Maintenance never runs in the middle of a pass (as
        ``gc.auto=0``). Once the clone has a commit-graph with changed-path filters, the
        fetch itself adds the new commits to it (a split layer, filters included, in the
        fetch's own process); before that, ``_ensure_graph`` writes the first one, since
        a first layer written by fetch would carry no filters and later layers inherit that."""
        return ["-c", "maintenance.auto=false",
                "-c", f"fetch.writeCommitGraph={'true' if self._has_graph() else 'false'}"]

    def tip(self) -> str:
        """The fetched tip, read from the ref files (no git process: each pass asks often)."""
        self._ensure()
        try:
            return git.SymbolicReference.dereference_recursive(self._repo, self.remote_ref)
        except (ValueError, OSError) as exc:
            raise GitAuthError(f"branch {self.branch!r} has not been fetched from "
                               f"{redact(self.url, self.creds.secrets())}") from exc

    def _has_graph(self) -> bool:
        info = self.workdir / "objects" / "info"
        return (info / "commit-graphs" / "commit-graph-chain").exists() or (info / "commit-graph").exists()

    def _ensure_graph(self) -> None:
        """The first commit-graph of the clone, with changed-path Bloom filters: a
        path-limited log (history, last change) then reads one filter per commit instead
        of diffing its tree, ~8x faster at 100,000 commits. Later fetches extend it."""
        if self._graph_ok:
            return
        if not self._has_graph():
            try:
                self.git("commit-graph", "write", "--reachable", "--changed-paths", "--split")
            except git.GitCommandError as exc:
                log.warning("no commit-graph written (history stays correct, only slower): %s", exc)
                return
        self._graph_ok = True

    # --- read -----------------------------------------------------------------
    def blob_ids(self, commit: str, prefixes: tuple[str, ...] = ("releases/", "sluice.yaml")) -> dict[str, str]:
        out = self.git("ls-tree", "-r", "-z", "--full-tree", commit, "--", *[p.rstrip("/") for p in prefixes])
        blobs = {}
        for entry in filter(None, out.split("\0")):
            meta, path = entry.split("\t", 1)
            mode, kind, sha = meta.split()
            if kind == "blob" and mode != "120000":   # symlinks are never followed
                blobs[path] = sha
        return blobs

    def _cat(self, shas: list[str]) -> None:
        missing = [s for s in dict.fromkeys(shas) if s not in self._blobs]
        if not missing:
            return
        if len(self._blobs) > 50_000:
            self._blobs.clear()
        proc = subprocess.run(["git", "-C", str(self.workdir), "cat-file", "--batch"],
                              input=("\n".join(missing) + "\n").encode(), capture_output=True,
                              env={**os.environ, **self._env()}, check=True)
        data, pos = proc.stdout, 0
        for sha in missing:
            header_end = data.index(b"\n", pos)
            _, _, size = data[pos:header_end].split()
            start = header_end + 1
            self._blobs[sha] = data[start:start + int(size)]
            pos = start + int(size) + 1

    def read_files(self, commit: str | None = None,
                   prefixes: tuple[str, ...] = ("releases/", "sluice.yaml")) -> dict[str, bytes]:
        """Files under ``prefixes`` at ``commit`` (default: the remote tip), from the tree."""
        commit = commit or self.tip()
        blobs = self.blob_ids(commit, prefixes)
        self._cat(list(blobs.values()))
        return {path: self._blobs[sha] for path, sha in blobs.items()}

    def tree_files(self, blobs: Mapping[str, str]) -> "TreeFiles":
        """``{path: bytes}`` of ``blobs`` (path -> blob id, as ``blob_ids`` gives them) read
        from git only when asked for: a load given the blob ids reads changed files only."""
        return TreeFiles(self, dict(blobs))

    def read_file(self, commit: str, path: str) -> bytes | None:
        blobs = self.blob_ids(commit, (path,))
        if path not in blobs:
            return None
        self._cat([blobs[path]])
        return self._blobs[blobs[path]]

    # --- write ----------------------------------------------------------------
    def _commit(self, parent: str, plan: CommitPlan, env: Mapping[str, str]) -> str | None:
        """One commit of ``plan`` on ``parent`` using the private index in ``env``
        (already holding ``parent``'s tree); None when it changes nothing."""
        removals = [p for p, d in plan.files.items() if d is None]
        if removals:
            self.git("update-index", "--force-remove", "--", *sorted(removals), env=env)
        adds = sorted((p, d) for p, d in plan.files.items() if d is not None)
        if adds:
            shas = self._hash_many([d for _, d in adds])
            info = "".join(f"100644 {sha}\t{path}\n" for (path, _), sha in zip(adds, shas))
            self._run(["update-index", "--add", "--index-info"], info.encode(), env)
        tree = self.git("write-tree", env=env).strip()
        if tree == self.git("rev-parse", f"{parent}^{{tree}}").strip():
            return None   # no empty commits
        sign = ["-S"] if self.sign_config else []
        args = [arg for key, value in self.sign_config.items() for arg in ("-c", f"{key}={value}")]
        proc = subprocess.run(["git", *args, "-C", str(self.workdir), "commit-tree", tree, "-p", parent, *sign, "-F", "-"],
                              input=plan.message.encode(), capture_output=True, env={**os.environ, **self._env()})
        if proc.returncode != 0:
            raise GitError(f"commit failed: {redact(proc.stderr.decode(errors='replace').strip(), self.creds.secrets())}")
        return proc.stdout.decode().strip()

    def _run(self, args: list[str], data: bytes, env: Mapping[str, str] | None = None) -> bytes:
        proc = subprocess.run(["git", "-C", str(self.workdir), *args], input=data, capture_output=True,
                              env={**os.environ, **self._env(env)})
        if proc.returncode != 0:
            raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout

    def _hash_many(self, blobs: list[bytes]) -> list[str]:
        """Write blobs in one process (``hash-object --stdin-paths`` over temp files)."""
        if len(blobs) == 1:
            return [self._run(["hash-object", "-w", "--stdin"], blobs[0]).decode().strip()]
        with tempfile.TemporaryDirectory(prefix="sluice-blobs-") as tmp:
            paths = []
            for i, data in enumerate(blobs):
                path = Path(tmp) / str(i)
                path.write_bytes(data)
                paths.append(str(path))
            out = self._run(["hash-object", "-w", "--no-filters", "--stdin-paths"], "\n".join(paths).encode())
        return out.decode().split()

    def _push(self, sha: str) -> tuple[bool, str]:
        """(pushed, reason). A rejection is (False, reason); other failures raise."""
        try:
            self.git("push", "--porcelain", "origin", f"{sha}:refs/heads/{self.branch}")
            return True, ""
        except git.GitCommandError as exc:
            text = f"{exc.stdout or ''}\n{exc.stderr or ''}".lower()
            if any(h in text for h in ("[rejected]", "non-fast-forward", "fetch first", "stale info",
                                       "cannot lock ref", "failed to update ref", "remote rejected")):
                return False, "remote moved on (non-fast-forward): " + redact(
                    " ".join((exc.stderr or "").split())[-200:], self.creds.secrets())
            raise self._fail("push", exc) from exc

    def write(self, compute: Callable[[Snapshot], list[CommitPlan]], *, max_attempts: int = 6,
              backoff: float = 0.2, backoff_cap: float = 5.0,
              sleep: Callable[[float], None] = time.sleep,
              verify: Callable[[str], None] | None = None) -> PushResult:
        """Commit what ``compute`` returns on the remote tip and push it, never forcing.

        ``verify(tip)`` runs on every tip before anything is computed on it (the
        first and each one fetched after a rejected push); it raises (TrustError)
        to refuse the tip, and then nothing is computed, committed or pushed."""
        self._ensure()
        result = PushResult(pushed=False, tip=self.tip())
        for attempt in range(1, max_attempts + 1):
            result.attempts = attempt
            tip = self.tip()
            if verify is not None:
                verify(tip)
            head, commits = tip, []
            with tempfile.TemporaryDirectory(prefix="sluice-index-") as tmp:
                # one private index for the pass; an empty scratch work tree because bare
                # repos refuse some index commands without one
                env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": tmp}
                self.git("read-tree", tip, env=env)
                for plan in compute(Snapshot(self, tip)):
                    sha = self._commit(head, plan, env)
                    if sha:
                        head = sha
                        commits.append(sha)
            if not commits:
                return PushResult(pushed=False, tip=tip, attempts=attempt, retries=attempt - 1)
            ok, reason = self._push(head)
            if ok:
                # one transaction: the remote-tracking ref moves and the kept work is dropped
                self._run(["update-ref", "--stdin"], f"update {self.remote_ref} {head}\ndelete {PENDING_REF}\n".encode())
                return PushResult(pushed=True, tip=head, commits=commits, attempts=attempt, retries=attempt - 1)
            self.git("update-ref", PENDING_REF, head)   # keep the work until it lands or is recomputed
            result.error = reason
            if attempt < max_attempts:
                delay = min(backoff_cap, backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                sleep(delay)
                self.sync()
        result.retries = result.attempts - 1
        raise GitError(f"push to {redact(self.url, self.creds.secrets())} {self.branch} rejected "
                       f"{result.attempts} times ({result.error}); unpushed commits kept at {PENDING_REF}")

    # --- history ----------------------------------------------------------------
    def log_file(self, paths: list[str], ref: str | None = None, limit: int | None = None) -> list[RawCommit]:
        fmt = "%H%x1f%an%x1f%ae%x1f%aI%x1f%B%x1e"
        args = ["log", f"--format={fmt}", "--no-renames"]
        if limit:
            args.append(f"-n{limit}")
        # literal: a release key is a file name, never a glob (releases/bookinfo/*.yaml is one file)
        out = self.git(*args, ref or self.remote_ref, "--", *(f":(literal){p}" for p in paths),
                       strip_newline_in_stdout=False)
        raws = []
        for chunk in out.split("\x1e"):
            chunk = chunk.lstrip("\n")
            if not chunk:
                continue
            sha, author, email, at, message = chunk.split("\x1f", 4)
            raws.append(RawCommit(sha, author, email, at, message))
        return raws

    def history(self, release: str, ref: str | None = None) -> list[HistoryRecord]:
        """Every recorded step of ``release`` (``ns/name``), oldest first."""
        ns, name = release.split("/", 1)
        path = f"releases/{ns}/{name}.yaml"
        yml = path.removesuffix(".yaml") + ".yml"
        if path not in (present := self.blob_ids(ref or self.remote_ref, (path, yml))) and yml in present:
            path = yml
        # one literal path: git's changed-path Bloom filters only help a single pathspec
        return history(self.log_file([path], ref), release)

    # --- ancestry (the git target asks which commit an applier has reached) -----------
    def last_change(self, path: str, ref: str | None = None) -> str | None:
        """The last commit at ``ref`` (default: the remote tip) that changed ``path``; None
        when no commit did (the path does not exist there)."""
        out = self.git("log", "-n1", "--format=%H", "--no-renames", ref or self.remote_ref, "--",
                       f":(literal){path}").strip()
        return out or None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool | None:
        """Is ``ancestor`` ``descendant`` or one of its ancestors? None when this clone
        does not have ``descendant`` (a commit pushed after our last fetch, or another
        repository's): it cannot be told yet."""
        try:
            self.git("cat-file", "-e", f"{descendant}^{{commit}}")
        except git.GitCommandError:
            return None
        try:
            self.git("merge-base", "--is-ancestor", ancestor, descendant)
            return True
        except git.GitCommandError as exc:
            if exc.status == 1:
                return False
            return None
