"""The steering commands: they WRITE (a commit in a local clone, pushed with
``--push``), unlike the read-only set. Each is a convenience over a commit a
person could make by hand, and is made the way the person would make it:
through the ``git`` CLI, so their own configuration applies (identity,
``commit.gpgsign`` and signing key, hooks).

The commit holds the release file's own change and nothing else: it is built
in a temporary index from ``HEAD`` plus that one file (edited from its
committed bytes), so whatever the person had staged or left unstaged stays
as it was, uncommitted. Bytes are preserved: CRLF line ends, a BOM, a missing
final newline, and no clean/smudge filter or autocrlf rewrites the blob.
The working copy gets the same edit.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import click

from reconciler.cli.common import load_repo_dir, pick_release
from reconciler.core.steer import SteerError, set_spec_key

BOM = "\ufeff"


def _git(top: str, *args: str, data: bytes | None = None, env: dict | None = None) -> bytes:
    proc = subprocess.run(["git", "-C", top, *args], input=data, capture_output=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise click.ClickException(f"git {args[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def edit_bytes(data: bytes, edits: dict) -> bytes:
    """``data`` with each ``spec.<key>: value`` set, every other byte kept."""
    text = data.decode("utf-8")
    bom = text.startswith(BOM)
    text = text[len(BOM):] if bom else text
    for key, value in edits.items():
        text = set_spec_key(text, key, value)
    return ((BOM if bom else "") + text).encode("utf-8")


def steer(repo: str, ref: str, edits: dict, what: str, push: bool) -> int:
    loaded = load_repo_dir(repo)
    rel = pick_release(loaded, ref)
    top = _git(repo, "rev-parse", "--show-toplevel").decode().strip()
    _refuse_mid_operation(top)
    path = _git(repo, "rev-parse", "--show-prefix").decode().strip() + rel.path
    changes = edits(rel) if callable(edits) else edits
    entry = _git(top, "ls-tree", "HEAD", "--", path).decode().split()
    if not entry:
        raise click.ClickException(f"{rel.path} is not committed yet: commit it first")
    mode, _, old_blob = entry[:3]
    committed = _git(top, "cat-file", "blob", old_blob)
    try:
        new = edit_bytes(committed, changes)
    except (SteerError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{rel.path}: {exc}") from None
    if new == committed:
        click.echo(f"{rel.key}: already {what}")
        return 0
    blob = _git(top, "hash-object", "-w", "--no-filters", "--stdin", data=new).decode().strip()
    with tempfile.TemporaryDirectory(prefix="sluice-steer-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(top, "read-tree", "HEAD", env=env)
        _git(top, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        # the person's git: their name, their signing config, their hooks
        head = _git(top, "rev-parse", "HEAD").decode().strip()
        _git(top, "commit", "--quiet", "-m", f"{rel.key}: {what} (sluice {what.split()[0]})", env=env)
    _check_one_file(top, head, path, blob)
    _sync_worktree(top, path, committed, new, old_blob, blob, mode, changes)
    if push:
        _git(top, "push", "origin", "HEAD")
    click.echo(f"{rel.key}: {what}" + (" (pushed)" if push else " (committed; push to apply, or use --push)"))
    return 0


IN_PROGRESS = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply")


def _refuse_mid_operation(top: str) -> None:
    """A commit now would land inside a person's merge, rebase or cherry-pick (and a
    merge's other side would be lost): refuse."""
    for name in IN_PROGRESS:
        where = Path(top) / _git(top, "rev-parse", "--git-path", name).decode().strip()
        if where.exists():
            raise click.ClickException(f"a git operation is in progress ({name}): finish or abort it first")


def _check_one_file(top: str, parent: str, path: str, blob: str) -> None:
    """The commit must be its parent plus this one file, as written. A hook that staged
    something else (or undid the edit) makes it another commit: undo it and say so."""
    changed = _git(top, "diff-tree", "--no-commit-id", "-r", "--name-only", parent, "HEAD").decode().split("\n")
    entry = _git(top, "ls-tree", "HEAD", "--", path).decode().split()
    if [c for c in changed if c] != [path] or len(entry) < 3 or entry[2] != blob:
        _git(top, "update-ref", "HEAD", parent)
        raise click.ClickException(f"a commit hook changed what was committed (not only {path}): the commit was "
                                   "undone; nothing else was touched")


def _sync_worktree(top: str, path: str, committed: bytes, new: bytes, old_blob: str, blob: str,
                   mode: str, changes: dict) -> None:
    """Bring the working copy and the index entry of ``path`` along, keeping the person's own edits."""
    file = Path(top) / path
    try:
        current = file.read_bytes()
    except OSError:
        return
    if current == committed:
        file.write_bytes(new)
    else:
        try:
            file.write_bytes(edit_bytes(current, changes))
        except (SteerError, UnicodeDecodeError):
            click.echo(f"{path}: your uncommitted edits are kept; the commit has the change", err=True)
    staged = _git(top, "ls-files", "-s", "--", path).decode().split()
    if len(staged) >= 2 and staged[1] == old_blob:   # nothing of theirs staged for this file
        _git(top, "update-index", "--cacheinfo", f"{mode},{blob},{path}")


def make(name: str, help_text: str, edits, what):
    @click.command(name=name, help=help_text)
    @click.argument("release")
    @click.option("--repo", default=".", show_default=True, help="Local clone of the config repo.")
    @click.option("--push", is_flag=True, help="Push the commit to the clone's upstream.")
    def command(release: str, repo: str, push: bool) -> int:
        return steer(repo, release, edits, what, push)
    return command
