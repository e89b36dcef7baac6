"""``sluice render [REPO] [RELEASE] [-o yaml|json]``: the desired objects for
what is committed now (read-only).

Renders every valid release of the repo, or just RELEASE (``namespace/name``,
or ``name`` where that is unique). Invalid releases are reported on stderr as
``path:line:col: message`` and skipped; the exit code is then 1, but the
valid ones are still printed.
"""

from __future__ import annotations

import click

from reconciler.cli.common import load_repo_dir, pick_release
from reconciler.core.render import render
from reconciler.core.serialize import dump_json, dump_yaml


@click.command()
@click.argument("repo", required=False, default=".", type=click.Path(file_okay=False))
@click.argument("release", required=False)
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def command(repo: str, release: str | None, output: str) -> int:
    """Print the Kubernetes and Istio objects Sluice wants for the committed state."""
    loaded = load_repo_dir(repo)
    releases = loaded.releases
    if release:
        releases = [pick_release(loaded, release)]
    objs = [obj for rel in releases for obj in render(rel, loaded.settings)]
    click.echo(dump_json(objs) if output == "json" else dump_yaml(objs), nl=False)
    for problem in loaded.problems:
        click.echo(str(problem), err=True)
    return 1 if loaded.problems else 0
