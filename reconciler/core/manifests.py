"""The rendered-manifests tree of the ``git`` target: ``rendered/`` in the repo.

Layout (what Argo CD or Flux points at)::

    rendered/kustomization.yaml              # resources: [<ns>/, ...]
    rendered/<namespace>/kustomization.yaml  # resources: [<name>.yaml, ...]
    rendered/<namespace>/<name>.yaml         # one release's objects

Sluice owns a file only when it says so: its first line is ``HEADER``, or
(files written before the header existed) it is ``rendered/<ns>/<name>.yaml``
and every document in it carries the labels of that release. Anything else under ``rendered/`` (a person's
kustomization.yaml, a patch, a README) is never rewritten or deleted; where a
person's kustomization.yaml stands, Sluice leaves that folder's list to them.

Pure: bytes in, the files to write (None deletes) out.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import yaml

from reconciler.core.model import LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_RELEASE_NS, MANAGED_BY_VALUE

ROOT = "rendered/"
HEADER = b"# Rendered by Sluice: do not edit, every pass rewrites it (see docs/operations.md).\n"
KUSTOMIZATION = "kustomization.yaml"


def release_path(key: str) -> str:
    return f"{ROOT}{key}.yaml"


def with_header(body: bytes) -> bytes:
    return HEADER + body


def owned(path: str, data: bytes) -> bool:
    """Did Sluice write the file at ``path``? Its header says so; a file from before the
    header must be ``rendered/<ns>/<name>.yaml`` with every document labelled as that
    release's."""
    if data.startswith(HEADER):
        return True
    key = key_of(path)
    if key is None:
        return False
    ns, name = key.split("/")
    try:
        docs = [d for d in yaml.safe_load_all(data) if d is not None]
    except yaml.YAMLError:
        return False

    def ours(doc) -> bool:
        labels = ((doc.get("metadata") or {}).get("labels") or {}) if isinstance(doc, dict) else {}
        return labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE and labels.get(LABEL_RELEASE) == name \
            and labels.get(LABEL_RELEASE_NS, ns) == ns
    return bool(docs) and all(ours(d) for d in docs)


def _kustomization(resources: Iterable[str]) -> bytes:
    body = yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                           "resources": sorted(resources)}, sort_keys=False)
    return with_header(body.encode())


def changes(rendered: Mapping[str, bytes], existing: Mapping[str, bytes], keep: Iterable[str]) -> dict[str, bytes | None]:
    """Files to write so ``rendered/`` holds ``rendered`` (release key -> body
    without header) and the kustomizations; Sluice's own files of releases that
    are neither rendered nor kept (``keep``: invalid or held, left as they are)
    are deleted. Files Sluice does not own are never touched."""
    keep = set(keep)
    want: dict[str, bytes] = {release_path(k): with_header(body) for k, body in rendered.items()}
    for path, data in existing.items():
        rel_key = path[len(ROOT):-len(".yaml")]
        if path.count("/") == 2 and not path.endswith("/" + KUSTOMIZATION) and rel_key in keep and owned(path, data):
            want.setdefault(path, data)   # a held release's manifests stay as they are
    folders: dict[str, list[str]] = {}
    for path in want:
        ns, name = path[len(ROOT):].split("/", 1)
        folders.setdefault(ns, []).append(name)
    for ns, names in folders.items():
        path = f"{ROOT}{ns}/{KUSTOMIZATION}"
        if path in existing and not owned(path, existing[path]):
            continue   # a person's kustomization: theirs to list the files in
        want[path] = _kustomization(names)
    top = f"{ROOT}{KUSTOMIZATION}"
    if folders and not (top in existing and not owned(top, existing[top])):
        want[top] = _kustomization(f"{ns}/" for ns in folders)
    out: dict[str, bytes | None] = {p: d for p, d in want.items() if existing.get(p) != d}
    for path, data in existing.items():
        if path not in want and owned(path, data):
            out[path] = None
    return out


def key_of(path: str) -> str | None:
    """The release (``namespace/name``) whose manifests ``rendered/<ns>/<name>.yaml`` holds; None
    for any other path (a kustomization, a person's file)."""
    parts = path[len(ROOT):].split("/") if path.startswith(ROOT) else []
    if len(parts) != 2 or not parts[1].endswith(".yaml") or parts[1] == KUSTOMIZATION:
        return None
    return f"{parts[0]}/{parts[1][: -len('.yaml')]}"
