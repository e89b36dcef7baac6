"""``sluice rollback RELEASE [--to REVISION] --reason TEXT``: an emergency (writes).

Commits ``spec.rollback: <revision>@<n>``: at the controller's next pass that
revision of the rollback window (``status.previous``, the last
``spec.rollbackWindow`` stable revisions) serves 100% at once, with no canary:
it already ran at 100%. The target that was running or rolling out is
recorded as rolled back, so it does not start again until ``sluice retry`` or
a new target. Default: the newest revision of the window.
"""

from __future__ import annotations

import click

from reconciler.cli.common import load_repo_dir, pick_release
from reconciler.cli.steering import steer
from reconciler.core import revision


def request(rel, to: str | None) -> str:
    """The ``spec.rollback`` value: ``<revision>@<n>``, n one more than the last request's."""
    window = [p for p in rel.status.get("previous") or () if revision.name_of(p) in (rel.status.get("snapshots") or {})]
    names = [revision.name_of(p) for p in window]
    if not names:
        raise click.UsageError(f"{rel.key} has no earlier revision to return to (status.previous is empty)")
    want = to or names[0]
    if want not in names:
        raise click.UsageError(f"{want!r} is not in the rollback window of {rel.key}: {', '.join(names)}")
    last = str(rel.spec.get("rollback") or "")
    n = int(last.rpartition("@")[2]) + 1 if last.rpartition("@")[2].isdigit() else 1
    return f"{want}@{n}"


@click.command(name="rollback", help="Emergency: return RELEASE to a recent stable revision at once, no canary "
                                     "(commits spec.rollback).")
@click.argument("release")
@click.option("--to", "to", default=None, help="Revision name from the rollback window (default: the newest).")
@click.option("--reason", required=True, help="Why: goes into the commit message.")
@click.option("--repo", default=".", show_default=True, help="Local clone of the config repo.")
@click.option("--push", is_flag=True, help="Push the commit to the clone's upstream.")
def command(release: str, to: str | None, reason: str, repo: str, push: bool) -> int:
    rel = pick_release(load_repo_dir(repo), release)
    value = request(rel, to)
    return steer(repo, release, {"rollback": value},
                 f"rollback --to {value.partition('@')[0]}: {' '.join(reason.split())}", push)
