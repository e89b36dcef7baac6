"""``sluice validate [REPO] [-o text|json]``: check every release at once.

Text output: one problem per line, ``path:line:col: message`` (path relative
to REPO), on stdout; a one-line summary on stderr. Exit 0 when everything is
valid, 1 otherwise. Read-only.

JSON output (``-o json``), versioned, stable for scripts::

    {
      "apiVersion": "sluice.dev/validate/v1",
      "valid": false,
      "releases": [{"release": "bookinfo/reviews", "file": "releases/bookinfo/reviews.yaml",
                    "strategy": "canary", "valid": true}],
      "problems": [{"file": "...", "line": 3, "column": 5, "message": "...",
                    "path": ["spec", "strategy"], "release": "bookinfo/reviews"}]
    }
"""

from __future__ import annotations

import json

import click

from reconciler.cli.common import load_repo_dir
from reconciler.core.loader import key_from_path


@click.command()
@click.argument("repo", required=False, default=".", type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(repo: str, output: str) -> int:
    """Validate every release spec and sluice.yaml; print path:line:col: message."""
    loaded = load_repo_dir(repo)
    if output == "json":
        rows = [{"release": r.key, "file": r.path, "strategy": r.strategy_kind, "valid": True}
                for r in loaded.releases]
        rows += [{"release": key_from_path(p), "file": p, "strategy": None, "valid": False}
                 for p in loaded.invalid]
        doc = {
            "apiVersion": "sluice.dev/validate/v1",
            "valid": not loaded.problems,
            "releases": sorted(rows, key=lambda r: r["file"]),
            "problems": [p.to_json() for p in loaded.problems],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        for problem in loaded.problems:
            click.echo(str(problem))
        bad = len(loaded.invalid)
        total = len(loaded.releases) + bad
        click.echo(f"{total} release(s): {total - bad} valid, {bad} invalid"
                   + (f"; {len(loaded.problems)} problem(s)" if loaded.problems else ""), err=True)
    return 1 if loaded.problems else 0
