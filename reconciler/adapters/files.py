"""Read a checked-out config repo from a directory into ``{path: bytes}``.

Only what the loader looks at is read: ``sluice.yaml``, the release files and
the config files next to them (``releases/<ns>/<name>/**``).
Symlinks are never followed (a spec cannot pull in /etc/passwd), and a file
over the size limit is read only up to limit + 1 bytes, enough for the
loader to report it without holding 50 MB in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.core.loader import RELEASES_DIR, SETTINGS_FILE
from reconciler.core.parse import MAX_BYTES
from reconciler.errors import ConfigError


def _read(path: Path, limit: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(limit + 1)


def read_tree(root: str | os.PathLike, *, limit: int = MAX_BYTES) -> dict[str, bytes]:
    """The repo's settings and release files, keyed by repo-relative posix path."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"{root}: not a directory")
    out: dict[str, bytes] = {}
    settings = base / SETTINGS_FILE
    if settings.is_file() and not settings.is_symlink():
        out[SETTINGS_FILE] = _read(settings, limit)
    releases = base / RELEASES_DIR
    if not releases.is_dir() or releases.is_symlink():
        return out
    for dirpath, dirnames, filenames in os.walk(releases, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            # releases/<ns>/<name>.yaml, and any file under releases/<ns>/<name>/ (spec.config.files)
            in_config = len(full.relative_to(releases).parts) > 2
            if (in_config or name.endswith((".yaml", ".yml"))) and not full.is_symlink() and full.is_file():
                out[full.relative_to(base).as_posix()] = _read(full, limit)
    return out
