"""``sluice hook loadtest --listen 127.0.0.1:8080``: receivers for rollout hooks.

``loadtest`` answers step and pre-rollout hooks (docs/hooks.md "Load
testing") and generates the load their metadata asks for, within the bounds
given here; the logic is reconciler.adapters.loadtest.
"""

from __future__ import annotations

import signal
import threading

import click

from reconciler.adapters.loadtest import Limits, Receiver
from reconciler.core.durations import parse_duration


@click.group()
def command() -> None:
    """Receivers for rollout hooks (docs/hooks.md)."""


@command.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True,
              help="host:port to listen on (0.0.0.0:8080 in a pod, behind its Service).")
@click.option("--max-rps", default=Limits.max_rps, show_default=True, type=click.FloatRange(min=0.1, max=10000),
              help="Most requests per second one hook may ask for.")
@click.option("--max-duration", default="10m", show_default=True, help="Longest load one hook may ask for.")
@click.option("--concurrency", default=Limits.concurrency, show_default=True, type=click.IntRange(1, 256),
              help="Requests in flight per load at most.")
@click.option("--max-loads", default=Limits.max_loads, show_default=True, type=click.IntRange(1, 64),
              help="URLs loaded at once at most.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="GLOB",
              help="Hosts a load may call (repeatable, globs like *.shop.svc.cluster.local); default any.")
def loadtest(listen, max_rps, max_duration, concurrency, max_loads, allow_hosts) -> int:
    """Generate the load a hook's metadata asks for (url, rps, duration)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not host:port", param_hint="--listen")
    try:
        seconds = parse_duration(max_duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-duration") from None
    limits = Limits(max_rps=max_rps, max_duration=seconds, concurrency=concurrency, max_loads=max_loads,
                    allow_hosts=tuple(allow_hosts))
    try:
        receiver = Receiver(host.strip("[]") or "127.0.0.1", int(port), limits).start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    click.echo(f"sluice: load-test hook receiver on {receiver.url} (at most {max_rps:g} rps for "
               f"{max_duration}; Ctrl-C to stop)", err=True)
    done.wait()
    receiver.stop()
    return 0
