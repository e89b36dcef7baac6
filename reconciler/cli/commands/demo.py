"""``sluice demo``: a full rollout of a copy of sample-repo on this machine,
with no cluster (see reconciler/demo.py for what it does)."""

from __future__ import annotations

import os
import sys

import click

from reconciler.demo import run_demo


@click.command()
@click.option("--timeout", default=50.0, show_default=True, help="Seconds to let the rollouts run.")
@click.option("--serve/--no-serve", default=None,
              help="Keep serving the dashboard after the demo until Ctrl-C (default: in a terminal, not under CI).")
def command(timeout: float, serve: bool | None) -> int:
    """Walk a canary to promotion (and, with Prometheus, a bad one to rollback)."""
    if serve is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("CI", "").lower() != "true"
    return run_demo(click.echo, timeout=timeout, keep_serving=serve)
