"""Commit statuses: the pull request that changed a release shows its rollout.

Configured by the controller (``sluice run --commit-status github|gitlab``),
never by the repo. For each event that moves a rollout (started, each step,
a failed check, waiting for approval, promoted, rolled back) the commit
that started the rollout gets a status named ``sluice/<ns>/<name>``:
pending (GitLab: running) while it rolls out, with the step's commit subject
as description (``canary v2 10% -> 20% (step 2/4)``, at most 140
characters), then success on promotion or failure (GitLab: failed) on a
rollback or abort. That commit is the one that asked for the rollout,
recorded when the rollout starts: the controller's ``start`` and
``retarget`` commits carry ``Sluice-Trigger: <sha>``, the newest commit at
the synced tip that changed the release file or its config folder and is
not Sluice's own (``find_trigger``). Each update walks the release file's
history from the tip (every parent, so a person's ``git pull`` merge hides
nothing), finds the newest ``start``/``retarget`` of the release authored
by Sluice's identity (a person's commit copying the trailers is not
Sluice's) and marks its trigger (``core.notifications.rollout_triggers``);
the same commit is marked after a restart. When the trigger is a merge, its
second parent (the pull request's head) gets the same status. A start made
before the trailer existed is read as before: the newest commit by someone
else below it. A new target mid-rollout (``retarget``) marks the replaced
rollout's trigger once as final, ``error`` on GitHub (which has no
cancelled state) and ``canceled`` on GitLab, "superseded by <sha>", so its
pull request is not left pending.

- GitHub: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with
  ``Authorization: Bearer``, ``Accept: application/vnd.github+json``,
  ``X-GitHub-Api-Version: 2022-11-28``, body ``{state, description,
  context, target_url?}``. Token: classic ``repo:status`` scope, or a
  fine-grained token with "Commit statuses: write".
- GitLab: ``POST {api}/api/v4/projects/{id or url-encoded path}/statuses/{sha}``
  with ``PRIVATE-TOKEN``, body ``{state, name, description, target_url?}``.
  Token scope ``api``. GitLab answers 400 "Cannot transition status" when a
  status is posted again in the state it has (running -> running): the state
  is already right, so that answer counts as delivered.

The token is read from its file at each request (rotation takes effect at
once) and never logged. Requests run on the Notifier's commit-status lane
(never on the pass thread), in order; ``Pending`` is one rollout's newest
status not yet delivered, which a newer status of the same rollout replaces
(``reconciler.adapters.notify.Notifications``).
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from reconciler.adapters.notify import DeliveryError, Superseded, post_json
from reconciler.core import notifications as rules
from reconciler.core.loader import config_folder
from reconciler.core.model import Event

log = logging.getLogger("sluice.commitstatus")

GITHUB_API = "https://api.github.com"
GITHUB_API_VERSION = "2022-11-28"
LOG_DEPTH = 200          # commits of a release file read back to find its rollout's start
DEFAULT_TIMEOUT = 10.0


def parse_remote(url: str) -> tuple[str, str] | None:
    """(host, path without .git) of a git remote URL (https://, ssh://, scp-like git@host:path); None
    for a local path."""
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file" or not parts.hostname:
            return None
        host = parts.hostname + (f":{parts.port}" if parts.port and parts.scheme.startswith("http") else "")
        path = parts.path
    elif ":" in url and "@" in url.split(":", 1)[0]:
        host, path = url.split("@", 1)[1].split(":", 1)
    else:
        return None
    path = path.strip("/").removesuffix(".git")
    return (host, path) if path else None


def defaults(forge: str, repo_url: str) -> tuple[str | None, str | None]:
    """(API base URL, repository) derived from the config repo's URL, each None when it cannot be told."""
    remote = parse_remote(repo_url)
    if forge == "github":
        if remote is None:
            return GITHUB_API, None
        host, path = remote
        api = GITHUB_API if host == "github.com" else f"https://{host}/api/v3"   # GitHub Enterprise Server
        return api, path if path.count("/") == 1 else None
    if remote is None:
        return None, None
    host, path = remote
    return f"https://{host}", path


Row = tuple[str, tuple[str, ...], bool, str]   # sha, parents, authored by Sluice's identity, message


@dataclass
class CommitStatus:
    """Posts the commit statuses of rollouts on one forge for one repository."""

    forge: str                      # github | gitlab
    api: str                        # https://api.github.com, https://gitlab.example.com
    repository: str                 # owner/name (GitHub); project id or path (GitLab)
    token_file: str
    log_of: "GitLog"                # the release file's history, and a commit's parents
    target_url: str | None = None   # "{release}" in it is replaced by ns/name
    timeout: float = DEFAULT_TIMEOUT

    def pending(self, kind: str, event: Event, path: str, tip: str) -> "Pending | None":
        """The status update of ``event`` (for the Notifier); None when ``kind`` marks nothing."""
        state = rules.commit_state(self.forge, kind)
        if state is None or not tip:
            return None
        return Pending(self, state, event, path, tip)

    def targets(self, release: str, path: str, tip: str) -> tuple[list[str], list[str]]:
        """(the commits to mark: the trigger of ``release``'s rollout and its PR head when a merge,
        the triggers a new target superseded mid-rollout, newest first)."""
        rows = self.log_of(tip, path)
        found = rules.rollout_triggers(rows, release)
        if not found:
            return [], []
        parents = {sha: p for sha, p, _, _ in rows}
        head = parents.get(found[0])
        if head is None:
            head = self.log_of.parents(found[0])
        return [found[0]] + ([head[1]] if len(head) > 1 else []), [t for t in found[1:] if t != found[0]]

    def deliver(self, state: str, event: Event, path: str, tip: str, supersedes: int = 0) -> None:
        """Mark the rollout's trigger with ``state``, and the ``supersedes`` newest triggers a new
        target replaced (each retarget's once) as final."""
        try:
            shas, replaced = self.targets(event.release, path, tip)
        except (git.GitCommandError, ValueError) as exc:   # git failing here must not stop the lane
            raise DeliveryError(f"cannot read the history of {path}: {type(exc).__name__}", retry=False) from None
        if not shas:
            log.info("release=%s no commit started this rollout in the last %d commits of %s: no status",
                     event.release, LOG_DEPTH, path)
            return
        for sha in shas:
            self.post(sha, state, rules.status_description(event), event.release)
        for sha in replaced[:supersedes]:
            self.post(sha, rules.SUPERSEDED[self.forge], rules.clip(f"superseded by {shas[0][:12]}",
                                                                  rules.STATUS_DESCRIPTION_MAX), event.release)

    def request(self, sha: str, state: str, description: str, release: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(url, body, headers) of one status; the token is added by ``post``."""
        context = f"sluice/{release}"
        target = self.target_url.replace("{release}", release) if self.target_url else None
        base = self.api.rstrip("/")
        if self.forge == "github":
            url = f"{base}/repos/{self.repository}/statuses/{sha}"
            body: dict[str, Any] = {"state": state, "description": description, "context": context}
            headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": GITHUB_API_VERSION}
        else:
            project = urllib.parse.quote(self.repository, safe="")
            url = f"{base}/api/v4/projects/{project}/statuses/{sha}"
            body = {"state": state, "name": context, "description": description}
            headers = {}
        if target:
            body["target_url"] = target
        return url, body, headers

    def post(self, sha: str, state: str, description: str, release: str) -> None:
        url, body, headers = self.request(sha, state, description, release)
        what = f"{self.forge} commit status {sha[:12]}"
        if self.forge == "github":
            post_json(url, body, timeout=self.timeout, what=what, headers=headers, token_file=self.token_file)
            return
        headers["PRIVATE-TOKEN"] = self._token()
        try:
            post_json(url, body, timeout=self.timeout, what=what, headers=headers)
        except DeliveryError as exc:
            if " answered 400" in str(exc) and "Cannot transition status" in str(exc):
                return   # it is in that state already (running -> running): nothing to change
            raise

    def _token(self) -> str:
        try:
            return Path(self.token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeliveryError(f"cannot read the commit-status token file {self.token_file}: "
                                f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}", retry=False) from None


class Pending:
    """One rollout's newest status not yet delivered. A newer status of the same rollout
    (``update``) replaces it while it waits or waits for a retry, so ``success`` is never
    followed by a stale ``pending``; once an attempt is under way it takes nothing more."""

    def __init__(self, client: CommitStatus, state: str, event: Event, path: str, tip: str):
        self.client, self.state, self.event, self.path, self.tip = client, state, event, path, tip
        self.supersedes = int(event.action == "retarget")
        self._lock = threading.Lock()
        self._running = self.closed = self._replaced = False

    @property
    def release(self) -> str:
        return self.event.release

    def update(self, newer: "Pending") -> bool:
        """Take ``newer``'s status in place of this one; False when this one can take no more (an
        attempt is under way, or it left the queue), or ``newer`` starts another rollout."""
        if newer.event.action == "start" or self.event.action in rules.END_ACTIONS:
            return False
        with self._lock:
            if self._running or self.closed:
                if not self.closed:   # under way: a retry of it would post a stale state after the newer one
                    self._replaced = True
                    newer.supersedes += self.supersedes
                return False
            self.state, self.event, self.path, self.tip = newer.state, newer.event, newer.path, newer.tip
            self.supersedes += newer.supersedes
            return True

    def __call__(self) -> None:
        """One attempt. It takes no update until the Notifier says it waits for another (``reopen``)."""
        with self._lock:
            if self._replaced:
                raise Superseded(f"a newer status of {self.release}'s rollout replaced it")
            self._running = True
            state, event, path, tip, supersedes = self.state, self.event, self.path, self.tip, self.supersedes
        self.client.deliver(state, event, path, tip, supersedes)

    def reopen(self) -> None:
        """Its attempt failed and it waits for a retry: a newer status may replace it meanwhile."""
        with self._lock:
            self._running = False

    def close(self) -> None:
        """Its job left the queue (delivered, failed or dropped): a newer status is a new job."""
        with self._lock:
            self.closed = True


class GitLog:
    """Reads a file's history from a GitRepo for commit statuses."""

    def __init__(self, repo):
        self.repo = repo

    def __call__(self, tip: str, path: str, *, first_parent: bool = False, also: tuple[str, ...] = ()) -> list[Row]:
        """The history of ``path`` (and ``also``) at ``tip``, newest first, at most LOG_DEPTH commits."""
        args = ["log"] + (["--first-parent"] if first_parent else []) + [
            f"-n{LOG_DEPTH}", "--format=%H%x1f%P%x1f%ae%x1f%B%x1e", "--no-renames", tip, "--", path, *also]
        out = self.repo.git(*args, strip_newline_in_stdout=False)
        mine = self.repo.author.email.lower()
        rows = []
        for chunk in out.split("\x1e"):
            chunk = chunk.lstrip("\n")
            if chunk:
                sha, parents, email, message = chunk.split("\x1f", 3)
                rows.append((sha, tuple(parents.split()), email.lower() == mine, message))
        return rows

    def parents(self, sha: str) -> tuple[str, ...]:
        out = self.repo.git("rev-list", "--parents", "-n1", sha).split()
        return tuple(out[1:])


def git_log_of(repo) -> GitLog:
    return GitLog(repo)


def find_trigger(repo, tip: str, path: str) -> str | None:
    """The commit that asked for a rollout of the release at ``path``: the newest at ``tip`` (first
    parents: a merged pull request is its merge) that changed the release file or its config
    folder and is not Sluice's own (``core.notifications.trigger_of``). None when git cannot tell."""
    try:
        return rules.trigger_of(GitLog(repo)(tip, path, first_parent=True, also=(config_folder(path),)))
    except (git.GitCommandError, ValueError) as exc:   # ValueError: a person's message holding our separators
        log.warning("cannot tell which commit started the rollout of %s: %s", path, type(exc).__name__)
        return None


def configure(forge: str, *, token_file: str | None, api: str | None, repository: str | None, repo_url: str,
              target_url: str | None, git) -> CommitStatus | None:
    """The CommitStatus of ``sluice run``'s flags (None for ``none``); ValueError saying which flag is missing."""
    if forge == "none":
        return None
    if not token_file:
        raise ValueError(f"--commit-status {forge} needs --commit-status-token-file (a file holding the token)")
    default_api, default_repo = defaults(forge, repo_url)
    api, repository = api or default_api, repository or default_repo
    if not api:
        raise ValueError(f"--commit-status {forge}: cannot tell the API from --repo; give --commit-status-api")
    if not repository:
        what = "owner/name" if forge == "github" else "the project's path or id"
        raise ValueError(f"--commit-status {forge}: cannot tell the repository from --repo; give "
                         f"--commit-status-repo ({what})")
    if not api.startswith(("https://", "http://")):
        raise ValueError("--commit-status-api must be an http(s) URL")
    return CommitStatus(forge, api, repository, token_file, git_log_of(git), target_url=target_url)
