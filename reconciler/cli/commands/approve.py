"""``sluice approve RELEASE [--step N | --promotion]``: commit ``spec.approve`` (writes).

Without a flag it approves the one gate the rollout waits for (``status.waitingFor``),
or, when none waits yet, every gate ahead (the bare name, as before);
``--step N`` approves the gates of steps up to N and never promotion; ``--promotion``
approves every gate including promotion. The value names the revision being rolled
out (``<revision>@N``, ``<revision>@promotion``), so an approval never carries over
to other content of the same version.
"""

from __future__ import annotations

import click

from reconciler.cli.common import load_repo_dir, pick_release
from reconciler.cli.steering import steer
from reconciler.core import revision
from reconciler.core.model import LIVE_PHASES, Release


def rolling_out(rel: Release) -> dict:
    """The revision a steering command acts on: the live canary, else the target."""
    canary = rel.status.get("canary")
    if canary and canary.get("version") and rel.status.get("phase") in LIVE_PHASES:
        return dict(canary)
    return revision.target(rel)


def approval(rel: Release, step: int | None, promotion: bool) -> str:
    """The ``spec.approve`` value, or a usage error saying why there is none."""
    name = revision.name_of(rolling_out(rel))
    if step is not None and promotion:
        raise click.UsageError("give --step N or --promotion, not both")
    if step is not None:
        return f"{name}@{step}"
    if promotion:
        return f"{name}@promotion"
    waiting = rel.status.get("waitingFor") if rel.status.get("phase") == "WaitingApproval" else None
    if not waiting:
        return name
    return f"{name}@{waiting[5:]}" if waiting.startswith("step-") else f"{name}@promotion"


@click.command(name="approve", help="Approve a gate of RELEASE's rollout (commits spec.approve): the gate it "
                                    "waits for, or --step N, or --promotion.")
@click.argument("release")
@click.option("--step", type=click.IntRange(min=1), default=None, help="Approve the gates of steps up to N.")
@click.option("--promotion", is_flag=True, help="Approve every gate, promotion to 100% included.")
@click.option("--repo", default=".", show_default=True, help="Local clone of the config repo.")
@click.option("--push", is_flag=True, help="Push the commit to the clone's upstream.")
def command(release: str, step: int | None, promotion: bool, repo: str, push: bool) -> int:
    rel = pick_release(load_repo_dir(repo), release)
    value = approval(rel, step, promotion)
    what = "approve" if "@" not in value else f"approve {value.partition('@')[2]} of {value.partition('@')[0]}"
    return steer(repo, release, {"approve": value}, what, push)
