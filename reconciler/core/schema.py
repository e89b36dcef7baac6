"""The JSON Schemas of the Release and of sluice.yaml, compiled once.

The schema files live at the top of the repo (``schemas/``) and ship inside
the package through the ``reconciler/schemas`` link. Reading a package file is
done once at import through importlib.resources, which is not I/O the core
performs per call.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name`` (``release`` or ``sluice``)."""
    return json.loads(resources.files("reconciler").joinpath("schemas", f"{name}.schema.json").read_text())


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name))


@lru_cache(maxsize=None)
def _fast(name: str):
    """The schema compiled to Python by fastjsonschema: ~12x faster than
    jsonschema at saying "valid", which is the answer for almost every file of
    every pass. The schemas use no keyword whose meaning differs between
    draft-07 (what fastjsonschema implements) and 2020-12."""
    doc = copy.deepcopy(schema(name))   # fastjsonschema rewrites $refs in place: keep the shared schema as written
    doc["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(doc)


def is_valid(name: str, instance: Any) -> bool:
    try:
        _fast(name)(instance)
        return True
    except fastjsonschema.JsonSchemaException:
        return False


def _message(err: ValidationError) -> tuple[tuple[Any, ...], str, bool]:
    """(path, message, points-at-key) for one error, worded for people."""
    path = tuple(err.absolute_path)
    where = ".".join(str(p) for p in path) or "document"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})), key=repr)   # keys of any type
        if extra:
            return path + (extra[0],), f"unknown field {extra[0]!r} in {where}", True
    if err.validator == "required":
        return path, f"{where}: {err.message}", False
    if err.validator == "anyOf" and err.context:
        # a value of the right type in one branch: say what is wrong there, not "no branch fits"
        fitting = [e for e in err.context if e.validator != "type"]
        if fitting:
            return _message(fitting[0])
    if err.validator in ("minProperties", "maxProperties") and err.validator_value == 1 and "maxProperties" in err.schema:
        return path, f"{where}: set exactly one of " + ", ".join(sorted(err.schema.get("properties", {}))), False
    return path, f"{where}: {err.message}", False


def errors(name: str, instance: Any) -> Iterator[tuple[tuple[Any, ...], str, bool]]:
    """Every schema violation of ``instance`` as (path, message, points-at-key), in document order.

    The fast compiled validator answers first; jsonschema (which reports every
    error with its path) runs only for documents that are invalid."""
    if is_valid(name, instance):
        return
    found = sorted(validator(name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    for err in found:
        path, msg, at_key = _message(err)
        if path[:1] == ("status",):
            msg += " (status is written by Sluice only: revert the hand edit)"
        yield path, msg, at_key
