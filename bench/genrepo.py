"""Synthetic config repos for benchmarks: N releases, a realistic mix of
strategies, some mid-rollout, spread over namespaces (about 100 per namespace)."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.support.specs import STRATEGIES, dump, release_doc  # noqa: E402

KINDS = sorted(STRATEGIES)


def release_docs(n: int) -> list[dict]:
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
        docs.append(doc)
    return docs


def generate_files(n: int) -> dict[str, bytes]:
    """``{path: bytes}`` of a repo with ``n`` releases."""
    files = {"sluice.yaml": b"apiVersion: sluice.dev/v1alpha1\nkind: Settings\n"}
    for doc in release_docs(n):
        m = doc["metadata"]
        files[f"releases/{m['namespace']}/{m['name']}.yaml"] = dump(doc).encode()
    return files


def write(root: pathlib.Path, n: int) -> pathlib.Path:
    for path, data in generate_files(n).items():
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
    return root
