"""Bulk building of long-lived data without the cyclic garbage collector.

Loading 10,000 release files or decoding the LIST bodies of ~70,000 live objects
builds millions of containers that all stay alive; the cyclic collector, which
runs every few hundred allocations and scans older generations as they grow,
rescanned everything still alive again and again: it doubled a load and
quadrupled the LISTs at 5,000 releases. None of that data holds reference
cycles, so collection waits until the block is done (refcounting frees as
usual). Nesting and threads are safe: only the outermost block that found the
collector on turns it back on, so it is never left off.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
