"""Synthetic config repos for benchmarks: N releases, a realistic mix of
strategies, some mid-rollout, spread over namespaces (about 100 per namespace).

``scan_every=K`` makes every K-th file one that Sluice's parser must put
through its hostile-input scan (reconciler/core/parse.py ``_needs_scan``): the
container shares one probe for readiness and liveness through a YAML anchor
and an alias (``readinessProbe: &id001 ...`` / ``livenessProbe: *id001``), a
valid release that people write, and the anchor is what sends the file through
the event scan (aliases counted as if expanded) before it is constructed.

Files are written with PyYAML's C emitter (block style, keys in the order a
person writes them): ruamel.yaml's emitter costs 2 ms a file, 20 s for 10,000.
"""

from __future__ import annotations

import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from reconciler.core.parse import _Loader  # noqa: E402
from tests.support.specs import STRATEGIES, release_doc  # noqa: E402

KINDS = sorted(STRATEGIES)
SCAN_EVERY = 10   # the validate+render corpus: a tenth of the files take the hostile-input scan


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Quotes a string that Sluice's YAML 1.2 reader would take for something else too (a
    revision hash such as ``6208965234851e54`` is a float in YAML 1.2, not in PyYAML's 1.1)."""


for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    for _tag, _regexp in _resolvers:
        _Dumper.add_implicit_resolver(_tag, _regexp, [_first])


def release_docs(n: int, *, scan_every: int = 0) -> list[dict]:
    docs = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        ns = f"team-{i // 100:03d}"
        status = None
        if i % 3 == 0 and kind not in ("rolling", "recreate"):
            status = {"phase": "Progressing", "weight": 10 if kind == "canary" else 0, "step": 1,
                      "failedChecks": 0, "stable": {"version": "v1", "image": f"example.com/svc-{i}:v1"},
                      "canary": {"version": "v2", "image": f"example.com/svc-{i}:v2"},
                      "startedAt": "2026-11-22T10:00:00Z", "stepStartedAt": "2026-11-22T10:00:00Z"}
        elif i % 3 == 1:
            status = {"phase": "Promoted", "weight": 100, "step": 0, "failedChecks": 0,
                      "stable": {"version": "v2", "image": f"example.com/svc-{i}:v2"}}
        doc = release_doc(name=f"svc-{i:05d}", namespace=ns, strategy=kind, status=status)
        doc["spec"]["target"]["image"] = f"example.com/svc-{i}:v2"
        if scan_every and i % scan_every == scan_every - 1:
            container = doc["spec"]["template"]["containers"][0]
            container["livenessProbe"] = container["readinessProbe"]   # one object twice: anchor + alias
        docs.append(doc)
    return docs


def dump(doc: dict) -> str:
    """One release file (anchors where the document shares an object)."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def path_of(doc: dict) -> str:
    m = doc["metadata"]
    return f"releases/{m['namespace']}/{m['name']}.yaml"


def generate_files(n: int, *, scan_every: int = 0) -> dict[str, bytes]:
    """``{path: bytes}`` of a repo with ``n`` releases."""
    files = {"sluice.yaml": b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"}
    for doc in release_docs(n, scan_every=scan_every):
        files[path_of(doc)] = dump(doc).encode()
    return files


def write(root: pathlib.Path, n: int, *, scan_every: int = 0) -> pathlib.Path:
    for path, data in generate_files(n, scan_every=scan_every).items():
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
    return root
