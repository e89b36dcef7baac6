"""Field ownership as a real API server keeps it (``metadata.managedFields``).

A copy, for the emulator, of what kube-apiserver's structured-merge-diff does:

- a *field set* is a set of paths; a path is a tuple of elements written the
  way ``fieldsV1`` writes them: ``f:spec`` for a map field and
  ``k:{"name":"web"}`` for an item of a list with merge keys. A set holds the
  leaves (scalars, atomic lists and maps, empty maps) and every keyed list
  item (``.`` in ``fieldsV1``);
- lists with merge keys merge by key (containers by ``name``, container
  ports by ``containerPort``+``protocol``, Service ports by
  ``port``+``protocol``, env by ``name``...) in built-in kinds; every other
  list is atomic, and in Istio's and unknown kinds every list is atomic while
  maps stay granular;
- :func:`apply` merges a manager's applied configuration into the live
  object, removes what the manager applied before and omits now (unless
  another manager owns it too), and reports conflicts with other managers'
  fields set to another value (forced: ownership moves to the applier);
- :func:`update` gives a non-apply writer (PUT, merge patch) the fields it
  changed and takes them from everyone else.

Gaps: no ``v:`` set-lists (finalizers are atomic), no ownership of status
(subresource writes are not tracked), no per-version conversion of sets.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple

MISSING = object()
Path = tuple  # of "f:<field>" / "k:<json>" elements

BUILTIN_KINDS = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "Service",
                 "ConfigMap", "Secret", "Lease", "Namespace", "HorizontalPodAutoscaler", "ServiceAccount"}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
KEYED = {**{c: ("name",) for c in CONTAINER_LISTS},
         "env": ("name",), "volumes": ("name",), "imagePullSecrets": ("name",), "volumeMounts": ("mountPath",),
         "volumeDevices": ("devicePath",), "hostAliases": ("ip",), "ownerReferences": ("uid",),
         "resourceClaims": ("name",), "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable")}
KEY_DEFAULTS = {"protocol": "TCP"}
ATOMIC_MAPS = {"selector", "labelSelector", "namespaceSelector", "nodeSelector"}
# metadata that is never in a field set (kube's "strip meta")
STRIPPED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                 "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"}


class Kind(NamedTuple):
    """What the merge rules depend on: API group and kind."""
    group: str
    kind: str

    @property
    def builtin(self) -> bool:
        return self.kind in BUILTIN_KINDS and not self.group.endswith(".istio.io")

    def list_keys(self, names: tuple) -> tuple | None:
        """Merge keys of the list at ``names`` (field names from the root), None when atomic."""
        if not self.builtin or not names:
            return None
        last = names[-1]
        if last == "ports":
            if len(names) >= 2 and names[-2] in CONTAINER_LISTS:
                return ("containerPort", "protocol")
            if self.kind == "Service" and names == ("spec", "ports"):
                return ("port", "protocol")
            return None
        return KEYED.get(last)

    def atomic_map(self, names: tuple) -> bool:
        return self.builtin and bool(names) and names[-1] in ATOMIC_MAPS


class Conflict(NamedTuple):
    manager: str
    operation: str
    api_version: str
    path: Path

    def who(self) -> str:
        return f'"{self.manager}" using {self.api_version}' if self.operation == "Update" else f'"{self.manager}"'


class Conflicts(Exception):
    def __init__(self, conflicts: list[Conflict]):
        super().__init__(conflict_message(conflicts))
        self.conflicts = conflicts


# --- paths ----------------------------------------------------------------------
def item_key(item: Any, keys: tuple) -> str:
    values = {k: item.get(k, KEY_DEFAULTS.get(k)) for k in keys} if isinstance(item, dict) else {}
    return "k:" + json.dumps({k: v for k, v in values.items() if v is not None}, sort_keys=True,
                             separators=(",", ":"))


def path_text(path: Path) -> str:
    """``.spec.template.spec.containers[name="web"].image``, as conflicts print it."""
    out = ""
    for el in path:
        if el.startswith("f:"):
            out += "." + el[2:]
        else:
            key = json.loads(el[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
    return out


def fieldset(obj: dict, kind: Kind) -> set:
    """The field set of ``obj`` (without the metadata the server owns and without status)."""
    out: set = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            value = {k: v for k, v in (value or {}).items() if k not in STRIPPED_META}
            if not value:
                continue
        _walk(value, kind, (key,), ("f:" + key,), out)
    return out


def _walk(value: Any, kind: Kind, names: tuple, path: Path, out: set) -> None:
    if isinstance(value, dict) and value and not kind.atomic_map(names):
        for key, sub in value.items():
            _walk(sub, kind, names + (key,), path + ("f:" + key,), out)
    elif isinstance(value, list) and (keys := kind.list_keys(names)):
        if not value:
            out.add(path)
        for item in value:
            ipath = path + (item_key(item, keys),)
            out.add(ipath)
            if isinstance(item, dict):
                for key, sub in item.items():
                    _walk(sub, kind, names + (key,), ipath + ("f:" + key,), out)
    else:
        out.add(path)


def _child(container: Any, el: str, kind: Kind, names: tuple) -> tuple[Any, Any]:
    """(value, index-or-key) of element ``el`` in ``container``; value MISSING when absent."""
    if el.startswith("f:"):
        if isinstance(container, dict) and el[2:] in container:
            return container[el[2:]], el[2:]
        return MISSING, el[2:]
    keys = kind.list_keys(names)
    if isinstance(container, list) and keys:
        for i, item in enumerate(container):
            if item_key(item, keys) == el:
                return item, i
    return MISSING, None


def _names(path: Path) -> tuple:
    return tuple(el[2:] for el in path if el.startswith("f:"))


def get(obj: Any, path: Path, kind: Kind) -> Any:
    value = obj
    for i, el in enumerate(path):
        value, _ = _child(value, el, kind, _names(path[:i]))
        if value is MISSING:
            return MISSING
    return value


def remove(obj: dict, path: Path, kind: Kind) -> bool:
    parent = get(obj, path[:-1], kind) if len(path) > 1 else obj
    if parent is MISSING:
        return False
    value, where = _child(parent, path[-1], kind, _names(path[:-1]))
    if value is MISSING:
        return False
    del parent[where]
    return True


# --- fieldsV1 -------------------------------------------------------------------------
def to_fields_v1(paths: Iterable[Path]) -> dict:
    paths = set(paths)
    root: dict = {}
    for path in sorted(paths):
        node = root
        for el in path:
            node = node.setdefault(el, {})
    for path in paths:
        node = root
        for el in path:
            node = node[el]
        if node and "." not in node:
            node["."] = {}
    return _sorted(root)


def _sorted(node: dict) -> dict:
    return {k: _sorted(node[k]) for k in sorted(node)}


def from_fields_v1(fields: dict) -> set:
    out: set = set()

    def walk(node: dict, prefix: Path) -> None:
        for key, sub in node.items():
            if key == ".":
                out.add(prefix)
            elif not sub:
                out.add(prefix + (key,))
            else:
                walk(sub, prefix + (key,))
    walk(fields or {}, ())
    return out


# --- managedFields entries ----------------------------------------------------------------
def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Entry:
    """One ``managedFields`` entry with its field set parsed."""

    def __init__(self, manager: str, operation: str, api_version: str, fields: set, time: str | None = None,
                 subresource: str | None = None):
        self.manager, self.operation, self.api_version = manager, operation, api_version
        self.fields, self.time, self.subresource = fields, time, subresource

    @classmethod
    def parse(cls, raw: dict) -> "Entry":
        return cls(raw.get("manager", ""), raw.get("operation", "Update"), raw.get("apiVersion", ""),
                   from_fields_v1(raw.get("fieldsV1") or {}), raw.get("time"), raw.get("subresource"))

    def dump(self) -> dict:
        out = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
               "time": self.time or now(), "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(self.fields)}
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def parse(managed: list | None) -> list[Entry]:
    return [Entry.parse(raw) for raw in managed or []]


def dump(entries: list[Entry], before: list[Entry], touched: str, *, changed: bool) -> list[dict]:
    """Entries as ``managedFields``. As a real API server does, the time of
    ``touched``'s entry moves when its set changed or it changed the value of a
    field it owns (``changed``); another entry's time never moves (not even
    when it lost a field to ``touched``'s forced apply)."""
    old = {(e.manager, e.operation): e for e in before}
    out = []
    for e in entries:
        if not e.fields:
            continue
        prev = old.get((e.manager, e.operation))
        if prev is not None and (prev.fields == e.fields or e.manager != touched) and not (
                e.manager == touched and changed):
            e.time = prev.time
        elif e.manager == touched or prev is None:
            e.time = now()
        out.append(e.dump())
    return out


