"""Revisions: what runs, as one identity and one label-safe name.

A revision is the whole of what runs for a release: the target image (and
which container gets it), the pod template, and the configuration Sluice
renders for it (``spec.config``). Its identity is a content hash of those;
any change of it is a rollout through the release's strategy (design
invariant 10). Its name is what the cluster sees: the Deployment
``<release>-<revision>``, the pod label ``version`` and the DestinationRule
subset.

Naming (``target``):
- ``spec.target.version`` when given, else the image tag (or digest), made a
  DNS label: lower case, every other character ``-`` (``1.2.3`` -> ``1-2-3``);
- plus ``-<8 hex of the hash>`` when that name is the stable revision's
  version with other content (an image-only bump, a template or config
  edit), or is still taken by a live revision of other content;
- a target whose content equals a live revision's keeps that revision's name.

Status entries (``status.stable``, ``canary``, ``retiring``, ``rolledBack``,
``previous[]``) carry ``version``, ``image``, ``revision`` and ``hash``;
``status.snapshots`` maps the stable and retiring revisions' names to the
``template`` and ``config`` they run, so an old revision keeps rendering as
it ran while a new one rolls out. An entry written before revisions existed has neither
``revision`` nor ``hash``: its name is its version (the Deployment
``<release>-<version>`` it already has) and it is compared by version and
image (see docs/release-spec.md, "Upgrading").

Pure: plain data in, plain data out.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from reconciler.core import adopt
from reconciler.core.model import LIVE_PHASES, Release

HASH_LEN = 16          # hex digits kept in status: plenty to tell revisions apart
SUFFIX_LEN = 8         # hex digits in a name suffix
MAX_NAME = 63          # a label value / DNS label
CONFIG_VOLUME = "sluice-config"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str) -> str:
    """``text`` as a DNS-1123 label: ``1.2.3`` -> ``1-2-3``, ``V2_RC`` -> ``v2-rc``."""
    out = _NOT_DNS.sub("-", str(text).lower()).strip("-")
    out = re.sub(r"-{2,}", "-", out)[:MAX_NAME].strip("-")
    return out or "rev"


def tag_of(image: str) -> str:
    """The tag of an image reference, or the first 12 hex of its digest, or ``latest``."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return last.split("@", 1)[1].split(":", 1)[-1][:12]
    return last.split(":", 1)[1] if ":" in last else "latest"


def target_version(rel: Release) -> str:
    """``spec.target.version``, or the image tag when no version is given."""
    return str(rel.target.get("version") or tag_of(rel.target["image"]))


def config_data(rel: Release) -> dict[str, str] | None:
    """The ConfigMap data of ``spec.config``: its files (by base name) then its literals."""
    cfg = rel.spec.get("config")
    if not cfg:
        return None
    data = {name.rsplit("/", 1)[-1]: rel.files.get(name, "") for name in cfg.get("files") or []}
    data.update({str(k): str(v) for k, v in (cfg.get("data") or {}).items()})
    return dict(sorted(data.items()))


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def config_hash(data: Mapping[str, str]) -> str:
    return _digest(dict(data))[:SUFFIX_LEN]


def configmap_name(rel: Release, data: Mapping[str, str]) -> str:
    """``<release>-config-<hash>``: a new name for new content, so revisions never share one."""
    return f"{rel.name}-config-{config_hash(data)}"


def snapshot(rel: Release) -> dict[str, Any]:
    """What a revision runs besides its image, as recorded in status for stable revisions."""
    # the template of new revisions: spec.template, or the adopted Deployment's (status.adopted)
    out: dict[str, Any] = {"template": json.loads(json.dumps(rel.template, default=str))}
    cfg = rel.spec.get("config")
    if cfg:
        out["config"] = {"data": config_data(rel) or {}, **({"mountPath": cfg["mountPath"]} if cfg.get("mountPath") else {})}
    if rel.target.get("container"):
        out["container"] = rel.target["container"]
    return out


def content_hash(rel: Release) -> str:
    """Identity of the target revision: image, container, pod template and config."""
    return hash_of_content(rel.target["image"], snapshot(rel))


def hash_of_content(image: str, snap: Mapping[str, Any]) -> str:
    """The content hash of a revision running ``image`` with ``snap`` (template, config, container)."""
    return _digest({"image": image, **snap})[:HASH_LEN]


def name_of(entry: Mapping[str, Any] | None) -> str | None:
    """A status entry's revision name (an entry without one predates revisions: its version)."""
    if not entry:
        return None
    return entry.get("revision") or (entry.get("version") and dns_label(entry["version"]))


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Do two entries name the same revision? By hash when both have one, else by version and image."""
    if not a or not b:
        return False
    if a.get("hash") and b.get("hash"):
        return a["hash"] == b["hash"]
    return a.get("version") == b.get("version") and a.get("image", "") == b.get("image", "")


def entry(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A status entry reduced to its identity."""
    if not d or not d.get("version"):
        return None
    out = {"version": d["version"], "image": d.get("image", "")}
    for key in ("revision", "hash"):
        if d.get(key) is not None:
            out[key] = d[key]
    return out


def _live(rel: Release) -> list[Mapping[str, Any]]:
    st = rel.status
    out = [st.get("stable"), st.get("retiring"), st.get("rolledBack")]
    if st.get("phase") in LIVE_PHASES:
        out.append(st.get("canary"))
    return [e for e in out if e and e.get("version")]


