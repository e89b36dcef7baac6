"""``sluice plan [REPO] --base REF [--head REF] [--format text|markdown|json]``

Read-only review of a change: every release whose file differs between BASE
and HEAD (commits of the local checkout REPO), what its rollout will do, the
diff of its rendered objects, and warnings. Markdown is made for a PR
comment (summary table first, details collapsed).

Exit codes (like ``terraform plan -detailed-exitcode``): 0 nothing to do,
2 changes planned, 1 an invalid release (file:line in the output).
JSON: ``{"apiVersion": "sluice.dev/plan/v1", "valid", "exitCode", "releases": [...]}``
(see reconciler/core/plan.py ReleasePlan.to_json for each release's fields).
"""

from __future__ import annotations

import json

import click
from git import GitCommandError

from reconciler.adapters.gitrepo import GitRepo
from reconciler.cli.source import kept_cache
from reconciler.core.bulk import collector_paused
from reconciler.core.loader import load_files
from reconciler.core.plan import build_plan, markdown, text


@click.command()
@click.argument("repo", required=False, default=".")
@click.option("--base", required=True, help="The commit the change starts from (e.g. origin/main).")
@click.option("--head", default="HEAD", show_default=True, help="The commit with the change.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--allow-skip-analysis", is_flag=True,
              help="A hotfix branch: let spec.skipAnalysis through (refused otherwise).")
def command(repo: str, base: str, head: str, fmt: str, allow_skip_analysis: bool) -> int:
    """Show what a change to the config repo will do, for review."""
    git = GitRepo.open_local(repo)
    try:
        if base.startswith("-") or head.startswith("-"):
            raise ValueError("a ref cannot start with '-'")
        base_sha, head_sha = git.git("rev-parse", f"{base}^{{commit}}", f"{head}^{{commit}}").split()   # one process
    except (GitCommandError, ValueError):
        raise click.UsageError(f"unknown ref: {base} or {head}") from None
    prefixes = ("releases/", "sluice.yaml")
    base_ids, head_ids = git.blob_ids(base_sha, prefixes), git.blob_ids(head_sha, prefixes)
    changed = {p for p in base_ids.keys() | head_ids.keys() if base_ids.get(p) != head_ids.get(p)}
    if "sluice.yaml" in changed:   # repo-wide settings touch every release
        changed |= {p for p in head_ids if p.startswith("releases/")}
    # files the change did not touch are parsed once, not twice, and not again on the next plan
    with collector_paused(), kept_cache("plan:" + str(git.workdir.resolve())) as cache:
        kept = {p: state[0] for p, state in cache.state().items()}
        base_files, head_files = git.tree_files(base_ids), git.tree_files(head_ids)
        # one read (one cat-file) of what the cache does not hold, at both commits
        head_files.prefetch([p for ids in (base_ids, head_ids) for p, blob in ids.items()
                             if kept.get(p) != blob or not p.startswith("releases/")], also=base_ids)
        plan = build_plan(load_files(base_files, cache=cache, blobs=base_ids),
                          load_files(head_files, cache=cache, blobs=head_ids), changed,
                          allow_skip_analysis=allow_skip_analysis, files=head_files)
    if fmt == "json":
        click.echo(json.dumps(plan.to_json(), indent=2))
    elif fmt == "markdown":
        click.echo(markdown(plan), nl=False)
    else:
        click.echo(text(plan), nl=False)
    return plan.exit_code

