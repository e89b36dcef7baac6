"""``make bench``: every headline figure beside its floor, in about 10 minutes.

Runs each benchmark script, collects its JSON lines into bench/results.json
({name, n, median, min, max, unit, floor, ratio, ...} per figure) and writes
bench/results.md, the table the README shows, with the targets and how each
figure grows with N.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = [
    ("bench_load.py", ["10", "100", "1000", "5000"]),
    ("bench_git.py", ["1000", "100000"]),
    ("bench_controller.py", ["10", "100", "1000"]),
    ("bench_ui.py", ["100", "1000"]),
]
TARGETS = {
    ("validate+render", 1000): "< 2 s",
    ("no-op reconcile pass", 1000): "< 1 s, 1 LIST per kind per namespace, 0 writes",
    ("push-to-applied via webhook", 1): "p50 < 1 s",
    ("push-to-applied via watchdog", 1): "p50 < 1 s",
    ("failed check -> rollback applied", 1): "< 1 s",
    ("idle CPU of sluice run, 100 releases mid-rollout (1 m steps)", 100): "as at rest (issue 12)",
    ("status", 1000): "< 0.5 s",
    ("history of one release", 100000): "< 0.3 s (issue 3), < 0.5 s (issue 7)",
    ("plan of a one-release change", 1000): "< 1 s",
    ("controller peak RSS (run --once)", 1000): "< 150 MB",
    ("dashboard page load (browser)", 1000): "< 1 s",
}


def growth(rows: list[dict]) -> dict[str, str]:
    """Linear or worse, from the largest two sizes of each figure."""
    out = {}
    by = {}
    for r in rows:
        by.setdefault(r["name"], []).append(r)
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["n"])
        if len(rs) < 2 or rs[-2]["median"] <= 0:
            continue
        a, b = rs[-2], rs[-1]
        k = (b["median"] / a["median"]) / (b["n"] / a["n"])
        out[name] = "sub-linear" if k < 0.7 else "linear" if k < 1.5 else "worse than linear"
    return out


def table(rows: list[dict]) -> str:
    grow = growth(rows)
    lines = ["| figure | N | median | min..max | floor | ratio | target | growth |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = r["unit"]
        fmt = (lambda v: f"{v * 1000:.1f} ms") if unit == "s" else (lambda v: f"{v:.1f} {unit}")
        target = TARGETS.get((r["name"], r["n"]), "")
        extra = f" ({r['requests']} requests, {r['writes']} writes)" if "requests" in r else ""
        lines.append(f"| {r['name']}{extra} | {r['n']} | {fmt(r['median'])} | {fmt(r['min'])}..{fmt(r['max'])} | "
                     f"{fmt(r['floor']) if r.get('floor') is not None else '-'} | {r.get('ratio') or '-'} | {target} | "
                     f"{grow.get(r['name'], '')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    rows, t0 = [], time.monotonic()
    for script, args in SCRIPTS:
        proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            print(f"{script} failed", file=sys.stderr)
            return 1
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    (HERE / "results.json").write_text(json.dumps({"machine": "see README", "seconds": round(time.monotonic() - t0),
                                                   "results": rows}, indent=2) + "\n")
    (HERE / "results.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
