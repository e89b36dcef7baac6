"""``sluice history RELEASE [--repo REPO|URL] [-o table|json]``: the promotion
history of one release, read from git, with a weight-over-time chart.

Read-only. Each record is one commit that touched the release's file:
Sluice's own (start, advance, check-failed, hold, pause, resume,
wait-approval, approve, promote, rollback, abort, finalize) with the weights
and the metric values that decided it, and humans' edits (``edit``) with
their author and subject.

JSON (``-o json``), versioned::

    {"apiVersion": "sluice.dev/history/v1", "release": "ns/name",
     "records": [{"commit", "at", "author", "email", "action", "subject", "bySluice",
                  "weight", "previousWeight", "step", "version", "stable", "phase",
                  "reason", "evidence": [{"name", "value", "min"?, "max"?, "equals"?, "notEquals"?,
                                          "tolerance"?, "stable"?, "window"?, "provider"?, "query"?,
                                          "dryRun"?, "ok", "outcome"?}],
                  "hooks": [{"name", "provider", "type", "value", "took"?, "at"?, "attempts"?, "ok"}]}]}
    (hooks: the fire-and-record hook results the commit records, Sluice-Hook trailers)
"""

from __future__ import annotations

import json

import click

from reconciler.cli.source import open_source
from reconciler.core.history import HISTORY_API
from reconciler.core.messages import evidence_words, hook_words
from reconciler.readmodel import weight_points

BAR = 40


def chart(records) -> list[str]:
    """One bar per record that set a weight: the new version's share of traffic."""
    out = []
    for r in weight_points(records):
        filled = round(BAR * r.weight / 100)
        out.append(f"{r.at[:19].replace('T', ' ')}  {'█' * filled}{'·' * (BAR - filled)} {r.weight:>3}%  {r.action}")
    return out


@click.command()
@click.argument("release")
@click.option("--repo", default=".", show_default=True, help="Config repo: local checkout or URL.")
@click.option("--branch", default="main", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(release, repo, branch, output) -> int:
    """Show every step, promotion and rollback of RELEASE (ns/name or name)."""
    source = open_source(repo, branch)
    if source.repo is None:
        raise click.UsageError(f"{repo} is not a git repository: history lives in git")
    if source.url:
        source.repo.sync()
    if "/" not in release:
        loaded = source.load()
        hits = [r.key for r in loaded.releases if r.name == release]
        if len(hits) != 1:
            raise click.UsageError(f"release {release!r} is {'ambiguous' if hits else 'unknown'}: use namespace/name")
        release = hits[0]
    records = source.repo.history(release)
    if output == "json":
        click.echo(json.dumps({"apiVersion": HISTORY_API, "release": release,
                               "records": [r.to_json() for r in records]}, indent=2))
        return 0
    if not records:
        click.echo(f"no history for {release}")
        return 0
    for r in records:
        who = "" if r.by_sluice else f"  by {r.author}"
        click.echo(f"{r.at[:19].replace('T', ' ')}  {r.commit[:8]}  {r.action:<13} {r.subject}{who}")
        if r.evidence:
            click.echo("    " + "; ".join(evidence_words(e) for e in r.evidence))
        if getattr(r, "hooks", None):
            click.echo("    hooks: " + "; ".join(hook_words(h) for h in r.hooks))
    bars = chart(records)
    if bars:
        click.echo("\nweight of the new version over time")
        click.echo("\n".join(bars))
    return 0
