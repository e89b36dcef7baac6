"""``sluice status [REPO|URL] [-o table|wide|json|yaml] [--watch] [--wait RELEASE --timeout D]``

Read-only: one line per release from the committed specs and their status
blocks. A URL is cloned into Sluice's cache dir; a local checkout is read in
place and never written.

JSON (``-o json``), versioned::

    {"apiVersion": "sluice.dev/status/v1",
     "releases": [{"namespace", "name", "strategy", "phase", "weight", "step", "steps",
                   "stable", "new", "message", "lastChange": {"author", "at"} | null,
                   "waitingFor": "promotion" | "step-N" | null (the gate a WaitingApproval rollout waits on),
                   "valid": true, "problems": [],
                   "shard": N, "owner": "<replica>" | null (only with --shards)}]}

``--shards`` reads the shard Leases of ``sluice run --shards`` (one LIST of
coordination.k8s.io Leases in ``--lease-namespace``, with ``--kubeconfig``/
``--context`` or in-cluster access): each release's shard and the replica that
holds it now (null: nobody, e.g. a replica just died and its Lease has not
expired yet).

``--wait RELEASE`` exits 0 when the release is promoted (its target is
stable), 1 when rolled back, aborted or failed, 2 on timeout.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click
import yaml

from reconciler.cli.source import open_source
from reconciler.core.durations import parse_duration
from reconciler.core.model import DOWN_PHASES, LIVE_PHASES
from reconciler.readmodel import age, rows

STATUS_API = "sluice.dev/status/v1"
DOWN = DOWN_PHASES
LIVE = LIVE_PHASES


def add_live(items: list[dict], source, kubeconfig: str | None, context: str | None) -> None:
    """SYNC (does the cluster match git?) and HEALTH (are the versions ready?),
    from LIST calls only, shown apart as Argo CD shows sync and health."""
    from reconciler.adapters.cluster import Cluster, version_readiness
    from reconciler.core.diff import diff, release_of
    from reconciler.core.render import render
    loaded = source.load()
    cluster = Cluster.connect(kubeconfig=kubeconfig, context=context)
    live = cluster.list_managed({r.namespace for r in loaded.releases})
    by_release: dict = {}
    for ref, obj in live.items():
        by_release.setdefault(release_of(obj), {})[ref] = obj
    rels = loaded.by_key()
    for item in items:
        rel = rels.get(f"{item['namespace']}/{item['name']}")
        if rel is None:
            item["sync"], item["health"] = "Unknown", "Unknown"
            continue
        mine = by_release.get(rel.key, {})
        actions = diff(render(rel, loaded.settings), mine)
        item["sync"] = "Synced" if not actions else f"OutOfSync ({len(actions)})"
        states = {v: r.state for v, r in version_readiness(rel, live).items()}
        bad = {v: s for v, s in states.items() if s != "ready"}
        item["health"] = "Healthy" if not bad else "Degraded: " + ", ".join(f"{v} {s}" for v, s in sorted(bad.items()))


def add_shards(items: list[dict], kubeconfig: str | None, context: str | None, namespace: str, name: str) -> None:
    """SHARD and OWNER of each release, from the Leases of ``sluice run --shards`` (read-only)."""
    from reconciler.adapters.cluster import Cluster
    from reconciler.adapters.shards import read_owners
    from reconciler.core.shards import shard_of
    from reconciler.errors import ClusterError
    try:
        n, owners = read_owners(Cluster.connect(kubeconfig=kubeconfig, context=context).api, namespace, name)
    except ClusterError as exc:
        raise click.UsageError(f"--shards needs cluster access to read the Leases: {exc}") from None
    if n is None:
        raise click.ClickException(f"--shards: no replica holds a shard Lease {name}-shard-* in {namespace} "
                                   "(is sluice run started with --shards and the same --lease-name?)")
    for item in items:
        item["shard"] = shard_of(f"{item['namespace']}/{item['name']}", n)
        item["owner"] = owners.get(item["shard"])


def table(items: list[dict], wide: bool = False) -> str:
    now = datetime.now(timezone.utc)
    head = ["NAMESPACE", "NAME", "STRATEGY", "PHASE", "WEIGHT", "STEP", "STABLE", "NEW", "LAST CHANGE", "AGE"]
    live = any("sync" in r for r in items)
    if live:
        head += ["SYNC", "HEALTH"]
    sharded = any("shard" in r for r in items)
    if sharded:
        head += ["SHARD", "OWNER"]
    if wide:
        head.append("MESSAGE")
    lines = [head]
    for r in items:
        last = r["lastChange"]
        phase = r["phase"] + (f" (held: {r['heldBy']})" if r.get("heldBy") else "")
        row = [r["namespace"], r["name"], r["strategy"] or "-", phase + ("" if r.get("readinessChecked", True) else "*"),
               "-" if r["weight"] is None else f"{r['weight']}%",
               f"{r['step']}/{r['steps']}" if r["steps"] and r["phase"] in LIVE else "-", r["stable"] or "-", r["new"] or "-",
               f"{last['author']} {age(last['at'], now)} ago" if last else "-", age(r["since"], now)]
        if live:
            row += [r.get("sync", "-"), r.get("health", "-")]
        if sharded:
            row += [r.get("shard", "-"), r.get("owner") or "-"]
        if wide:
            row.append(r["message"] or "")
        lines.append(row)
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)
    if not all(r.get("readinessChecked", True) for r in items):
        text += ("\n\n* readiness not checked: the controller (--target git) had no cluster access when it wrote "
                 "this status; a version that never becomes ready is not rolled back (docs/operations.md)")
    return text


def _render(items, output):
    if output == "json":
        return json.dumps({"apiVersion": STATUS_API, "releases": items}, indent=2)
    if output == "yaml":
        return yaml.safe_dump({"apiVersion": STATUS_API, "releases": items}, sort_keys=False)
    return table(items, wide=output == "wide")


@click.command()
@click.argument("repo", required=False, default=".")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table", show_default=True)
@click.option("--branch", default="main", show_default=True, help="Branch of a URL to read.")
@click.option("--watch", is_flag=True, help="Refresh in place every --every seconds (Ctrl-C to stop).")
@click.option("--every", default=2.0, show_default=True, help="Seconds between refreshes of --watch and --wait.")
@click.option("--wait", "wait_for", metavar="RELEASE", help="Block until RELEASE is promoted (0) or rolled back (1).")
@click.option("--timeout", default="10m", show_default=True, help="Give up --wait after this long (exit 2).")
@click.option("--live", is_flag=True, help="Add SYNC and HEALTH from the cluster (LIST calls only).")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="kubeconfig for --live.")
@click.option("--context", default=None, help="kubeconfig context for --live.")
@click.option("--shards", "sharded", is_flag=True,
              help="Add each release's SHARD and the replica that holds it (OWNER) from the Leases of "
                   "sluice run --shards.")
@click.option("--lease-namespace", default="sluice-system", show_default=True, help="Namespace of the Leases (--shards).")
@click.option("--lease-name", default="sluice", show_default=True, help="--lease-name of sluice run (--shards).")
def command(repo, output, branch, watch, every, wait_for, timeout, live, kubeconfig, context, sharded,
            lease_namespace, lease_name) -> int:
    """Show every release's rollout state, read-only."""
    source = open_source(repo, branch)
    def render_rows(src):
        items = rows(src)
        if live:
            add_live(items, src, kubeconfig, context)
        if sharded:
            add_shards(items, kubeconfig, context, lease_namespace, lease_name)
        return items
    if wait_for:
        deadline = time.monotonic() + parse_duration(timeout)
        while True:
            items = rows(source)
            hit = [r for r in items if f"{r['namespace']}/{r['name']}" == wait_for or r["name"] == wait_for]
            if not hit:
                raise click.UsageError(f"no release {wait_for!r}")
            r = hit[0]
            if r["phase"] in DOWN:
                click.echo(f"{wait_for}: {r['phase']}: {r['message'] or ''}")
                return 1
            if r["phase"] == "Promoted" and r["stable"] == r["target"]:
                click.echo(f"{wait_for}: promoted {r['stable']}")
                return 0
            if time.monotonic() > deadline:
                click.echo(f"{wait_for}: still {r['phase']} after {timeout}", err=True)
                return 2
            time.sleep(every)
    if watch:
        while True:
            click.echo("\x1b[H\x1b[2J" + _render(render_rows(source), output))
            time.sleep(every)
    click.echo(_render(render_rows(source), output))
    return 0