def _entry(entries: list[Entry], manager: str, operation: str, api_version: str) -> Entry:
    for e in entries:
        if e.manager == manager and e.operation == operation:
            e.api_version = api_version
            return e
    e = Entry(manager, operation, api_version, set())
    entries.append(e)
    return e


def _owns(fields: set, path: Path) -> bool:
    """Does a set hold ``path`` or anything below it?"""
    n = len(path)
    return any(p[:n] == path for p in fields)


# --- apply ------------------------------------------------------------------------------------
def strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def merge(live: Any, config: Any, kind: Kind, names: tuple = ()) -> Any:
    """The applied configuration over the live object: maps by field, keyed lists by key."""
    if isinstance(config, dict) and isinstance(live, dict) and not kind.atomic_map(names):
        out = dict(live)
        for key, value in config.items():
            out[key] = merge(live.get(key, MISSING), value, kind, names + (key,))
        return out
    keys = kind.list_keys(names)
    if isinstance(config, list) and isinstance(live, list) and keys:
        by_key = {item_key(item, keys): item for item in live}
        mine = [item_key(item, keys) for item in config]
        out = [merge(by_key.get(k, MISSING), item, kind, names) for k, item in zip(mine, config)]
        return out + [item for item in live if item_key(item, keys) not in mine]
    return copy.deepcopy(config)


