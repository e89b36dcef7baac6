"""Istio's own CRD schemas (../shared/istio/crds-networking.yaml) as validators.

Each CRD version's ``openAPIV3Schema`` is the structural schema the API
server checks objects against; jsonschema reads it (``x-kubernetes-*`` keys
and CEL rules are not checked). The file sits beside the repo, in
``../shared``, on developer machines and in CI.
"""

from __future__ import annotations

import functools
import pathlib

import jsonschema
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO.parent / "shared" / "istio" / "crds-networking.yaml"


@functools.lru_cache(maxsize=None)
def validator(kind: str, version: str = "v1") -> jsonschema.Draft7Validator:
    for doc in yaml.safe_load_all(CRDS.read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
            for ver in doc["spec"]["versions"]:
                if ver["name"] == version:
                    return jsonschema.Draft7Validator(ver["schema"]["openAPIV3Schema"])
    raise LookupError(f"no CRD schema for {kind} {version} in {CRDS}")


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
