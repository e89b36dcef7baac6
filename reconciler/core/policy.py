"""The controller's own policy: what the config repo may ask for at most.

The policy is a file mounted into the controller (``--policy-file``,
``SLUICE_POLICY_FILE``), owned by whoever runs Sluice, never by the repo it
reads: a tenant who can push to the repo cannot edit it. It holds::

    apiVersion: sluice.dev/v1alpha1
    kind: Policy
    tenancy:
      folders:
        shop:
          namespaces: [shop]
          hosts: ["*.shop.svc.cluster.local", shop.example.com]
          podSecurity: {allow: [hostPort], capabilities: [NET_BIND_SERVICE], serviceAccounts: [cart]}
    podSecurity:
      systemNamespaces: [kube-system, kube-public, kube-node-lease, sluice-system]
    trust:
      sshAllowedSigners: /etc/sluice/trust/allowed_signers

Under a policy, ``sluice.yaml`` ``tenancy`` may narrow it and never widen
it: a repo folder the policy does not know, a namespace or a host glob
outside the policy's is a problem of ``sluice.yaml`` (which holds every
release, like any invalid settings), and every release is checked against
both. A policy without a ``tenancy`` key leaves tenancy to the repo (as
without a policy); a ``tenancy`` without folders grants none. Without a
policy the repo's tenancy applies and pod security runs with no exceptions
at all (the repo cannot grant them).

Pure: ``load`` takes bytes and returns (policy, located problems).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Mapping

from reconciler.core import analysis, schema
from reconciler.core.model import Problem
from reconciler.core.parse import Locator, YamlProblem, decode, parse

SETTINGS_FILE = "sluice.yaml"


def locate(path: str, data: bytes, raw, release: str = "") -> list[Problem]:
    """(path, message, points-at-key) triples of ``path``'s document as located Problems."""
    try:
        locator = Locator(decode(data))
    except YamlProblem:
        return [Problem(path, msg, p, release=release) for p, msg, _ in raw]
    out = []
    for p, msg, at_key in raw:
        line, col = locator.locate(p, key=at_key)
        out.append(Problem(path, msg, p, line, col, release))
    return sorted(out, key=lambda pr: (pr.line, pr.col))


def load(data: bytes, path: str) -> tuple[dict[str, Any], list[Problem]]:
    """The policy in ``data`` (from the file at ``path``), or its problems.
    A policy with problems is no policy: the caller must refuse to run on it."""
    try:
        doc = parse(data)
    except YamlProblem as exc:
        return {}, [Problem(path, exc.message, (), exc.line, exc.col)]
    if not isinstance(doc, dict):
        return {}, [Problem(path, "expected a mapping (a Policy)")]
    raw = ([(p, provider_message(p, m), k) for p, m, k in schema.errors("policy", doc)]
           or analysis.provider_problems(doc.get("providers") or {}))
    if raw:
        return {}, locate(path, data, raw)
    return doc, []


def provider_message(path: tuple[Any, ...], message: str) -> str:
    """A schema message about a ``providers`` block without the value it quotes when
    that value may be a secret (a header's): said for people, never echoed to a log."""
    if len(path) == 4 and path[0] == "providers" and path[2] == "headers":
        return (f"providers.{path[1]}.headers.{path[3]}: a header value must be one line of text, without "
                "control characters (a line break would split the request)")
    return message


def providers(settings: Mapping[str, Any], policy: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The metrics providers in force, by name: the policy's when it defines any
    (the repo's are then ignored: a repo edit cannot choose where the controller's
    credentials go), else ``sluice.yaml``'s."""
    owned = (policy or {}).get("providers")
    return owned if owned else (settings.get("providers") or {})


def folders(policy: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The policy's folder allowances; None when the policy has no tenancy."""
    if policy is None or "tenancy" not in policy:
        return None   # the policy leaves tenancy to the repo
    return (policy.get("tenancy") or {}).get("folders") or {}   # a tenancy without folders grants none


def _host_within(glob: str, allowed: list[str]) -> bool:
    """Is the repo's host glob inside one of the policy's? (A glob read as text
    against the policy's globs: '*.shop.example.com' fits '*.example.com'.)"""
    return any(fnmatchcase(glob, g) for g in allowed)


def widening(settings: Mapping[str, Any], policy: Mapping[str, Any] | None) -> list[tuple[tuple[Any, ...], str, bool]]:
    """Where the repo's ``tenancy`` would widen the policy's: (path, message, at-key)."""
    granted = folders(policy)
    wanted = (settings.get("tenancy") or {}).get("folders") or {}
    if granted is None or not isinstance(wanted, dict):
        return []
    out = []
    for folder, allowance in wanted.items():
        base = ("tenancy", "folders", folder)
        grant = granted.get(folder)
        if grant is None:
            out.append((base, f"folder {folder!r} has no allowance in the controller policy: sluice.yaml may "
                              "narrow the policy, never widen it", True))
            continue
        allowance = allowance or {}
        may = grant.get("namespaces") or [folder]
        for i, ns in enumerate(allowance.get("namespaces") or []):
            if ns not in may:
                out.append((base + ("namespaces", i), f"namespace {ns!r} is outside folder {folder!r}'s allowance "
                                                      f"{may} in the controller policy: sluice.yaml may narrow it, "
                                                      "never widen it", False))
        if grant.get("hosts") is not None:
            for i, host in enumerate(allowance.get("hosts") or []):
                if not _host_within(host, grant["hosts"]):
                    out.append((base + ("hosts", i), f"host {host} is outside folder {folder!r}'s allowed hosts "
                                                     f"{grant['hosts']} in the controller policy: sluice.yaml may "
                                                     "narrow it, never widen it", False))
    return out


def describe(policy_file: str | None, policy: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Which tenancy applies, for ``sluice validate``."""
    repo = bool((settings.get("tenancy") or {}).get("folders") is not None)
    if policy_file and folders(policy) is not None:
        return {"source": "policy", "policyFile": policy_file, "narrowedBy": SETTINGS_FILE if repo else None}
    return {"source": SETTINGS_FILE if repo else "none", "policyFile": None, "narrowedBy": None}
