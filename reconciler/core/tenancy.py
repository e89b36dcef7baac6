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
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

from reconciler.core.model import Release

_Problem = tuple[Release, tuple[Any, ...], str]


def _host_namespace(host: str) -> str | None:
    """The namespace a Kubernetes service host names, None for an external host."""
    parts = host.split(".")
    if host.endswith(".svc.cluster.local") and len(parts) == 5:
        return parts[1]
    if len(parts) == 2 and not parts[1].isdigit() and "." not in parts[1] and not host.endswith((".com", ".io", ".net", ".org", ".dev")):
        return parts[1]
    return None


def check(releases: Iterable[Release], settings: Mapping[str, Any]) -> list[_Problem]:
    folders = ((settings.get("tenancy") or {}).get("folders"))
    out: list[_Problem] = []
    for rel in releases:
        folder = rel.path.split("/")[1]
        hosts = list(enumerate(rel.service.get("hosts") or []))
        for i, host in hosts:
            ns = _host_namespace(host)
            if ns is not None and ns != rel.namespace:
                out.append((rel, ("spec", "service", "hosts", i),
                            f"host {host} routes to namespace {ns!r}; a release routes only within {rel.namespace!r}"))
        if folders is None:
            continue
        allowance = folders.get(folder)
        if allowance is None:
            out.append((rel, ("metadata", "namespace"), f"folder {folder!r} has no tenancy allowance in sluice.yaml"))
            continue
        namespaces = allowance.get("namespaces") or [folder]
        if rel.namespace not in namespaces:
            out.append((rel, ("metadata", "namespace"),
                        f"namespace {rel.namespace!r} is outside folder {folder!r}'s allowance {namespaces}"))
        globs = allowance.get("hosts")
        if globs is None:
            continue
        fqdn = f"{rel.service_name}.{rel.namespace}.svc.cluster.local"
        for i, host in [(None, fqdn)] + hosts:
            full = host if "." in host else f"{host}.{rel.namespace}.svc.cluster.local"
            if not any(fnmatchcase(full, g) or fnmatchcase(host, g) for g in globs):
                path = ("spec", "service", "hosts", i) if i is not None else ("spec", "service")
                out.append((rel, path, f"host {host} is outside folder {folder!r}'s allowed hosts {globs}"))
    return out
