"""Pod security by default: what a release's pod template may not ask for.

Refused unless the controller policy allows it for the release's folder
(``tenancy.folders.<folder>.podSecurity``; see ``policy``):

- ``hostNetwork``, ``hostPID``, ``hostIPC``: the node's namespaces;
- ``privileged``: a privileged container, a Windows hostProcess one, an
  unmasked ``procMount``, or an ``Unconfined`` seccomp/AppArmor profile
  (pod or container): each lifts the isolation a container relies on;
- ``allowPrivilegeEscalation``: set to anything but false;
- ``capabilities``: any capability in ``securityContext.capabilities.add``
  (a folder may be granted named ones with ``capabilities: [NET_BIND_SERVICE]``);
- ``hostPath``: a hostPath volume;
- ``hostPort``: a container port bound on the node;
- ``systemNamespace``: a release in kube-system, kube-public, kube-node-lease
  or Sluice's own namespace (``podSecurity.systemNamespaces`` in the policy);
- a ``serviceAccountName`` (or its old alias ``serviceAccount``) other than
  ``default`` or the release's own name (the one-identity-per-workload
  convention: ``checkout`` runs as ``checkout``), unless it is in the
  folder's ``serviceAccounts``. A namespace's other service accounts may be
  bound to roles the team never meant a release to borrow.

Without a policy nothing is excepted: the repo cannot grant itself these.
A value of the wrong type counts as set (Kubernetes would refuse it, and
doubt never widens access). Every container list is checked: containers,
initContainers, ephemeralContainers. Pure: releases in, located problems out.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from reconciler.core.model import Release

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "sluice-system")
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# keys the checks read: a spelling that differs only in case is refused, never skipped
_WATCHED = {k.lower(): k for k in (
    "hostNetwork", "hostPID", "hostIPC", "hostUsers", "securityContext", "privileged", "allowPrivilegeEscalation",
    "capabilities", "ports", "hostPort", "volumes", "hostPath", "serviceAccountName", "serviceAccount",
    "procMount", "seccompProfile", "appArmorProfile", "windowsOptions", "hostProcess", *CONTAINER_LISTS)}
_FREE_KEYS = ("labels", "annotations", "nodeSelector", "matchLabels")   # maps whose keys are data, not fields
_Problem = tuple[Release, tuple[Any, ...], str]


def _set(value: Any) -> bool:
    """Anything but absent, null or false counts as asking for it."""
    return value is not None and value is not False


def _grant(rel: Release, policy: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not policy:
        return {}
    folder = rel.path.split("/")[1]
    allowance = ((policy.get("tenancy") or {}).get("folders") or {}).get(folder) or {}
    return allowance.get("podSecurity") or {}


def _case_tricks(node: Any, path: tuple[Any, ...]) -> Iterable[tuple[tuple[Any, ...], str]]:
    """Keys spelled like a checked one in another case (``HostNetwork``): the API
    server's decoding is not ours to bet on, so they are refused."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and _WATCHED.get(key.lower(), key) != key:
                yield path + (key,), f"{key!r} is not a field; did you mean {_WATCHED[key.lower()]!r}?"
            if key not in _FREE_KEYS:
                yield from _case_tricks(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _case_tricks(value, path + (i,))


def _unconfined(base: tuple[Any, ...], sc: Mapping[str, Any], who: str) -> Iterable[tuple[tuple[Any, ...], str]]:
    for key in ("seccompProfile", "appArmorProfile"):
        profile = sc.get(key)
        if isinstance(profile, dict) and str(profile.get("type", "")).lower() == "unconfined":
            yield base + (key, "type"), f"{who} runs {key} Unconfined"


def _container_problems(base: tuple[Any, ...], container: Any, allow: set[str], caps: set[str]) -> Iterable[tuple[tuple[Any, ...], str]]:
    if not isinstance(container, dict):
        return
    name = container.get("name", "?")
    sc = container.get("securityContext")
    if sc is not None and not isinstance(sc, dict):
        yield base + ("securityContext",), f"container {name}: securityContext must be a mapping"
        return
    sc = sc or {}
    if "privileged" not in allow:
        if _set(sc.get("privileged")):
            yield base + ("securityContext", "privileged"), f"container {name} is privileged"
        win = sc.get("windowsOptions")
        if isinstance(win, dict) and _set(win.get("hostProcess")):
            yield base + ("securityContext", "windowsOptions", "hostProcess"), f"container {name} is a host process"
        if sc.get("procMount") not in (None, "Default"):
            yield base + ("securityContext", "procMount"), f"container {name} sets procMount {sc.get('procMount')!r}"
        yield from _unconfined(base + ("securityContext",), sc, f"container {name}")
    if "allowPrivilegeEscalation" not in allow and _set(sc.get("allowPrivilegeEscalation")):
        yield (base + ("securityContext", "allowPrivilegeEscalation"),
               f"container {name} sets allowPrivilegeEscalation {sc.get('allowPrivilegeEscalation')!r}")
    capabilities = sc.get("capabilities")
    added = capabilities.get("add") if isinstance(capabilities, dict) else capabilities
    if "capabilities" not in allow and _set(added):
        items = added if isinstance(added, list) else [added]
        for i, cap in enumerate(items):
            if not isinstance(cap, str) or cap.upper().removeprefix("CAP_") not in caps:
                at = base + ("securityContext", "capabilities", "add", i) if isinstance(added, list) else \
                    base + ("securityContext", "capabilities")
                yield at, f"container {name} adds capability {cap!r}"
    ports = container.get("ports")
    if "hostPort" not in allow and isinstance(ports, list):
        for i, port in enumerate(ports):
            if isinstance(port, dict) and _set(port.get("hostPort")) and port.get("hostPort") != 0:
                yield base + ("ports", i, "hostPort"), f"container {name} binds hostPort {port.get('hostPort')!r}"


def _templates(rel: Release) -> Iterable[tuple[tuple[Any, ...], Any]]:
    """Every pod template Sluice may render for ``rel``: the spec's, and those kept in
    ``status.snapshots`` for the revisions still running (a status is text anyone who
    can commit may write, so it is checked like the spec)."""
    yield ("spec", "template"), rel.spec.get("template")
    adopted = rel.status.get("adopted") if isinstance(rel.status, Mapping) else None
    if isinstance(adopted, Mapping) and "template" in adopted:   # spec.workloadRef: new revisions copy it
        yield ("status", "adopted", "template"), adopted["template"]
    snaps = rel.status.get("snapshots") if isinstance(rel.status, Mapping) else None
    if isinstance(snaps, Mapping):
        for name, snap in snaps.items():
            if isinstance(snap, Mapping) and "template" in snap:
                yield ("status", "snapshots", name, "template"), snap["template"]


def _pod_problems(rel: Release, grant: Mapping[str, Any]) -> Iterable[tuple[tuple[Any, ...], str]]:
    for base, tmpl in _templates(rel):
        if isinstance(tmpl, dict):
            yield from _template_problems(rel, grant, tmpl, base)


def _template_problems(rel: Release, grant: Mapping[str, Any], tmpl: Mapping[str, Any],
                       base: tuple[Any, ...]) -> Iterable[tuple[tuple[Any, ...], str]]:
    allow = set(grant.get("allow") or [])
    caps = {c.upper().removeprefix("CAP_") for c in grant.get("capabilities") or [] if isinstance(c, str)}
    yield from _case_tricks(tmpl, base)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if key not in allow and _set(tmpl.get(key)):
            yield base + (key,), f"{key} is not allowed"
    psc = tmpl.get("securityContext")
    if "privileged" not in allow and isinstance(psc, dict):
        win = psc.get("windowsOptions")
        if isinstance(win, dict) and _set(win.get("hostProcess")):
            yield base + ("securityContext", "windowsOptions", "hostProcess"), "the pod is a host process"
        yield from _unconfined(base + ("securityContext",), psc, "the pod")
    for kind in CONTAINER_LISTS:
        items = tmpl.get(kind)
        if isinstance(items, list):
            for i, container in enumerate(items):
                yield from _container_problems(base + (kind, i), container, allow, caps)
    volumes = tmpl.get("volumes")
    if "hostPath" not in allow and isinstance(volumes, list):
        for i, vol in enumerate(volumes):
            if isinstance(vol, dict) and "hostPath" in vol:
                yield base + ("volumes", i, "hostPath"), f"volume {vol.get('name', i)} is a hostPath"
    accounts = {"default", rel.name, *(grant.get("serviceAccounts") or [])}
    for key in ("serviceAccountName", "serviceAccount"):
        if key in tmpl and tmpl[key] is not None and tmpl[key] not in accounts:
            yield base + (key,), (f"service account {tmpl[key]!r} is not allowed for this folder "
                                  f"(allowed: {', '.join(sorted(accounts))})")


def check(releases: Iterable[Release], policy: Mapping[str, Any] | None = None) -> list[_Problem]:
    """Every pod-security refusal of ``releases`` as (release, path, message)."""
    # the policy adds to the defaults, never removes one: a folder is excepted by name instead
    system = {*SYSTEM_NAMESPACES, *(((policy or {}).get("podSecurity") or {}).get("systemNamespaces") or [])}
    out: list[_Problem] = []
    for rel in releases:
        grant = _grant(rel, policy)
        if rel.namespace in system and "systemNamespace" not in (grant.get("allow") or []):
            out.append((rel, ("metadata", "namespace"),
                        f"namespace {rel.namespace!r} is a system namespace: releases may not run there"))
        for path, message in _pod_problems(rel, grant):
            out.append((rel, path, f"pod security: {message}"))
    return out
