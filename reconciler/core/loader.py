"""Load a config repo: files in, valid Releases and located problems out.

``load_files`` takes the repo's files as ``{repo-relative path: bytes}`` (from
a directory or a git tree; the adapters read them) and runs, per file: the
hostile-input-safe parse, the JSON Schema, then the checks a schema cannot
express; and across files: unique service hosts and metric templates from
``sluice.yaml``. Every problem carries file:line:col of the offending key or
value. An invalid file never stops the valid ones (invariant 7).

A ``LoadCache`` keyed by the file's git blob id lets the controller skip the
parse and per-file checks of files that did not change between passes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from reconciler.core.bulk import collector_paused
from reconciler.core import (
    adopt, analysis, hooks, notifications, podsecurity, policy as policies, routes, schema, sizing, tenancy,
)
from reconciler.core.durations import parse_duration
from reconciler.core.model import (
    BUILTIN_METRICS, MESH_STRATEGIES, STRATEGIES, Problem, Release, RepoLoad, canary_steps, host_fqdn, target_container,
)
from reconciler.core.parse import YamlProblem, parse

SETTINGS_FILE = "sluice.yaml"
RELEASES_DIR = "releases/"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# (path, message, points-at-key)
_Raw = tuple[tuple[Any, ...], str, bool]


def blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (same as ``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _FileResult:
    doc: Any = None
    raw: list[_Raw] = field(default_factory=list)
    fatal: YamlProblem | None = None
    schema_ok: bool = False


@dataclass
class _Entry:
    """One release file's outcome under one context (settings blob, policy), before the
    cross-file claims: fatal, or its own problems, or a release with its tenancy and
    pod-security refusals and what it claims (service hosts, adopted objects)."""

    path: str
    blob: str
    context: tuple[str | None, str]
    deps: dict[str, str | None] = field(default_factory=dict)   # config files read: path -> blob (None: missing)
    fatal: Problem | None = None
    doc: Any = None
    raw: list[_Raw] = field(default_factory=list)
    release: Release | None = None
    refusals: list[_Raw] = field(default_factory=list)
    claims: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)   # (what, where in the spec)
    _located: dict[tuple[_Raw, ...], list[Problem]] = field(default_factory=dict)

    def located(self, data: bytes, raw: tuple[_Raw, ...]) -> list[Problem]:
        """``raw`` at file:line:col, located once (a round-trip parse) per set of problems."""
        try:
            hash(raw)
        except TypeError:   # a path part that is not hashable: locate it every time
            return self._locate(data, raw)
        if raw not in self._located:
            self._located = {raw: self._locate(data, raw)}   # the last set only
        return self._located[raw]

    def _locate(self, data: bytes, raw: tuple[_Raw, ...]) -> list[Problem]:
        meta = self.doc.get("metadata") if isinstance(self.doc, dict) else None
        release = (f"{meta.get('namespace')}/{meta.get('name')}" if isinstance(meta, dict)
                   and meta.get("name") and meta.get("namespace") else key_from_path(self.path))
        return _locate(self.path, data, list(raw), release)


@dataclass
class _Claims:
    """Who claims what (a service host, an adopted Deployment or route), kept up to
    date entry by entry: a changed file moves its own claims only."""

    by_what: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)   # what -> path -> spec paths
    entries: dict[str, _Entry] = field(default_factory=dict)   # the entry each path's claims came from

    def update(self, current: Mapping[str, _Entry]) -> None:
        for path in [p for p, e in self.entries.items() if current.get(p) is not e]:
            for what, _ in self.entries.pop(path).claims:
                holders = self.by_what.get(what, {})
                holders.pop(path, None)
                if not holders:
                    self.by_what.pop(what, None)
        for path, entry in current.items():
            if path not in self.entries:
                self.entries[path] = entry
                for what, where in entry.claims:
                    self.by_what.setdefault(what, {}).setdefault(path, []).append(where)

    def clashes(self, path: str) -> list[_Raw]:
        """A service host, an adopted Deployment or an adopted route is claimed by one release
        only; every claimant is refused (two writers of one field flip it every pass). In the
        order a walk over all releases by path meets each contested claim."""
        entry = self.entries[path]
        contested = [what for what in dict.fromkeys(w for w, _ in entry.claims) if len(self.by_what[what]) > 1]
        out: list[_Raw] = []
        for what in sorted(contested, key=self._first_met):
            holders = self.by_what[what]
            others = ", ".join(sorted(p for p, where in holders.items() if p != path for _ in where))
            out += [(where, f"{what} is also claimed by {others}", False) for where in holders[path]]
        return out

    def _first_met(self, what: str) -> tuple[str, int]:
        first = min(self.by_what[what])
        return first, [w for w, _ in self.entries[first].claims].index(what)


@dataclass
class LoadCache:
    """What ``load_files`` keeps across calls: per-file parse results by path and blob id
    (bounded in size), each release file's checked outcome by path, the claims index and
    the settings. Keep one per loop (it is not shared between threads)."""

    limit: int = 20_000
    _items: dict[str, _FileResult] = field(default_factory=dict)
    entries: dict[str, _Entry] = field(default_factory=dict)
    claims: _Claims = field(default_factory=_Claims)
    _settings: tuple[Any, tuple[dict[str, Any], list[Problem]]] | None = None

    def get(self, key: str) -> _FileResult | None:
        return self._items.get(key)

    def put(self, key: str, value: _FileResult) -> None:
        if len(self._items) >= self.limit:
            self._items.pop(next(iter(self._items)))
        self._items[key] = value

    def state(self) -> dict[str, tuple]:
        """What the kept results are results of (path -> blob, context, config files): equal
        states answer every load alike, so a copy kept on disk needs no rewrite."""
        return {p: (e.blob, e.context, tuple(sorted(e.deps.items()))) for p, e in self.entries.items()}

    def settings(self, context: tuple[str | None, str], load: Callable[[], tuple[dict[str, Any], list[Problem]]]
                 ) -> tuple[dict[str, Any], list[Problem]]:
        """The settings and their problems for ``context``, loaded when it changed."""
        if self._settings is None or self._settings[0] != context:
            self._settings = (context, load())
        settings, problems = self._settings[1]
        return settings, list(problems)


def is_release_path(path: str) -> bool:
    return path.startswith(RELEASES_DIR) and path.endswith((".yaml", ".yml"))


def key_from_path(path: str) -> str:
    """``namespace/name`` as the file's place says, for files that do not parse."""
    parts = path.split("/")
    return f"{parts[1]}/{parts[-1].rsplit('.', 1)[0]}" if len(parts) == 3 else ""


