"""validate + render of N generated releases, cold (no parse cache), on a
corpus where every 10th file needs the hostile-input scan (an anchor and an
alias: bench/genrepo.py), beside the floor of parsing the very same bytes
alone with libyaml's C loader (PyYAML ``CSafeLoader``), in the same run.

    python bench/bench_load.py [N ...]      (default 1000 10000)
"""

from __future__ import annotations

import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import emit, figure, measure  # noqa: E402
from bench.genrepo import SCAN_EVERY, generate_files  # noqa: E402
from reconciler.core.loader import load_files  # noqa: E402
from reconciler.core.parse import _needs_scan  # noqa: E402
from reconciler.core.render import render  # noqa: E402
from reconciler.core.serialize import dump_yaml  # noqa: E402

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def validate_render(files: dict[str, bytes]) -> str:
    loaded = load_files(files)
    if loaded.problems:
        raise RuntimeError(f"the generated corpus is not valid: {loaded.problems[:3]}")
    return dump_yaml(obj for rel in loaded.releases for obj in render(rel, loaded.settings))


def parse_only(files: dict[str, bytes]) -> None:
    for data in files.values():
        yaml.load(data, Loader=LOADER)


def main(sizes: list[int]) -> None:
    for n in sizes:
        files = generate_files(n, scan_every=SCAN_EVERY)
        scanned = sum(1 for p, d in files.items() if p.startswith("releases/") and _needs_scan(d))
        if scanned != n // SCAN_EVERY:   # the corpus must really send a tenth through the scan
            raise RuntimeError(f"{scanned} of {n} files take the hostile-input scan, expected {n // SCAN_EVERY}")
        repeat, warmup = (5, 1) if n <= 1000 else (3, 0)
        floor = measure(lambda: parse_only(files), repeat=repeat, warmup=warmup)
        samples = measure(lambda: validate_render(files), repeat=repeat, warmup=warmup)
        emit(figure("validate+render (cold)", n, samples, floor=floor,
                    floor_name="parse the same bytes alone (libyaml CSafeLoader)", scanned_files=scanned,
                    bytes=sum(len(d) for d in files.values())))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
