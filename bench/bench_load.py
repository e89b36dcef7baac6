"""validate + render of N generated releases, beside the floor of parsing the
same YAML alone with the fastest parser on the machine (libyaml C loader).

    python bench/bench_load.py [N ...]      (default 10 100 1000 5000)
"""

from __future__ import annotations

import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import emit, figure, measure  # noqa: E402
from bench.genrepo import generate_files  # noqa: E402
from reconciler.core.loader import load_files  # noqa: E402
from reconciler.core.render import render  # noqa: E402
from reconciler.core.serialize import dump_yaml  # noqa: E402


def validate_render(files):
    loaded = load_files(files)
    assert not loaded.problems, loaded.problems[:3]
    return dump_yaml(obj for rel in loaded.releases for obj in render(rel, loaded.settings))


def parse_only(files):
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for data in files.values():
        yaml.load(data, Loader=loader)


def main(sizes):
    for n in sizes:
        files = generate_files(n)
        repeat = 5 if n <= 1000 else 3
        floor = measure(lambda: parse_only(files), repeat=repeat)
        emit(figure("validate+render", n, measure(lambda: validate_render(files), repeat=repeat),
                    floor=floor, floor_name="parse YAML alone (libyaml)", target=2.0 if n == 1000 else None))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 100, 1000, 5000])
