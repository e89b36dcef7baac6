"""``make bench``: every headline figure beside its floor, in under 10 minutes.

Runs each benchmark script (each runnable on its own: ``python bench/bench_x.py [N ...]``),
collects its JSON lines into bench/results.json ({name, n, median, min, max, unit,
floor, floor_name, ratio, ...} per figure), writes bench/results.md (the table, then
what each ratio means in words) and copies it into README.md between the
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers. When a script fails,
nothing is written: the table on disk stays the last true one, and the exit is 1.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Callable, NamedTuple

HERE = pathlib.Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SCRIPTS = [
    ("bench_load.py", ["1000", "10000"]),
    ("bench_git.py", ["1000", "100000"]),
    ("bench_controller.py", ["1000", "10000"]),
    ("bench_ui.py", ["100", "1000"]),
    # SHARD FAILOVER: the figure "shard failover" (a replica killed -> its releases moving again) is
    # being built with tests/test_shards.py; add its script here. Until then the table says "not measured".
]


class Target(NamedTuple):
    n: int                              # the size the target is stated at
    text: str
    met: Callable[[dict], bool] | None  # None: not machine-checked (shown as "-")


TARGETS: dict[str, Target] = {
    "no-op pass": Target(10000, "< 2 s, <= 1 LIST per kind per namespace, 0 writes, <= 1.5x floor",
                         lambda r: r["median"] < 2 and r["lists_per_kind_per_namespace"] <= 1 and r["writes"] == 0
                         and r["ratio"] <= 1.5),
    "pass after a one-file change": Target(10000, "< 0.3 s", lambda r: r["median"] < 0.3),
    "validate+render (cold)": Target(10000, "< 4 s, <= 2x floor", lambda r: r["median"] < 4 and r["ratio"] <= 2),
    "plan of a one-release change": Target(1000, "< 50 ms", lambda r: r["median"] < 0.05),
    "status": Target(1000, "< 100 ms", lambda r: r["median"] < 0.1),
    "history of one release": Target(100000, "< 50 ms, <= 1.5x git's own", lambda r: r["median"] < 0.05
                                     and r["ratio"] <= 1.5),
    "push -> applied via webhook": Target(1, "p50 < 150 ms", lambda r: r["median"] < 0.15),
    "controller peak RSS (sluice run --once)": Target(10000, "< 200 MB", lambda r: r["median"] < 200),
    "shard failover": Target(1, "< lease duration + 1 s", None),   # hook: measured by someone else's script
}

# What each ratio means, in words ({ratio} and {floor} are filled in from the largest N).
FLOOR_WORDS = {
    "no-op pass": "a no-op pass costs {ratio}x the least a pass must do to learn that nothing changed: one "
                  "no-op `git fetch` plus the raw LIST calls (one per kind per namespace) through the same "
                  "client against the same emulator, made as a pass makes them (the cyclic collector paused, "
                  "the last LIST's objects freed as the new ones replace them).",
    "pass after a one-file change": "the pass that picks up a one-file change costs {ratio}x its unavoidable "
                                    "part: fetching that one commit, parsing that one file and one server-side "
                                    "apply of the object it changed.",
    "validate+render (cold)": "validate+render costs {ratio}x parsing the very same bytes with libyaml's C loader "
                              "and nothing else (a tenth of the files take Sluice's hostile-input scan; the floor "
                              "does not): the rest is the scan, schema checks, rendering and serialising.",
    "plan of a one-release change": "plan costs {ratio}x parsing the changed file at both commits: the floor is "
                                    "the parse alone, without listing what changed or rendering it.",
    "status": "a repeat status (its load cache on disk) costs {ratio}x reading every release file of the "
              "checkout, which it must do to see what changed.",
    "status, cold (no load cache)": "status with no load cache costs {ratio}x parsing every release file alone.",
    "history of one release": "Sluice's history costs {ratio}x git's own `git log --format=%H -- <path>` of that "
                              "file on the same clone with the changed-paths commit-graph (the floor lists commit "
                              "ids only; history also reads and parses each record).",
    "controller peak RSS (sluice run --once)": "`sluice run --once` peaks at {ratio}x the memory of the "
                                               "interpreter with exactly the modules it imports, doing nothing.",
    "failed check -> rollback applied": "a rollback lands {ratio}x the cost of one query plus one server-side "
                                        "apply of the VirtualService after the bad metric becomes visible: the "
                                        "rest is waiting for the next check (a 2 s interval; half of it on "
                                        "average) and the pass around it.",
    "idle CPU of sluice run, mid-rollout and waiting for approval":
        "with half the releases mid-rollout and half waiting for approval (checked once a minute each) "
        "`sluice run` uses {ratio}x the CPU of the same process with the same releases at rest.",
}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.1f} {unit}".replace("% ", "%").replace(" %", " %")


def growth(rows: list[dict]) -> dict[str, str]:
    """How each figure grows with N, from its two largest sizes: the exponent k of
    median ~ N^k (k < 0.8 sub-linear, up to 1.2 linear, above that worse)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["name"], []).append(r)
    out = {}
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["n"])
        if len(rs) < 2 or rs[-2]["median"] <= 0 or rs[-1]["n"] == rs[-2]["n"]:
            continue
        a, b = rs[-2], rs[-1]
        k = math.log(b["median"] / a["median"]) / math.log(b["n"] / a["n"])
        word = "sub-linear" if k < 0.8 else "linear" if k <= 1.2 else "worse than linear"
        out[name] = f"{word} (x{b['median'] / a['median']:.1f} for x{b['n'] / a['n']:g} N)"
    return out


