"""Plain data shared by the core: a loaded Release, labels, phases, strategies.

A Release keeps its document as plain Python data (dicts, lists, scalars) as
parsed from YAML, with typed accessors for what every part of the core reads.
Defaults of optional fields live here, in one place, so the renderer, the
decision function and the plan agree on them (docs/release-spec.md).
"""

from __future__ import annotations

from functools import cached_property
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from reconciler.core.durations import format_duration, parse_duration

API_VERSION = "sluice.dev/v1alpha1"
KIND = "Release"
SETTINGS_KIND = "Settings"

# Ownership labels on every object Sluice renders (invariant 8).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "sluice"
LABEL_RELEASE = "sluice.dev/release"          # release name
LABEL_RELEASE_NS = "sluice.dev/release-namespace"
LABEL_INSTANCE = "sluice.dev/instance"        # which Sluice installation applied it (--instance)
DEFAULT_INSTANCE = "sluice"
LABEL_VERSION = "version"
LABEL_APP = "app"
FIELD_MANAGER = "sluice"

STRATEGIES = ("canary", "blueGreen", "abTesting", "darkLaunch", "mirror", "rolling", "recreate")
MESH_STRATEGIES = ("canary", "blueGreen", "abTesting", "darkLaunch", "mirror")
PHASES = (
    "Idle", "Progressing", "Paused", "WaitingApproval", "Promoted",
    "RolledBack", "Aborted", "Failed", "Invalid",
)
LIVE_PHASES = ("Progressing", "Paused", "WaitingApproval")   # a new version is rolling out
DOWN_PHASES = ("RolledBack", "Aborted", "Failed")             # the last rollout was rolled back
BUILTIN_METRICS = ("request-success-rate", "request-duration")

DEFAULT_MAX_FAILED_CHECKS = 3
DEFAULT_INTERVAL = "1m"
DEFAULT_PROGRESS_DEADLINE = "10m"
DEFAULT_SCALE_DOWN_DELAY = "30s"


@dataclass(frozen=True)
class Release:
    """One Release document as loaded from ``releases/<ns>/<name>.yaml``."""

    path: str                      # repo-relative, e.g. releases/bookinfo/reviews.yaml
    doc: Mapping[str, Any]         # the whole parsed document (plain data)
    blob: str = ""                 # content id (git blob sha or a hash); caches key on it
    files: Mapping[str, str] = field(default_factory=dict)   # spec.config.files name -> text (the loader reads them)

    # --- identity -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.doc["metadata"]["namespace"]

    @cached_property
    def key(self) -> str:
        """``namespace/name``: how commands and commits name a release (asked for often: kept)."""
        return f"{self.namespace}/{self.name}"

    # --- spec -----------------------------------------------------------
    @property
    def spec(self) -> Mapping[str, Any]:
        return self.doc.get("spec") or {}

    @property
    def status(self) -> Mapping[str, Any]:
        return self.doc.get("status") or {}

    @property
    def service(self) -> Mapping[str, Any]:
        return self.spec.get("service") or {}

    @property
    def service_name(self) -> str:
        return self.service.get("name") or self.name

    @property
    def fqdn(self) -> str:
        """The cluster-local host of the release's Service."""
        return host_fqdn(self.service_name, self.namespace)

    @property
    def target_container(self) -> str | None:
        """The container that gets ``spec.target.image`` (None when it cannot be told)."""
        return self.target_container_in(self.template)

    @property
    def template(self) -> Mapping[str, Any]:
        """The pod template of new revisions: ``spec.template``, or under ``spec.workloadRef``
        the adopted Deployment's, as recorded in ``status.adopted`` (empty before adoption)."""
        return self.spec.get("template") or (self.status.get("adopted") or {}).get("template") or {}

    def target_container_in(self, template: Mapping[str, Any]) -> str | None:
        """Which container of ``template`` gets the target image (see ``target_container``)."""
        return target_container({**self.spec, "template": template}, self.name)

    @property
    def hosts(self) -> list[str]:
        return list(self.service.get("hosts") or [self.service_name])

    @property
    def ports(self) -> list[Mapping[str, Any]]:
        """The Service's ports: ``spec.service.ports`` as written, or the one-port shorthand
        ``spec.service.port`` as a port named ``http`` whose targetPort defaults to it."""
        svc = self.service
        if svc.get("ports"):
            return list(svc["ports"])
        port = int(svc["port"])
        return [{"name": "http", "port": port, "targetPort": int(svc.get("targetPort", port))}]

    @property
    def replicas(self) -> int:
        return int(self.spec.get("replicas", 1))

    @property
    def target(self) -> Mapping[str, Any]:
        return self.spec.get("target") or {}

    @property
    def strategy_kind(self) -> str:
        """The one strategy key present (the loader guarantees exactly one)."""
        strat = self.spec.get("strategy") or {}
        for kind in STRATEGIES:
            if kind in strat:
                return kind
        return "canary"

    @property
    def strategy(self) -> Mapping[str, Any]:
        return (self.spec.get("strategy") or {}).get(self.strategy_kind) or {}

    @property
    def is_mesh(self) -> bool:
        """Whether the release routes through Istio (everything but rolling/recreate)."""
        return self.strategy_kind in MESH_STRATEGIES

    @property
    def metrics(self) -> list[Mapping[str, Any]]:
        return list((self.spec.get("analysis") or {}).get("metrics") or [])

    @property
    def paused(self) -> bool:
        return bool(self.spec.get("paused", False))

    def with_status(self, status: Mapping[str, Any] | None) -> "Release":
        """The same release with another ``status`` block (documents are not mutated)."""
        doc = dict(self.doc)
        if status is None:
            doc.pop("status", None)
        else:
            doc["status"] = status
        return Release(path=self.path, doc=doc, blob=self.blob, files=self.files)

    def seconds(self, value: Any, default: str) -> float:
        """A duration field, falling back to ``default``."""
        return parse_duration(value if value is not None else default)


