"""The steering a person could do on one release, as the page shows it: the
``sluice`` command to run in their clone, and the spec key its commit sets.

The page never writes: it only names commands. The values are the ones the
steering commands themselves compute (approve's gate, rollback's window),
so the page and the command never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from reconciler.cli.commands.approve import approval, rolling_out
from reconciler.cli.commands.rollback import request
from reconciler.core import revision
from reconciler.core.model import LIVE_PHASES, Release


@dataclass(frozen=True)
class Action:
    verb: str          # pause, resume, approve, promote, rollback, abort
    command: str       # what to type in a clone of the config repo
    change: str        # what the commit changes: ``spec.paused: true``
    why: str           # when a person would do it


def actions(rel: Release) -> list[Action]:
    """The steering that applies to ``rel`` now (none while nothing can be steered)."""
    key, phase = rel.key, rel.status.get("phase")
    out = []
    live = phase in LIVE_PHASES
    if live and phase != "Paused" and not rel.spec.get("paused"):
        out.append(Action("pause", f"sluice pause {key} --push", "spec.paused: true",
                          "freeze the rollout at its current weight"))
    if phase == "Paused" or rel.spec.get("paused"):
        out.append(Action("resume", f"sluice resume {key} --push", "spec.paused: false", "go on from where it stopped"))
    if phase == "WaitingApproval":
        try:
            value = approval(rel, None, False)
        except click.UsageError:
            value = None
        if value:
            out.append(Action("approve", f"sluice approve {key} --push", f"spec.approve: {value}",
                              f"let it past the gate it waits for ({rel.status.get('waitingFor') or 'promotion'})"))
    if live:
        new = rolling_out(rel)
        if not revision.same(new, rel.status.get("stable")):
            out.append(Action("promote", f'sluice promote {key} --full --reason "..." --push',
                              f"spec.promote: {revision.name_of(new)}",
                              "emergency: 100% now, skipping the remaining steps and analysis"))
        out.append(Action("abort", f"sluice abort {key} --push", "spec.abort: true",
                          "roll the new version back to the stable one"))
    try:
        value = request(rel, None)
    except click.UsageError:
        value = None
    if value:
        out.append(Action("rollback", f'sluice rollback {key} --reason "..." --push', f"spec.rollback: {value}",
                          f"emergency: return to {value.partition('@')[0]} at once, no canary"))
    return out