def met(row: dict) -> str:
    target = TARGETS.get(row["name"])
    if target is None or target.n != row["n"]:
        return ""
    if target.met is None:
        return "-"
    try:
        return "yes" if target.met(row) else "**no**"
    except (KeyError, TypeError):   # a figure without what its target needs (no floor, say)
        return "?"


def table(rows: list[dict]) -> str:
    grow = growth(rows)
    largest = {}
    for r in rows:
        if r["n"] >= largest.get(r["name"], 0):
            largest[r["name"]] = r["n"]
    lines = ["| figure | N | median | floor (what) | ratio | target | met? | growth |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = TARGETS.get(r["name"])
        extra = ""
        if "lists" in r:
            extra = f" ({r['lists']} LISTs = {r['lists_per_kind_per_namespace']} per kind per namespace, {r['writes']} writes)"
        elif "writes" in r:
            extra = f" ({r['writes']} writes)"
        floor = f"{fmt(r['floor'], r['unit'])} ({r['floor_name']})" if r.get("floor") is not None else "-"
        lines.append(f"| {r['name']}{extra} | {r['n']:,} | {fmt(r['median'], r['unit'])} | {floor} | "
                     f"{r['ratio'] if r.get('ratio') is not None else '-'} | "
                     f"{target.text if target and target.n == r['n'] else ''} | {met(r)} | "
                     f"{grow.get(r['name'], '') if r['n'] == largest[r['name']] else ''} |")
    seen = {r["name"] for r in rows}
    for name, target in TARGETS.items():
        if name not in seen:
            lines.append(f"| {name} | {target.n:,} | not measured by `make bench` yet | - | - | {target.text} | - | |")
    return "\n".join(lines) + "\n"


def words(rows: list[dict]) -> str:
    """One sentence per floor, with the ratio at the largest N."""
    out = []
    last = {}
    for r in rows:
        if r.get("ratio") is not None and r["n"] >= last.get(r["name"], {"n": -1})["n"]:
            last[r["name"]] = r
    for name, r in last.items():
        text = FLOOR_WORDS.get(name)
        if text is None:
            text = "costs {ratio}x its floor, " + r["floor_name"] + "."
        out.append(f"- **{name}, {r['ratio']}x** (N={r['n']:,}): " + text.format(ratio=r["ratio"]))
    return "\n".join(out) + "\n"


def report(rows: list[dict], seconds: float) -> str:
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"`make bench` on this machine ({os.cpu_count()} cores, {git}, Python "
            f"{sys.version.split()[0]}) took {seconds / 60:.1f} minutes ({time.strftime('%Y-%m-%d')}).\n\n"
            + table(rows) + "\nWhat each ratio means (figure / floor, both measured in the same run):\n\n"
            + words(rows))


def update_readme(text: str) -> None:
    readme = README.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"{README}: no {BEGIN} ... {END} markers in the benchmark section")
    README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}{END}", readme, count=1))


def main() -> int:
    rows, t0, failed = [], time.monotonic(), []
    for script, args in SCRIPTS:
        started = time.monotonic()
        print(f"== {script} {' '.join(args)}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE, text=True)
        print(f"== {script}: {time.monotonic() - started:.0f}s, exit {proc.returncode}", file=sys.stderr, flush=True)
        if proc.returncode != 0:
            failed.append(script)
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    seconds = time.monotonic() - t0
    text = report(rows, seconds)
    print(text)
    print(f"make bench: {seconds:.0f} s wall time", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}; bench/results.*, README.md left as they were", file=sys.stderr)
        return 1
    (HERE / "results.json").write_text(json.dumps({"seconds": round(seconds), "cores": os.cpu_count(),
                                                   "results": rows}, indent=2) + "\n")
    (HERE / "results.md").write_text(text)
    update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