def target(rel: Release) -> dict[str, Any]:
    """The target revision of ``rel``: ``{version, image, revision, hash}``."""
    version, image, digest = target_version(rel), rel.target["image"], content_hash(rel)
    live = _live(rel)
    recorded = [*live, *(e for e in rel.status.get("previous") or () if isinstance(e, Mapping))]
    for e in recorded:
        if e.get("hash") == digest:
            return {"version": version, "image": image, "revision": name_of(e), "hash": digest}
    base = dns_label(version)
    stable = rel.status.get("stable") or {}
    # a name once given to other content is never reused: its snapshot (what it ran) stays its own
    taken = {name_of(e) for e in recorded if e.get("hash") != digest} | set(rel.status.get("snapshots") or {})
    legacy_same = not stable.get("hash") and same(stable, {"version": version, "image": image})
    if legacy_same:
        name = name_of(stable)    # adopted as it runs: keep the Deployment it has
    elif base in taken or (stable.get("version") == version and stable.get("hash") != digest):
        name = f"{base[:MAX_NAME - SUFFIX_LEN - 1].rstrip('-')}-{digest[:SUFFIX_LEN]}"
    else:
        name = base
    return {"version": version, "image": image, "revision": name, "hash": digest}


def display(e: Mapping[str, Any] | None) -> str:
    """How commits and messages name a revision: its version, unless the name says more."""
    if not e:
        return "-"
    name = name_of(e)
    return e["version"] if name in (e["version"], dns_label(e["version"])) else name


def approval_names(e: Mapping[str, Any]) -> set[str]:
    """What ``spec.approve`` may say to approve ``e``: its revision name, and its
    version when the version alone names it (no hash suffix)."""
    names = {name_of(e)}
    if display(e) == e["version"]:
        names.add(e["version"])
    return names


def snapshots(rel: Release, status: Mapping[str, Any], target_entry: Mapping[str, Any]) -> dict[str, Any]:
    """``status.snapshots`` for ``status``: what its stable, retiring and rollback-window
    revisions run, kept from ``rel.status`` or, for the revision the spec describes,
    taken from the spec."""
    old = rel.status.get("snapshots") or {}
    record = (status.get("adopted") or rel.status.get("adopted") or {}) if adopt.workload_ref(rel) else {}
    out: dict[str, Any] = {}
    for e in [status.get("stable"), status.get("retiring"), *(status.get("previous") or ())]:
        name = name_of(e)
        if not name or name in out:
            continue
        if name in old:
            out[name] = old[name]
        elif record and name == record.get("revision"):   # the adopted Deployment, as Sluice adopted it
            out[name] = adopt.snapshot(rel, record)
        elif same(e, target_entry) and name_of(e) == target_entry.get("revision"):
            out[name] = snapshot(rel)
    return out


def hash_of(rel: Release, name: str) -> str | None:
    """The content hash of revision ``name`` of ``rel``, when known."""
    e = find(rel, name)
    if e is not None:   # recorded in status: its own hash (none for an entry from before revisions)
        return e.get("hash")
    t = target(rel)
    return t["hash"] if t["revision"] == name else None


def find(rel: Release, name: str) -> dict[str, Any] | None:
    """The status entry whose revision is ``name``, if any is recorded."""
    st = rel.status
    for key in ("canary", "stable", "retiring", "rolledBack"):
        e = st.get(key)
        if e and e.get("version") and name_of(e) == name:
            return dict(e)
    return None


def remember(previous: list[Mapping[str, Any]] | None, e: Mapping[str, Any], at: str, n: int) -> list[dict]:
    """The rollback window: ``e`` first, then earlier stable revisions, ``n`` at most."""
    item = {**entry(e), "revision": name_of(e), "at": at}
    rest = [dict(p) for p in previous or () if name_of(p) != item["revision"]]
    return ([item] + rest)[:max(n, 0)]


# --- what differs between two specs (for plan) --------------------------------
def _paths(a: Any, b: Any, at: str = "") -> list[str]:
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _paths(a.get(k), b.get(k), f"{at}.{k}" if at else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "name" in x for x in a + b):
        na, nb = {x["name"]: x for x in a}, {x["name"]: x for x in b}
        out = []
        for k in sorted(set(na) | set(nb)):
            out += _paths(na.get(k), nb.get(k), f"{at}[{k}]")
        return out
    return [at or "."]


def template_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the pod template fields that differ, e.g. ``containers[web].env``
    (list entries with a ``name`` are matched by name; other lists compare whole)."""
    return _paths(dict(old or {}), dict(new or {}))


def reasons(old: Mapping[str, Any] | None, new: Release, was: Mapping[str, Any] | None = None) -> list[str]:
    """Why the target revision differs from ``old`` (a stable entry; ``was``: the
    snapshot of what it runs, when known): image, template fields, config."""
    if not old:
        return []
    out = []
    if old.get("image") != new.target["image"]:
        out.append(f"image changed: {old.get('image')} -> {new.target['image']}")
    snap = snapshot(new)
    old = {**old, **(was or {})}
    if "template" in old and old["template"] != snap["template"]:
        fields = template_changes(old["template"], snap["template"])
        out.append("template changed: " + ", ".join(fields[:8]) + (" ..." if len(fields) > 8 else ""))
    if "template" in old and (old.get("config") or None) != (snap.get("config") or None):
        out.append("config changed")
    if "template" in old and old.get("container") != snap.get("container"):
        out.append("target container changed")
    return out


# --- rendering helpers --------------------------------------------------------
def runs(rel: Release, name: str) -> dict[str, Any]:
    """What revision ``name`` runs: its recorded snapshot, or the current spec for
    the target revision and for entries recorded before snapshots existed."""
    e = find(rel, name)
    snap = (rel.status.get("snapshots") or {}).get(name)
    if e and snap and "template" in snap:
        return {"template": snap["template"], "config": snap.get("config"), "container": snap.get("container"),
                "version": e["version"]}
    snap = snapshot(rel)
    return {"template": snap["template"], "config": snap.get("config"), "container": snap.get("container"),
            "version": (e or {}).get("version") or target_version(rel)}
