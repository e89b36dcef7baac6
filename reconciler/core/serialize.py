"""Deterministic YAML and JSON of rendered objects.

Keys come out in the order kubectl shows them (apiVersion, kind, metadata,
spec, then the rest alphabetically; inside, alphabetical), so the same
objects always give the same bytes and diffs stay small and readable.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import yaml

_TOP = ("apiVersion", "kind", "metadata", "spec")


def _ordered(value: Any, top: bool = False) -> Any:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (_TOP.index(k) if top and k in _TOP else len(_TOP), str(k)))
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, (list, tuple)):
        return [_ordered(v) for v in value]
    return value


def canonical(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with keys in the canonical order."""
    return _ordered(obj, top=True)


def object_key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion group, kind, namespace, name): identity for sorting and diffing."""
    group = obj.get("apiVersion", "").rpartition("/")[0]
    meta = obj.get("metadata") or {}
    return group, obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(objs: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML, ``---`` between objects.

    libyaml's emitter (PyYAML's C dumper) is ~40x faster than a pure-Python
    one, and it quotes every string a YAML 1.1 or 1.2 reader could take for
    something else (``"yes"``, ``"2026-11-20"``), so the output means the same
    to kubectl, Argo CD, Flux and Sluice.
    """
    return yaml.dump_all((canonical(o) for o in objs), Dumper=_Dumper, sort_keys=False,
                         default_flow_style=False, width=4096, allow_unicode=True)


def dump_json(objs: Iterable[dict[str, Any]]) -> str:
    """A JSON list of the objects, canonical key order, 2-space indent."""
    return json.dumps([canonical(o) for o in objs], indent=2) + "\n"