def _path_problems(path: str) -> list[str]:
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return [f"path {path!r} has an empty, '.' or '..' component"]
    if len(parts) != 3:
        return [f"a release file must be releases/<namespace>/<name>.yaml, not {path!r}"]
    folder, stem = parts[1], parts[2].rsplit(".", 1)[0]
    out = []
    if not DNS1123.match(folder) or len(folder) > 63:
        out.append(f"folder {folder!r} is not a valid namespace name (DNS-1123 label)")
    if not DNS1123.match(stem) or len(stem) > 63:
        out.append(f"file name {stem!r} is not a valid release name (DNS-1123 label)")
    return out


def _durations(doc: Mapping[str, Any]) -> list[_Raw]:
    """Duration strings the schema pattern let through but that do not parse."""
    out: list[_Raw] = []
    spec = doc.get("spec") or {}
    for key in ("progressDeadline", "scaleDownDelay"):
        if key in spec:
            try:
                parse_duration(spec[key])
            except ValueError as exc:
                out.append((("spec", key), str(exc), False))
    return out


def _release_checks(path: str, doc: Mapping[str, Any]) -> list[_Raw]:
    """What the schema cannot say about one release (file-local)."""
    out: list[_Raw] = []
    meta, spec = doc["metadata"], doc["spec"]
    parts = path.split("/")
    folder, stem = parts[1], parts[2].rsplit(".", 1)[0]
    if meta["namespace"] != folder:
        out.append((("metadata", "namespace"),
                    f"namespace {meta['namespace']!r} must equal the folder {folder!r} it lives in", False))
    if meta["name"] != stem:
        out.append((("metadata", "name"), f"name {meta['name']!r} must equal the file name {stem!r}", False))
    strategy = spec["strategy"]
    kinds = [k for k in strategy if k in STRATEGIES]
    if len(kinds) > 1:
        out.append((("spec", "strategy", kinds[1]),
                    f"exactly one strategy allowed, found {', '.join(kinds)}", True))
    for kind in ("canary", "mirror"):
        block = strategy.get(kind) or {}
        if kind == "mirror":
            block = block.get("canary") or {}
        base = ("spec", "strategy", kind) + (("canary",) if kind == "mirror" else ())
        if not block:
            continue
        if "steps" in block and ("stepWeight" in block or "maxWeight" in block):
            out.append((base + ("steps",), "use either steps or stepWeight/maxWeight, not both", True))
        steps = canary_steps(block) if block.get("steps") else []
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                out.append((base + ("steps", i),
                             f"step weights must strictly increase: {steps[i]} after {steps[i - 1]}", False))
        if "stepWeight" in block and block["stepWeight"] > block.get("maxWeight", 50):
            out.append((base + ("stepWeight",),
                        f"stepWeight {block['stepWeight']} is above maxWeight {block.get('maxWeight', 50)}", False))
        if kind == "canary" and not canary_steps(block):
            out.append((base, "canary has no steps", True))
    scaling = spec.get("autoscaling") or {}
    if "minReplicas" in scaling and "maxReplicas" in scaling and scaling["minReplicas"] > scaling["maxReplicas"]:
        out.append((("spec", "autoscaling", "minReplicas"), f"minReplicas {scaling['minReplicas']} is above "
                    f"maxReplicas {scaling['maxReplicas']}: the API server refuses such an HPA", False))
    out += _adoption_checks(spec)
    if "template" in spec and target_container(spec, meta["name"]) is None:
        want = (spec.get("target") or {}).get("container")
        msg = (f"the pod template has no container named {want!r}" if want else
               "cannot tell which container gets the target image: name one container like the "
               "service or set target.container")
        out.append((("spec", "target", "container") if want else ("spec", "template", "containers"), msg, not want))
    for i, step in enumerate((spec.get("gates") or {}).get("steps") or []):
        kind = next(iter(k for k in strategy if k in STRATEGIES), "")
        if kind == "canary" and step > len(canary_steps(strategy["canary"])):
            out.append((("spec", "gates", "steps", i), f"gate on step {step}, but the canary has "
                        f"{len(canary_steps(strategy['canary']))} steps", False))
    out += _durations(doc)
    out += routes.problems(path, doc)   # ports, and the Istio options checked against Istio's schemas
    out += sizing.problems(doc)   # scalerRef and replicas: 0 where no sizing can serve them
    return out


