"""``sluice promote RELEASE --full --reason TEXT``: an emergency (writes).

Commits ``spec.promote: <revision>``: the running rollout goes to 100% at the
controller's next pass, skipping its remaining steps, gates and analysis (it
still waits for the new revision to be ready). The commit carries the
person's name (their git identity) and their reason.
"""

from __future__ import annotations

import click

from reconciler.cli.commands.approve import rolling_out
from reconciler.cli.common import load_repo_dir, pick_release
from reconciler.cli.steering import steer
from reconciler.core import revision
from reconciler.core.model import LIVE_PHASES


@click.command(name="promote", help="Emergency: take RELEASE's rollout to 100% now, skipping its remaining steps "
                                    "and analysis (commits spec.promote).")
@click.argument("release")
@click.option("--full", is_flag=True, required=True, help="Required: say that steps and analysis are skipped.")
@click.option("--reason", required=True, help="Why: goes into the commit message.")
@click.option("--repo", default=".", show_default=True, help="Local clone of the config repo.")
@click.option("--push", is_flag=True, help="Push the commit to the clone's upstream.")
def command(release: str, full: bool, reason: str, repo: str, push: bool) -> int:
    rel = pick_release(load_repo_dir(repo), release)
    if rel.status.get("phase") not in LIVE_PHASES:
        # a request left lying around would fire at some later rollout, skipping its analysis
        raise click.UsageError(f"{rel.key}: no rollout is running (phase {rel.status.get('phase', 'none')}); "
                               "promote --full acts on a running rollout only")
    new = rolling_out(rel)
    if revision.same(new, rel.status.get("stable")):
        raise click.UsageError(f"{rel.key}: {revision.display(new)} already serves 100%")
    name = revision.name_of(new)
    return steer(repo, release, {"promote": name}, f"promote --full {name}: {' '.join(reason.split())}", push)
