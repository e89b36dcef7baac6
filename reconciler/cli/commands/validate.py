"""``sluice validate [REPO] [-o text|json]``: check every release at once.

Text output: one problem per line, ``path:line:col: message`` (path relative
to REPO), on stdout; a one-line summary on stderr. Exit 0 when everything is
valid, 1 otherwise. A release whose status the controller would hold (see
docs/rollout.md, "A status that cannot be trusted") counts as invalid here.
Read-only.

JSON output (``-o json``), versioned, stable for scripts::

    {
      "apiVersion": "sluice.dev/validate/v1",
      "valid": false,
      "tenancy": {"source": "policy", "policyFile": "/etc/sluice/policy.yaml", "narrowedBy": "sluice.yaml"},
      "releases": [{"release": "bookinfo/reviews", "file": "releases/bookinfo/reviews.yaml",
                    "strategy": "canary", "valid": true}],
      "problems": [{"file": "...", "line": 3, "column": 5, "message": "...",
                    "path": ["spec", "strategy"], "release": "bookinfo/reviews"}]
    }

``tenancy.source`` says which tenancy applies: ``policy`` (``--policy-file``,
which ``sluice.yaml`` may narrow), ``sluice.yaml`` (the repo's own), or
``none``. The text output says the same on stderr.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from reconciler.adapters.files import read_tree
from reconciler.cli.policyfile import read_policy
from reconciler.core import policy as policies
from reconciler.core.decide import status_doubts
from reconciler.core.loader import key_from_path, load_files, locate


@click.command()
@click.argument("repo", required=False, default=".", type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--policy-file", envvar="SLUICE_POLICY_FILE", show_envvar=True, default=None,
              help="Validate within the controller's policy file, as `sluice run --policy-file` would.")
def command(repo: str, output: str, policy_file: str | None) -> int:
    """Validate every release spec and sluice.yaml; print path:line:col: message."""
    policy = read_policy(policy_file)
    files = read_tree(repo)
    loaded = load_files(files, policy=policy)
    now = datetime.now(timezone.utc)
    for rel in loaded.releases:   # a status the controller would hold, as it would report it
        doubts = status_doubts(rel, now)
        if doubts:
            loaded.problems.extend(locate(rel.path, files.get(rel.path, b""), doubts, rel.key))
            loaded.invalid[rel.path] = loaded.problems[-len(doubts):]
    tenancy = policies.describe(policy_file, policy, loaded.settings)
    if output == "json":
        rows = [{"release": r.key, "file": r.path, "strategy": r.strategy_kind, "valid": True}
                for r in loaded.releases]
        rows += [{"release": key_from_path(p), "file": p, "strategy": None, "valid": False}
                 for p in loaded.invalid]
        doc = {
            "apiVersion": "sluice.dev/validate/v1",
            "valid": not loaded.problems,
            "tenancy": tenancy,
            "releases": sorted(rows, key=lambda r: r["file"]),
            "problems": [p.to_json() for p in loaded.problems],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        for problem in loaded.problems:
            click.echo(str(problem))
        source = {"policy": f"the controller policy {policy_file}" + (", narrowed by sluice.yaml" if tenancy["narrowedBy"] else ""),
                  "sluice.yaml": "sluice.yaml " + ("(the policy file sets no tenancy)" if policy_file else "(no --policy-file)"),
                  "none": "none (" + ("the policy file sets no tenancy" if policy_file else "no --policy-file") + ", no sluice.yaml tenancy)"}
        click.echo(f"tenancy: {source[tenancy['source']]}", err=True)
        bad = len(loaded.invalid)
        total = len(loaded.releases) + bad
        click.echo(f"{total} release(s): {total - bad} valid, {bad} invalid"
                   + (f"; {len(loaded.problems)} problem(s)" if loaded.problems else ""), err=True)
    return 1 if loaded.problems else 0