def _adoption_checks(spec: Mapping[str, Any]) -> list[_Raw]:
    """``spec.workloadRef`` and ``spec.service.virtualServiceRef`` (core/adopt.py): what
    they cannot be combined with. The template comes from the spec or the adopted
    Deployment, never both (which would win is not obvious)."""
    out: list[_Raw] = []
    kind = next((k for k in spec["strategy"] if k in STRATEGIES), "canary")
    if "workloadRef" in spec:
        if "template" in spec:
            out.append((("spec", "template"), "spec.template and spec.workloadRef exclude each other: new revisions "
                        "copy the adopted Deployment's pod template; remove one", False))
        if kind not in MESH_STRATEGIES:
            out.append((("spec", "workloadRef"), f"spec.workloadRef needs a mesh strategy (not {kind}): the adopted "
                        "Deployment stays as it is while new revisions run beside it", False))
        if "autoscaling" in spec:
            out.append((("spec", "autoscaling"), "spec.autoscaling with spec.workloadRef is not supported: Sluice "
                        "scales the adopted Deployment as stable (remove one)", False))
    elif "template" not in spec:
        out.append((("spec",), "spec needs a template (or a workloadRef naming a Deployment to adopt)", False))
    if (spec.get("service") or {}).get("virtualServiceRef") is not None:
        if kind != "canary":
            out.append((("spec", "service", "virtualServiceRef"), f"spec.service.virtualServiceRef works with the "
                        f"canary strategy only (not {kind}): match routes and mirrors would change routes the "
                        "VirtualService's owner writes", False))
        for key in ("http", "hosts", "gateways"):
            if key in spec["service"]:
                out.append((("spec", "service", key), f"spec.service.{key} and spec.service.virtualServiceRef "
                            "exclude each other: the adopted VirtualService's owner sets it", False))
    return out


