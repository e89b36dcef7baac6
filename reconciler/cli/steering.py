"""The steering commands: they WRITE (a commit in a local clone, pushed with
``--push``), unlike the read-only set. Each is a convenience over a commit a
person could make by hand."""

from __future__ import annotations

from pathlib import Path

import click
import git

from reconciler.cli.common import load_repo_dir, pick_release
from reconciler.core.steer import SteerError, set_spec_key


def steer(repo: str, ref: str, edits: dict, what: str, push: bool) -> int:
    loaded = load_repo_dir(repo)
    rel = pick_release(loaded, ref)
    path = Path(repo) / rel.path
    text = path.read_text()
    try:
        for key, value in edits(rel).items() if callable(edits) else edits.items():
            text = set_spec_key(text, key, value)
    except SteerError as exc:
        raise click.ClickException(f"{rel.path}: {exc}") from None
    path.write_text(text)
    try:
        g = git.Repo(repo, search_parent_directories=True)
        g.index.add([str(path.resolve().relative_to(Path(g.working_tree_dir).resolve()))])
        g.index.commit(f"{rel.key}: {what} (sluice {what.split()[0]})")
        if push:
            g.git.push("origin", "HEAD")
    except (git.GitCommandError, git.InvalidGitRepositoryError) as exc:
        raise click.ClickException(f"git: {exc}") from None
    click.echo(f"{rel.key}: {what}" + (" (pushed)" if push else " (committed; push to apply, or use --push)"))
    return 0


def make(name: str, help_text: str, edits, what):
    @click.command(name=name, help=help_text)
    @click.argument("release")
    @click.option("--repo", default=".", show_default=True, help="Local clone of the config repo.")
    @click.option("--push", is_flag=True, help="Push the commit to the clone's upstream.")
    def command(release: str, repo: str, push: bool) -> int:
        return steer(repo, release, edits, what, push)
    return command
