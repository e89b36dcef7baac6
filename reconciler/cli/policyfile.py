"""Read the controller's ``--policy-file`` for ``sluice run`` and ``sluice validate``.

A policy that cannot be read or has problems is an error that stops the
command (exit non-zero, every problem at file:line): running without the
policy an operator meant to apply would widen access (invariant 9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reconciler.core import policy as policies


def read_policy(path: str | None) -> dict[str, Any] | None:
    """The parsed policy at ``path``; None when no policy file is configured."""
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read the policy file: {exc.strerror}") from None
    doc, problems = policies.load(data, path)
    if problems:
        raise click.ClickException("the policy file is invalid:\n" + "\n".join(map(str, problems)))
    return doc