def config_folder(path: str) -> str:
    """Where a release's ``spec.config.files`` live: ``releases/<ns>/<name>/``."""
    return path.rsplit(".", 1)[0] + "/"


def is_config_path(path: str, files: Mapping[str, Any]) -> bool:
    """A file under ``releases/<ns>/<name>/`` next to ``releases/<ns>/<name>.yaml``: config, not a release."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "releases":
        return False
    stem = "/".join(parts[:3])
    return f"{stem}.yaml" in files or f"{stem}.yml" in files


MAX_CONFIG_BYTES = 64 * 1024   # a release's spec.config; status keeps a copy per running revision (1 MiB file limit)


def _config_files(rel: Release, files: Mapping[str, bytes]) -> tuple[dict[str, str], list[_Raw]]:
    """The text of each ``spec.config.files`` entry, read from the release's config folder."""
    cfg = rel.spec.get("config") or {}
    folder = config_folder(rel.path)
    out: dict[str, str] = {}
    raw: list[_Raw] = []
    keys = {str(k) for k in cfg.get("data") or {}}
    for i, name in enumerate(cfg.get("files") or []):
        where = ("spec", "config", "files", i)
        data = files.get(folder + name)
        key = name.rsplit("/", 1)[-1]
        if data is None:
            raw.append((where, f"config file {folder + name} does not exist", False))
        elif key in keys:
            raw.append((where, f"config key {key!r} is given twice (files and data, or two files)", False))
        elif len(data) > MAX_CONFIG_BYTES:
            raw.append((where, f"config file {folder + name} is over {MAX_CONFIG_BYTES // 1024} KiB: spec.config "
                               "is for configuration (each running revision keeps a copy in status); mount "
                               "larger data from a ConfigMap or volume you manage", False))
        else:
            try:
                out[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raw.append((where, f"config file {folder + name} is not UTF-8 text", False))
        keys.add(key)
    literal = sum(len(str(k)) + len(str(v)) for k, v in (cfg.get("data") or {}).items())
    if not raw and sum(len(v.encode()) for v in out.values()) + literal > MAX_CONFIG_BYTES:
        raw.append((("spec", "config"), f"spec.config totals over {MAX_CONFIG_BYTES // 1024} KiB: each running "
                                        "revision keeps a copy in status; mount larger data from a ConfigMap "
                                        "or volume you manage", True))
    return out, raw


def _load_file(path: str, data: bytes) -> _FileResult:
    res = _FileResult()
    try:
        res.doc = parse(data)
    except YamlProblem as exc:
        res.fatal = exc
        return res
    if not isinstance(res.doc, dict):
        res.fatal = YamlProblem(f"expected a mapping (a Release), found {type(res.doc).__name__}")
        return res
    res.raw = list(schema.errors("release", res.doc))
    if not res.raw:
        res.schema_ok = True
        res.raw = _release_checks(path, res.doc)
    return res


def _locate(path: str, data: bytes, raw: list[_Raw], release: str) -> list[Problem]:
    return policies.locate(path, data, raw, release)   # one locator for every file Sluice reads


def _settings(files: Mapping[str, bytes], policy: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[Problem]]:
    """The repo's settings, or (an empty dict and) their located problems: the
    caller then holds every release (invariant 9), never runs on a default."""
    data = files.get(SETTINGS_FILE)
    if data is None:
        return {}, []
    try:
        doc = parse(data)
    except YamlProblem as exc:
        return {}, [Problem(SETTINGS_FILE, exc.message, (), exc.line, exc.col)]
    if doc is None:
        return {}, []
    if not isinstance(doc, dict):
        return {}, [Problem(SETTINGS_FILE, "expected a mapping of settings")]
    raw = ([(p, _settings_message(p, m), k) for p, m, k in schema.errors("sluice", doc)]
           or policies.widening(doc, policy) or _credentials(doc, policy) or _analysis_settings_problems(doc, policy)
           or notifications.settings_problems(doc, policy))
    if raw:
        return {}, _locate(SETTINGS_FILE, data, raw, "")
    return doc, []


# provider options that read a file on the controller (basicAuth holds passwordFile)
CONTROLLER_FILES = ("tokenFile", "basicAuth", "caFile")


def _credentials(doc: Mapping[str, Any], policy: Mapping[str, Any] | None) -> list[_Raw]:
    """Under a policy file the repo may not make the controller read its own files or
    call where it likes: a tenant who can push could point tokenFile at the controller's
    token (or caFile at its service account's CA) and the address at themselves, or a
    web provider at a metadata server or an internal API whose answers end up in git.
    Credentials, CA files and web providers then come from the policy's providers only."""
    if policy is None:
        return []
    out: list[_Raw] = []
    for name, cfg in (doc.get("providers") or {}).items():
        cfg = cfg if isinstance(cfg, Mapping) else {}
        if cfg.get("type") == "web":
            out.append((("providers", name, "type"), f"providers.{name}: under a controller policy, web providers "
                        "are the policy file's to define (a repo edit must not choose which URL the controller "
                        "calls from inside the cluster)", False))
        out += [(("providers", name, key), f"providers.{name}.{key}: credentials are the controller's, as is "
                 "every file it reads (tokenFile, basicAuth.passwordFile, caFile): set them in the policy file's "
                 "providers (a repo edit must not choose which of its files is read or which secret is sent where)",
                 True)
                for key in CONTROLLER_FILES if key in cfg]
        if "headers" in cfg:
            out.append((("providers", name, "headers"), f"providers.{name}.headers: under a controller policy "
                        "headers are the policy file's to set (a repo edit must not choose a tenant, e.g. "
                        "X-Scope-OrgID, whose numbers end up in git)", True))
    if "appliers" in doc:   # which applier a step waits for is the controller's, like its providers
        out.append((("appliers",), "appliers: under a controller policy the appliers are the controller's "
                    "(--applier, --applier-object): a repo edit must not switch off a folder's wait for its "
                    "applier nor choose which object Sluice reads and patches", True))
    return out


def _analysis_settings_problems(doc: Mapping[str, Any], policy: Mapping[str, Any] | None) -> list[_Raw]:
    """Providers and metric templates, beyond the schema: web providers' jsonPath and
    templates, each template's provider defined, its condition one condition."""
    out = analysis.provider_problems(doc.get("providers") or {})
    providers = policies.providers(doc, policy)
    for name, tmpl in (doc.get("metricTemplates") or {}).items():
        base = ("metricTemplates", name)
        wanted = tmpl.get("provider")
        if wanted and wanted != analysis.DEFAULT_PROVIDER and wanted not in providers:
            out.append((base + ("provider",), _undefined_provider(wanted, providers, policy), False))
        kind = _kind(providers, wanted or analysis.DEFAULT_PROVIDER)
        if kind == "web" and tmpl.get("query"):
            out.append((base + ("query",), f"provider {wanted!r} is a web provider: it asks its url, "
                                           "a template for it has no query", True))
        elif kind != "web" and not tmpl.get("query"):
            out.append((base, f"metric template {name!r} needs a query (or a web provider)", False))
        elif isinstance(tmpl.get("query"), str):
            out += [(base + ("query",), p, False) for p in analysis.template_problems(tmpl["query"])]
        out += [(base + (key,), message, True) for key, message in analysis.condition_problems(tmpl)]
        if "tolerance" in tmpl and not tmpl.keys() & {"equals", "notEquals"}:
            out.append((base + ("tolerance",), "tolerance applies to equals or notEquals only", True))
    return out


def _kind(providers: Mapping[str, Any], name: str) -> str:
    """The type of provider ``name`` (a missing one counts as prometheus: the default, maybe given by a flag)."""
    cfg = providers.get(name)
    return (cfg.get("type") or "prometheus") if isinstance(cfg, Mapping) else "prometheus"


def _undefined_provider(name: str, providers: Mapping[str, Any], policy: Mapping[str, Any] | None) -> str:
    where = "the controller policy's providers" if (policy or {}).get("providers") else f"{SETTINGS_FILE} providers"
    known = ", ".join(sorted(providers)) or "none"
    return f"provider {name!r} is not defined in {where} (defined: {known})"


def _settings_message(path: tuple[Any, ...], message: str) -> str:
    """Schema messages about sluice.yaml's security fields, worded for people."""
    message = notifications.schema_message(path, policies.provider_message(path, message))   # never quote a URL
    if path == ("trust",):
        return ("trust anchors are not read from the repo (a commit could vouch for itself): configure "
                "--trust-* or the policy file's trust:, and remove this block")
    if len(path) == 3 and path[0] == "providers" and path[2] == "type":
        return f"providers.{path[1]}.type: use prometheus (the default) or web"
    if len(path) == 2 and path[0] == "providers" and "should not be valid" in message:
        return f"providers.{path[1]}: set tokenFile or basicAuth, not both"
    if len(path) == 3 and path[0] == "providers" and path[2] == "headers" and "should not be valid" in message:
        return (f"providers.{path[1]}.headers: Authorization, Host, Cookie and Content-Length cannot be set "
                "here (use tokenFile or basicAuth)")
    return message


def _metric_problems(rel: Release, settings: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> list[_Raw]:
    templates = settings.get("metricTemplates") or {}
    providers = policies.providers(settings, policy)
    out: list[_Raw] = []
    for i, metric in enumerate(rel.metrics):
        at = ("spec", "analysis", "metrics", i)
        name, tmpl = metric.get("name"), metric.get("template")
        template = templates.get(tmpl or name) or {}
        provider = analysis.provider_of(metric, settings)
        kind = _kind(providers, provider)
        if tmpl is not None and tmpl not in templates:
            out.append((at + ("template",), f"metric template {tmpl!r} is not defined in sluice.yaml metricTemplates",
                        False))
        elif metric.get("provider") and provider != analysis.DEFAULT_PROVIDER and provider not in providers:
            out.append((at + ("provider",), _undefined_provider(provider, providers, policy), False))
        elif kind == "web":
            if metric.get("query"):
                out.append((at + ("query",), f"provider {provider!r} is a web provider: it asks its url, "
                                             "a metric for it has no query", True))
            elif analysis.uses_builtin_query(metric, settings):
                out.append((at + ("name",), f"{name} is a built-in PromQL metric; provider {provider!r} is a web "
                                            "provider: name the metric otherwise", False))
        elif tmpl is None and "query" not in metric and name not in BUILTIN_METRICS and name not in templates:
            out.append((at + ("name",),
                        f"unknown metric {name!r}: use {' or '.join(BUILTIN_METRICS)}, a sluice.yaml "
                        "metricTemplates entry, or give it a query", False))
        if "minRequests" in metric and not (kind != "web" and analysis.uses_builtin_query(metric, settings)):
            out.append((at + ("minRequests",), "minRequests counts the Istio requests of the built-in metrics "
                                               f"({', '.join(BUILTIN_METRICS)}); this metric asks its own query",
                        True))
        if isinstance(metric.get("query"), str):
            out += [(at + ("query",), p, False) for p in analysis.template_problems(metric["query"])]
        if kind == "web" and metric.get("compareToStable"):
            out.append((at + ("compareToStable",), f"provider {provider!r} is a web provider: it answers about "
                        "now only, and at a last step of 100% stable must be asked about its last window "
                        "(a PromQL provider can); compare in the endpoint or use a PromQL metric", True))
        for key, value in (metric.get("compareToStable") or {}).items():
            if not analysis.finite(value):
                out.append((at + ("compareToStable", key), f"compareToStable.{key}: use a finite number", False))
        own = analysis.condition_problems(metric)
        out += [(at + (key,), message, True) for key, message in own]
        merged = None if own else analysis.merged_condition_problem(metric, template)
        if merged:
            key = next((k for k in ("max", "min", "range") if k in metric), "name")
            out.append((at + (key,), merged, True))
        cond = analysis.condition(metric, template)
        if "tolerance" in cond and not cond.keys() & {"equals", "notEquals"}:
            out.append((at + (("tolerance",) if "tolerance" in metric else ("name",)),
                        "tolerance applies to equals or notEquals only", "tolerance" in metric))
    return out


def _host_keys(rel: Release) -> list[tuple[tuple[Any, ...], str]]:
    keys = [(("spec", "service", "name") if "name" in rel.service else ("spec", "service"), rel.fqdn)]
    for i, host in enumerate(rel.service.get("hosts") or []):
        if host != rel.service_name:
            keys.append((("spec", "service", "hosts", i), host_fqdn(host, rel.namespace)))
    return keys


def load_files(files: Mapping[str, bytes], *, cache: LoadCache | None = None,
               blobs: Mapping[str, str] | None = None, policy: Mapping[str, Any] | None = None) -> RepoLoad:
    """Load every release under ``releases/`` and ``sluice.yaml`` from ``files``,
    within the controller's ``policy`` (see ``core.policy``) when there is one.

    With a ``cache`` kept across calls, only files whose blob changed (or whose
    settings, policy or config files did) are parsed and checked again; the
    cross-file claims are redone for the hosts and objects a change touches.
    ``blobs`` (path -> git blob id, as a git tree gives them) saves hashing."""
    with collector_paused():   # millions of containers that stay alive (core/bulk.py)
        return _load(files, cache if cache is not None else LoadCache(), blobs or {}, policy)


def _load(files: Mapping[str, bytes], cache: LoadCache, ids: Mapping[str, str],
          policy: Mapping[str, Any] | None) -> RepoLoad:
    settings_blob = _blob(SETTINGS_FILE, files, ids)
    context = (settings_blob, _fingerprint(policy))
    settings, problems = cache.settings(context, lambda: _settings(files, policy))
    out = RepoLoad(settings=settings)
    entries: dict[str, _Entry] = {}
    for path in sorted(p for p in files if is_release_path(p) and not is_config_path(p, files)):
        blob = ids.get(path) or blob_id(files[path])   # with ``blobs``, an unchanged file's bytes are never read
        entry = cache.entries.get(path)
        if entry is None or entry.blob != blob or entry.context != context or not _deps_same(entry, files, ids):
            entry = _entry(path, files[path], blob, context, files, ids, settings, policy, cache)
        entries[path] = entry
    cache.claims.update(entries)
    cache.entries = entries
    pending: dict[str, list[Problem]] = {}
    refused: dict[str, list[Problem]] = {}
    for path, entry in entries.items():
        if entry.fatal is not None:
            out.invalid[path] = [entry.fatal]
        elif entry.release is None:
            pending[path] = list(entry.located(files[path], tuple(entry.raw)))
        else:
            raw = entry.refusals or cache.claims.clashes(path)
            if raw:
                refused[path] = list(entry.located(files[path], tuple(raw)))
            else:
                out.releases.append(entry.release)
    out.invalid.update(pending)
    out.invalid.update(refused)
    if problems:   # invalid settings hold every release as it runs: no default, no "no rules"
        problems = list(problems)
        _hold_all(out, problems[0])
    for path in sorted(out.invalid):
        problems.extend(out.invalid[path])
    out.problems = problems
    return out


def _fingerprint(policy: Mapping[str, Any] | None) -> str:
    """The policy as text, so a cached result is reused only under the same policy."""
    return json.dumps(policy, sort_keys=True, default=repr) if policy is not None else ""


def _deps_same(entry: _Entry, files: Mapping[str, bytes], ids: Mapping[str, str]) -> bool:
    """Are the config files an entry read (``spec.config.files``) as they were?"""
    return all(_blob(p, files, ids) == blob for p, blob in entry.deps.items())


def _blob(path: str, files: Mapping[str, bytes], ids: Mapping[str, str]) -> str | None:
    """The blob id of ``path`` (as git gave it, else hashed); None when there is no such file."""
    return ids.get(path) or blob_id(files[path]) if path in files else None


def _entry(path: str, data: bytes, blob: str, context: tuple[str | None, str], files: Mapping[str, bytes],
           ids: Mapping[str, str], settings: Mapping[str, Any], policy: Mapping[str, Any] | None,
           cache: LoadCache) -> _Entry:
    """One release file's outcome in ``context``: every check but the cross-file claims."""
    entry = _Entry(path, blob, context)
    bad_path = _path_problems(path)
    if bad_path:
        entry.raw = [((), m, False) for m in bad_path]
        return entry
    # by path and blob: a file's own checks depend on where it is (namespace = folder, name = file)
    res = cache.get(f"{path}\0{blob}")
    if res is None:
        res = _load_file(path, data)
        cache.put(f"{path}\0{blob}", res)
    if res.fatal:
        entry.fatal = Problem(path, res.fatal.message, (), res.fatal.line, res.fatal.col, key_from_path(path))
        return entry
    entry.doc = res.doc
    rel = Release(path=path, doc=res.doc, blob=blob)
    raw = list(res.raw)
    if res.schema_ok:
        raw += _metric_problems(rel, settings, policy) + hooks.problems(rel, policy)
        names = (rel.spec.get("config") or {}).get("files")
        if names:
            folder = config_folder(path)
            entry.deps = {folder + n: _blob(folder + n, files, ids) for n in names}
            config, bad_config = _config_files(rel, files)
            rel, raw = Release(path=path, doc=res.doc, blob=blob, files=config), raw + bad_config
    entry.raw = raw
    if raw:
        return entry
    entry.release = rel
    # tenancy first, so a release reaching into another team's hosts is refused
    # and cannot take the rightful owner down with it in a host clash
    entry.refusals = [(p, message, False) for _, p, message in
                      tenancy.check([rel], settings, policy) + podsecurity.check([rel], policy)]
    if not entry.refusals:
        entry.claims = [(what, p) for p, host in _host_keys(rel) for what in (f"service host {host}",)]
        entry.claims += [(what, p) for p, what in adopt.claims(rel)]
    return entry


def _hold_all(out: RepoLoad, first: Problem) -> None:
    """Every release becomes invalid (so it is left as it runs, never changed or pruned)."""
    why = f"held: {SETTINGS_FILE} is invalid: {first}"
    for rel in out.releases:
        out.invalid[rel.path] = [Problem(rel.path, why, (), 1, 1, rel.key)]
    for path, found in out.invalid.items():
        if not any(p.message == why for p in found):
            found.append(Problem(path, why, (), 1, 1, found[0].release if found else key_from_path(path)))
    out.releases = []


def locate(path: str, data: bytes, doubts: list[tuple[tuple[Any, ...], str]], release: str) -> list[Problem]:
    """Problems at file:line:col for ``doubts`` (a JSON path into the document and
    a message each), found by other parts of the core (e.g. an untrusted status)."""
    return _locate(path, data, [(p, message, False) for p, message in doubts], release)
