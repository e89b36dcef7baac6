"""``sluice ui [REPO|URL] [--listen 127.0.0.1:8090] [--branch main] [--every 1] [--allow-host NAME]``

Read-only: serves the dashboard (docs/dashboard.md) of a local checkout (read
in place and watched: a new commit shows at once) or a URL (cloned into
Sluice's cache dir; its tip looked at with ``git ls-remote`` every ``--every``
seconds and fetched when it moved). It never writes to the repo; the pages
name the commands a person would run to steer. On loopback it answers only
requests addressed to a loopback name (DNS rebinding); ``--allow-host`` adds
names.
"""

from __future__ import annotations

import signal
import threading

import click

from reconciler.adapters.gitrepo import redact
from reconciler.ui.server import DashboardServer, allowed_hosts, dashboard_for


@click.command()
@click.argument("repo", required=False, default=".")
@click.option("--listen", default="127.0.0.1:8090", show_default=True,
              help="host:port to serve on (keep it on loopback; reach a pod with kubectl port-forward).")
@click.option("--branch", default="main", show_default=True, help="Branch of a URL to read.")
@click.option("--every", default=1.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between looks at a URL's tip (git ls-remote); it is fetched only when the tip moved.")
@click.option("--allow-host", "allow_host", multiple=True, metavar="NAME",
              help="Also answer requests whose Host header is NAME (repeatable). On loopback only "
                   "localhost, 127.0.0.1 and [::1] are answered otherwise (421), against DNS rebinding.")
def command(repo, listen, branch, every, allow_host) -> int:
    """Serve the read-only web dashboard of REPO (a checkout or a URL)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not host:port", param_hint="--listen")
    host = host.strip("[]") or "127.0.0.1"
    dash = dashboard_for(repo, branch, every=every, hosts=allowed_hosts(host, tuple(allow_host)))
    try:
        server = DashboardServer(dash, host, int(port)).start()
    except OSError as exc:
        dash.stop()
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    # a URL with a token in it never reaches the terminal (or its scrollback): as `sluice run` says it
    click.echo(f"sluice: dashboard of {redact(repo, ())} on {server.url} (read-only; Ctrl-C to stop)", err=True)
    done.wait()
    server.stop()
    return 0