def host_fqdn(host: str, namespace: str) -> str:
    """A service host as Istio resolves it from ``namespace``: a short name is a
    Service of that namespace; a name with dots is taken as written."""
    return host if "." in host else f"{host}.{namespace}.svc.cluster.local"


def target_container(spec: Mapping[str, Any], release_name: str = "") -> str | None:
    """Which container of ``spec.template`` runs ``spec.target.image``: the one
    ``target.container`` names, else the one named like the service (whose name
    defaults to the release's), else the only one. None when the spec does not
    say; the loader reports that, so a loaded Release always has one."""
    containers = [c.get("name") for c in (spec.get("template") or {}).get("containers") or [] if isinstance(c, dict)]
    target = spec.get("target") or {}
    if target.get("container"):
        return target["container"] if target["container"] in containers else None
    svc = (spec.get("service") or {}).get("name") or release_name
    return next((c for c in containers if c == svc), containers[0] if len(containers) == 1 else None)


def canary_steps(strategy: Mapping[str, Any]) -> list[int]:
    """Step weights of a canary: explicit ``steps`` or ``stepWeight`` up to ``maxWeight``."""
    if strategy.get("steps"):
        return [int(w["weight"]) if isinstance(w, Mapping) else int(w) for w in strategy["steps"]]
    step = int(strategy.get("stepWeight", 10))
    top = int(strategy.get("maxWeight", 50))
    if step <= 0:
        return []
    return list(range(step, top + 1, step))


