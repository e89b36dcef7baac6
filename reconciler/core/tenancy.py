"""Per-team boundaries: which namespaces and hosts a folder's releases may use.

``sluice.yaml``::

    tenancy:
      folders:
        shop: {namespaces: [shop], hosts: ["*.shop.svc.cluster.local", shop.example.com]}

A release under ``releases/<folder>/`` is refused (reported with file:line,
left as it runs; the others go on) when its folder has no allowance while
tenancy is configured, when it targets a namespace outside the allowance,
when it claims a host that matches none of the allowance's globs, or
(always, tenancy or not) when a host names a service in another namespace
(``svc.other`` or ``svc.other.svc.cluster.local``): a release routes only to
workloads of its own namespace.

Under a controller policy (``--policy-file``, see ``policy``) the policy's
allowances apply first and the repo's may only narrow them: a release must
fit both.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

from reconciler.core import policy as policies
from reconciler.core.model import Release, host_fqdn

_Problem = tuple[Release, tuple[Any, ...], str]


def _host_namespace(host: str) -> str | None:
    """The namespace a Kubernetes service host names, None for an external host."""
    parts = host.split(".")
    if host.endswith(".svc.cluster.local") and len(parts) == 5:
        return parts[1]
    if len(parts) == 2 and not parts[1].isdigit() and "." not in parts[1] and not host.endswith((".com", ".io", ".net", ".org", ".dev")):
        return parts[1]
    return None


def check(releases: Iterable[Release], settings: Mapping[str, Any],
          policy: Mapping[str, Any] | None = None) -> list[_Problem]:
    """Problems of releases outside their folder's allowance: the controller
    policy's when there is one, and the repo's ``sluice.yaml`` (which may only
    narrow it) in any case."""
    sources = []
    granted = policies.folders(policy)
    if granted is not None:
        sources.append(("the controller policy", granted))
    repo = (settings.get("tenancy") or {}).get("folders")
    if repo is not None:
        sources.append(("sluice.yaml", repo))
    out: list[_Problem] = []
    for rel in releases:
        hosts = list(enumerate(rel.service.get("hosts") or []))
        for i, host in hosts:
            ns = _host_namespace(host)
            if ns is not None and ns != rel.namespace:
                out.append((rel, ("spec", "service", "hosts", i),
                            f"host {host} routes to namespace {ns!r}; a release routes only within {rel.namespace!r}"))
        for where, folders in sources:
            found = _allowance(rel, folders, where, hosts)
            out += found
            if found:
                break   # one source's refusal says enough
    return out


def _allowance(rel: Release, folders: Mapping[str, Any], where: str, hosts) -> list[_Problem]:
    folder = rel.path.split("/")[1]
    allowance = folders.get(folder)
    if allowance is None:
        return [(rel, ("metadata", "namespace"), f"folder {folder!r} has no tenancy allowance in {where}")]
    allowance = allowance or {}
    out: list[_Problem] = []
    namespaces = allowance.get("namespaces") or [folder]
    if rel.namespace not in namespaces:
        out.append((rel, ("metadata", "namespace"),
                    f"namespace {rel.namespace!r} is outside folder {folder!r}'s allowance {namespaces}"
                    + (f" in {where}" if where != "sluice.yaml" else "")))
    globs = allowance.get("hosts")
    suffix = f" in {where}" if where != "sluice.yaml" else ""
    for i, host in [(None, rel.fqdn)] + hosts:
        # as Istio reads it: a short name is a Service of the namespace; a wildcard stays a
        # wildcard (never expanded into the namespace, "*" claims every host of a gateway)
        full = host if "*" in host else host_fqdn(host, rel.namespace)
        if globs is None:   # the default allowance: the hosts of its own namespace
            ok = "*" not in full and full.endswith(f".{rel.namespace}.svc.cluster.local")
            allowed = f"hosts of namespace {rel.namespace} (the default)"
        else:
            ok = any(fnmatchcase(full, g) for g in globs if "*" not in full or _covers(g, full))
            allowed = f"allowed hosts {globs}"
        if not ok:
            path = ("spec", "service", "hosts", i) if i is not None else ("spec", "service")
            out.append((rel, path, f"host {host} is outside folder {folder!r}'s {allowed}{suffix}"))
    return out


def _covers(glob: str, wildcard: str) -> bool:
    """Does the allowance ``glob`` cover every host the Istio wildcard ``wildcard`` matches?
    Only when the wildcard's fixed suffix is itself inside the glob's: ``*.shop.example.com``
    is covered by ``*.example.com``, ``*`` only by ``*``."""
    if glob == "*":
        return True
    tail = wildcard.lstrip("*")
    return bool(tail) and glob.startswith("*") and tail.endswith(glob.lstrip("*"))
