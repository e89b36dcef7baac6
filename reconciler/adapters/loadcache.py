"""The loader's cache (core.loader.LoadCache) kept on disk for the read-only CLI.

``sluice status`` and ``sluice plan`` are new processes each time; without this
they would parse, validate and check every release file on every call. The
cache keeps each file's checked outcome by path and blob id (a file whose bytes did not change is not
parsed again), so one file kept per repo is enough: it lives in Sluice's cache
directory (never in a person's checkout), is replaced atomically, readable by
its owner only, and thrown away when it was written by another version of
Sluice's code (a changed check must not answer from an old result) or cannot
be read. Losing it costs time, never correctness.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path

import reconciler
from reconciler.core.bulk import collector_paused
from reconciler.core.loader import LoadCache

log = logging.getLogger("sluice.loadcache")

FORMAT = 1


def _code_stamp() -> str:
    """What the cached results were computed by: the core's and the schemas' files."""
    base = Path(reconciler.__file__).parent
    h = hashlib.sha256(f"{FORMAT}".encode())
    for path in sorted([*base.glob("core/*.py"), *base.glob("schemas/*.json")]):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_file(root: Path, what: str) -> Path:
    """The cache file for the repo ``what`` (a path or URL) under ``root``."""
    return root / "loads" / (hashlib.sha256(what.encode()).hexdigest()[:24] + ".pickle")


class DiskLoadCache:
    """``open()`` a LoadCache from ``path`` (a fresh one when missing, stale or
    unreadable), use it, then ``save()`` it back."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stamp = _code_stamp()

    def open(self) -> LoadCache:
        try:
            with open(self.path, "rb") as fh, collector_paused():   # ~100,000 objects, all kept
                stamp, cache = pickle.load(fh)
        except FileNotFoundError:
            return LoadCache()
        except Exception as exc:   # noqa: BLE001 - a damaged cache is a cold start, never an error
            log.debug("load cache %s unreadable (%s): starting cold", self.path, exc)
            return LoadCache()
        if stamp != self._stamp or not isinstance(cache, LoadCache):
            return LoadCache()
        return cache

    def save(self, cache: LoadCache) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".load-", suffix=".tmp")
            try:
                kept = copy.copy(cache)
                kept._items = {}   # parse results by blob: the per-path entries hold what a next call needs
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump((self._stamp, kept), fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:   # a read-only or full cache dir: the next call starts cold
            log.debug("cannot keep the load cache at %s: %s", self.path, exc)
