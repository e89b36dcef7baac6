"""Shared timing helpers for the benchmarks.

Every benchmark prints JSON lines, one per figure:
``{"name", "n", "median", "min", "max", "unit", "floor", "floor_name", "ratio", ...}``
where ``floor`` is a true lower bound of the same work at the same N, measured
in the same run (git's own ``log -- <path>`` for history, parsing the same
bytes alone for validate+render, the raw LIST calls plus a no-op fetch for a
no-op pass...), ``floor_name`` says what it is, and ``ratio`` is
``median / floor``; ratios hold on a noisy machine where absolute times drift.
``bench/run.py`` collects the lines into ``bench/results.json`` and a table.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Callable


def measure(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def figure(name: str, n: int, samples: list[float], *, unit: str = "s",
           floor: list[float] | float | None = None, **extra: object) -> dict:
    """One result row; ``floor`` samples (or a value) give the ratio."""
    med = statistics.median(samples)
    row: dict = {"name": name, "n": n, "median": round(med, 6), "min": round(min(samples), 6),
                 "max": round(max(samples), 6), "unit": unit, "samples": len(samples)}
    if floor is not None:
        fl = statistics.median(floor) if isinstance(floor, list) else float(floor)
        row["floor"] = round(fl, 6)
        row["ratio"] = round(med / fl, 2) if fl > 0 else None
    else:
        row["floor"] = None
        row["ratio"] = None
    row.update(extra)
    return row


def emit(row: dict) -> None:
    """Print one figure as a JSON line (what bench/run.py collects)."""
    print(json.dumps(row), flush=True)
    print(f"  {row['name']} n={row['n']}: median {row['median']}{row['unit']}"
          f" (min {row['min']}, max {row['max']})"
          + (f" floor {row['floor']} ratio {row['ratio']}" if row.get("floor") else ""),
          file=sys.stderr, flush=True)
