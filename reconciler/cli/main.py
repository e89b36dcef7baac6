"""``sluice``: builds the command group and maps errors to exit codes.

Each command lives in ``reconciler/cli/commands/<name>.py`` and exposes a
click command named ``command``. Read-only commands (validate, render, plan,
status, history, ui) never write to the repo, the cluster or anywhere else;
steering commands (pause, resume, abort, approve, retry, and the emergency
promote --full and rollback) are kept apart.

Exit codes: 0 ok; 1 invalid input or a failed check; 2 "changes planned"
(plan only) or usage error (click); 3 an unexpected internal error.
"""

from __future__ import annotations

import importlib
import sys

import click

from reconciler import __version__
from reconciler.errors import SluiceError

# Order is the order of `sluice --help`.
COMMANDS = (
    "validate", "render", "plan", "status", "history", "ui",
    "pause", "resume", "abort", "approve", "retry", "promote", "rollback",
    "run", "demo", "hook",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sluice")
def cli() -> None:
    """Sluice: GitOps progressive delivery for Kubernetes and Istio."""


for _name in COMMANDS:
    try:
        _mod = importlib.import_module(f"reconciler.cli.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command not built yet
        if exc.name != f"reconciler.cli.commands.{_name}":
            raise
        continue
    cli.add_command(_mod.command, _name)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="sluice", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except SluiceError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except BrokenPipeError:
        return 0
    # Commands return their exit code (pre-commit style); None means success.
    return rv if isinstance(rv, int) else 0


def run() -> None:  # pragma: no cover - console entry
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