def canary_step_specs(strategy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each canary step as ``{weight, pause?, approval?}``: a plain number in
    ``steps`` is ``{weight: n}``; ``{weight: 20, pause: 10m}`` holds that step
    10m (instead of ``interval``) before its check; ``approval: true`` waits for
    ``sluice approve --step N`` before the step starts."""
    raw = strategy.get("steps") or []
    if not raw:
        return [{"weight": w} for w in canary_steps(strategy)]
    return [dict(s) if isinstance(s, Mapping) else {"weight": int(s)} for s in raw]


@dataclass(frozen=True)
class Problem:
    """One validation problem, located by file and JSON path inside the document.

    ``line``/``col`` are 1-based and filled in by the loader from the YAML
    positions; ``path`` is the list of keys/indexes to the offending node.
    """

    file: str
    message: str
    path: tuple[Any, ...] = ()
    line: int = 1
    col: int = 1
    release: str = ""              # namespace/name when known

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file, "line": self.line, "column": self.col,
            "message": self.message, "path": list(self.path), "release": self.release or None,
        }


@dataclass
class RepoLoad:
    """What loading a config repo yields: the valid releases, the problems,
    and the repo-wide settings. Invalid files never stop the valid ones."""

    releases: list[Release] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    settings: Mapping[str, Any] = field(default_factory=dict)
    invalid: dict[str, list[Problem]] = field(default_factory=dict)  # path -> problems

    def by_key(self) -> dict[str, Release]:
        return {r.key: r for r in self.releases}


@dataclass(frozen=True)
class Event:
    """What one decision did to one release, for the commit that records it.

    ``summary`` is the part of the commit subject after ``<ns>/<name>: ``,
    e.g. ``canary v2 20% -> 30% (step 3/4)``. ``evidence`` holds one dict per
    metric: ``{name, value, min?, max?, ok, outcome}`` (outcome is ok, failed,
    nodata or error). The git engine turns an Event into subject, body and
    trailers (reconciler.core.messages) and reads them back as history.
    """

    release: str                   # namespace/name
    action: str                    # start|advance|promote|rollback|abort|pause|resume|wait-approval|approve|finalize|hold|drift
    summary: str
    weight: int | None = None      # new version's weight after the action
    previous_weight: int | None = None
    step: int | None = None
    steps: int | None = None
    version: str | None = None     # new version
    stable: str | None = None      # stable version
    phase: str | None = None
    reason: str = ""
    evidence: tuple[Mapping[str, Any], ...] = ()
    applied_after: float | None = None   # seconds from the step's commit to its routing being live
    trigger: str | None = None     # start/retarget: the person's commit that asked for this rollout (commit statuses)


@dataclass(frozen=True)
class Readiness:
    """Whether one version's Deployment can take traffic.

    ``state``: ``ready`` (observedGeneration current, updated = ready =
    available = desired replicas), ``scaling`` (it has the pods its current
    weight needs, not yet those of the next: it keeps its traffic, gets no
    more), ``progressing`` (not yet), ``failed``
    (the progress deadline passed, or the Deployment reports
    ProgressDeadlineExceeded), ``missing`` (no such Deployment yet).
    """

    version: str
    state: str
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class Applied:
    """Whether the traffic a release's status asks for is live, and since when.

    ``at``: the moment the live routing first carried this status's weights
    (the kubernetes target: Sluice's own apply, from the VirtualService's
    managedFields; the git target: when the applier, Argo CD or Flux, was
    first seen to have applied the commit that set them). None: not live
    yet; ``waiting`` says what it waits for. A step's analysis window opens
    at ``at`` and never before (docs/rollout.md "Analysis windows").
    ``known=False``: the target cannot tell (the git target with no applier
    configured); the window then opens when the step was committed.
    """

    at: datetime | None
    waiting: str = ""
    known: bool = True
    deadline: float | None = None   # seconds a step may wait for it before the rollout is held
    since: datetime | None = None   # when the target began waiting for this routing (the deadline counts
                                    # from the later of this and the step's commit)
    estimated: bool = False         # ``at`` is when this process first saw it live (after a restart), not
                                    # when it went live: meanwhile guard checks count failures

    @property
    def pending(self) -> bool:
        return self.known and self.at is None


@dataclass(frozen=True)
class MetricResult:
    """One metric of one analysis check.

    ``outcome``: ``ok``; ``failed`` (outside its condition or worse than
    stable by more than allowed); ``nodata`` (empty result, NaN, +Inf, -Inf,
    fewer requests than ``minRequests``, or a window too short to ask);
    ``error`` (provider unreachable or the query failed). Only ``ok``
    advances; see docs/release-spec.md "Analysis outcomes". A ``dry_run``
    result is recorded like any other and never counts in the verdict.

    What was asked is kept with the answer: the ``provider`` by name, the
    ``query`` as the provider describes it (secrets redacted), and the
    ``window`` in seconds actually queried (a step's window starts when its
    weight was applied).
    """

    name: str
    outcome: str
    value: float | None = None
    min: float | None = None
    max: float | None = None
    stable_value: float | None = None   # set when the metric compares to stable
    message: str = ""
    equals: float | None = None         # ok when |value - equals| <= tolerance
    not_equals: float | None = None     # ok when |value - notEquals| > tolerance
    tolerance: float | None = None
    provider: str = ""
    query: str = ""
    window: float | None = None
    dry_run: bool = False
    took: float | None = None           # seconds the answer took (hooks: reconciler.core.hooks)
    answer: str = ""                    # the first characters of the answer, redacted (hooks)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_status(self) -> dict[str, Any]:
        """The dict written to ``status.lastAnalysis.results`` and commit evidence."""
        out: dict[str, Any] = {"name": self.name}
        if self.value is not None:
            out["value"] = round(self.value, 6)
        if self.stable_value is not None:
            out["stable"] = round(self.stable_value, 6)
        for key, bound in (("min", self.min), ("max", self.max), ("equals", self.equals),
                           ("notEquals", self.not_equals), ("tolerance", self.tolerance)):
            if bound is not None:
                out[key] = bound
        out["ok"] = self.ok
        if not self.ok:
            out["outcome"] = self.outcome
        if self.message and not self.ok:
            out["message"] = self.message
        if self.dry_run:
            out["dryRun"] = True
        if self.window is not None:
            out["window"] = format_duration(self.window)
        if self.provider:
            out["provider"] = self.provider
        if self.query:
            out["query"] = self.query
        if self.took is not None:
            out["took"] = format_duration(self.took)
        if self.answer:
            out["answer"] = self.answer
        return out