def apply(live: dict | None, config: dict, managed: list | None, manager: str, api_version: str, kind: Kind,
          *, force: bool = False) -> tuple[dict, list[dict]]:
    """Server-side apply: the new object and its ``managedFields``; raises :class:`Conflicts`."""
    config = strip_nulls(config)
    live = live or {}
    before = parse(managed)
    entries = parse(managed)
    applied = fieldset(config, kind)
    mine = _entry(entries, manager, "Apply", api_version)
    others = [e for e in entries if e is not mine]
    merged = merge(live, config, kind)
    conflicts = [Conflict(e.manager, e.operation, e.api_version, p)
                 for e in others for p in sorted(applied & e.fields)
                 if not p[-1].startswith("k:") and get(live, p, kind) != get(merged, p, kind)]
    if conflicts and not force:
        raise Conflicts(conflicts)
    for c in conflicts:
        next(e for e in others if e.manager == c.manager and e.operation == c.operation).fields.discard(c.path)
    # a keyed-list item no longer sent goes whole (a Service port), as a real API server removes it: before
    # its fields, whose removal would change its key (port, protocol) so it could no longer be found
    items_first = sorted(mine.fields - applied, key=lambda p: (not p[-1].startswith("k:"), -len(p)))
    for path in items_first:
        if not any(_owns(e.fields, path) for e in others):
            _remove_and_prune(merged, path, kind, entries)
    moved = any(get(live, p, kind) != get(merged, p, kind) for p in applied)
    mine.fields = applied
    return merged, dump(entries, before, manager, changed=moved)


def _remove_and_prune(obj: dict, path: Path, kind: Kind, entries: list[Entry]) -> None:
    """Remove a field, then the maps it leaves empty that nobody owns (Go's omitempty does this)."""
    if not remove(obj, path, kind):
        return
    for n in range(len(path) - 1, 1, -1):
        parent = path[:n]
        if not parent[-1].startswith("f:"):
            return
        value = get(obj, parent, kind)
        if value not in ({}, []) or any(parent in e.fields for e in entries):
            return
        remove(obj, parent, kind)


# --- update (PUT, merge patch, strategic merge patch) --------------------------------------------
def update(live: dict | None, new: dict, managed: list | None, manager: str, api_version: str,
           kind: Kind) -> list[dict]:
    """``managedFields`` after a non-apply write: ``manager`` owns what it changed."""
    before = parse(managed)
    entries = parse(managed)
    old_set = fieldset(live, kind) if live else set()
    new_set = fieldset(new, kind)
    changed = {p for p in new_set if p not in old_set or get(live, p, kind) != get(new, p, kind)}
    removed = old_set - new_set
    if not changed and not removed:
        return [e.dump() for e in before]
    for e in entries:
        e.fields -= changed | removed
    mine = _entry(entries, manager, "Update", api_version)
    mine.fields |= changed
    return dump(entries, before, manager, changed=True)


def strategic_merge(live: Any, patch: Any, kind: Kind, names: tuple = ()) -> Any:
    """Strategic merge patch: like a merge patch, but keyed lists merge by key."""
    if isinstance(patch, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(live.get(key, MISSING), value, kind, names + (key,))
        return out
    keys = kind.list_keys(names)
    if isinstance(patch, list) and isinstance(live, list) and keys:
        out = list(live)
        for item in patch:
            k = item_key(item, keys)
            at = next((i for i, old in enumerate(out) if item_key(old, keys) == k), None)
            if at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = strategic_merge(out[at], item, kind, names)
        return out
    if isinstance(patch, dict):
        return strategic_merge({}, patch, kind, names)
    return copy.deepcopy(patch)


def conflict_message(conflicts: list[Conflict]) -> str:
    if len(conflicts) == 1:
        c = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {c.who()}: {path_text(c.path)}"
    lines = []
    for who in sorted({c.who() for c in conflicts}):
        lines.append(f"conflicts with {who}:")
        lines += [f"- {path_text(c.path)}" for c in conflicts if c.who() == who]
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
