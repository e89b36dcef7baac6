"""``sluice demo``: a full rollout of a copy of sample-repo on this machine,
with no cluster (see reconciler/demo.py for what it does)."""

from __future__ import annotations

import click

from reconciler.demo import run_demo


@click.command()
@click.option("--timeout", default=50.0, show_default=True, help="Seconds to let the rollouts run.")
def command(timeout: float) -> int:
    """Walk a canary to promotion (and, with Prometheus, a bad one to rollback)."""
    return run_demo(click.echo, timeout=timeout)
