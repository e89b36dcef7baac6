"""Istio's own CRD schemas as validators (tests/fixtures/istio/networking-schemas.json).

Each CRD version's ``openAPIV3Schema`` is the structural schema the API
server checks objects against; jsonschema reads it (``x-kubernetes-*`` keys
and CEL rules are not checked). The schemas are carried in the repository
(source and licence in tests/fixtures/istio/README.md), so the tests need no
file outside it.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jsonschema

SCHEMAS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "networking-schemas.json"


@functools.lru_cache(maxsize=None)
def _schemas() -> dict:
    return json.loads(SCHEMAS.read_text())["schemas"]


@functools.lru_cache(maxsize=None)
def validator(kind: str, version: str = "v1") -> jsonschema.Draft7Validator:
    schema = _schemas().get(f"networking.istio.io/{version}/{kind}")
    if schema is None:
        raise LookupError(f"no CRD schema for {kind} {version} in {SCHEMAS}")
    return jsonschema.Draft7Validator(schema)


def errors(obj: dict) -> list[str]:
    """Schema violations of an Istio object (empty when valid)."""
    v = validator(obj["kind"], obj["apiVersion"].rpartition("/")[2])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(obj)]


def pruned(obj: dict) -> list[str]:
    """Fields the API server would silently prune (not in the structural schema)."""
    v = validator(obj["kind"], obj["apiVersion"].rpartition("/")[2])
    out: list[str] = []

    def walk(value, schema, where):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        if isinstance(value, dict) and "properties" in schema:
            for key, sub in value.items():
                if key not in schema["properties"]:
                    out.append(f"{where}.{key}")
                else:
                    walk(sub, schema["properties"][key], f"{where}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                walk(item, schema["items"], f"{where}[{i}]")

    walk({"spec": obj["spec"]}, v.schema, "")
    return out
