"""Rollout hooks (``spec.hooks``): which are due, what they are sent, how they count.

Pure: no I/O, no clock. The controller asks which hooks a moment calls
(``gating`` at a check, ``pre_rollout_due`` before step 1, ``fired`` after a
committed event), builds each one's ``Call`` with its JSON ``body``
(``sluice.dev/hook/v1``, docs/hooks.md), has reconciler.adapters.hooks send
it, and turns each ``Answer`` into evidence with ``result``:

- gating hooks (``pre-rollout``, ``step``, ``pre-promotion``) become a
  MetricResult (provider ``hook``, value the status code, outcome ok for a
  2xx, failed for anything else, no answer included) that joins the check's
  metric results: ``analysis.verdict``, failed-check counting, the step's
  commit evidence and ``sluice history`` carry it as they carry a metric;
- fire-and-record hooks (``post-promotion``, ``rollback``, ``event``) are
  sent off the pass thread; their result becomes the same kind of evidence
  and ``status.lastHooks`` entry in the release's next commit (``record``).

``problems`` is what validation says about ``spec.hooks`` beyond the schema,
including the controller policy's rule on where hooks may point (SSRF).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Mapping
from urllib.parse import urlsplit

from reconciler.core import analysis, policy as policies
from reconciler.core import durations
from reconciler.core.durations import parse_duration
from reconciler.core.model import Event, MetricResult, Release
from reconciler.core.trusted import parse_time

API = "sluice.dev/hook/v1"
PROVIDER = "hook"                 # the provider name hook results carry as evidence
GATING = ("pre-rollout", "step", "pre-promotion")
RECORDED = ("post-promotion", "rollback", "event")
TYPES = GATING + RECORDED
DEFAULT_TIMEOUT = 10.0            # seconds per attempt, the whole request
MAX_TIMEOUT = 30.0                # seconds per attempt at most (schema: timeout at most 30s)
MAX_RETRIES = 2                   # more attempts at most (schema: retries at most 2)
CHECK_BUDGET = 30.0               # seconds a check's gating hooks take at most, all of them together, retries
#                                   included: a hanging hook delays its release's pass (and every other
#                                   release's decision behind it) by no more than this
MAX_HOOKS = 10                    # hooks of one release (schema maxItems): a check's hooks all run at once
RETRY_PAUSE = 0.5                 # seconds before the 2nd attempt; 1s before the 3rd, 1.5s before the 4th
ANSWER_CHARS = 200                # first characters of an answer kept as evidence
KEEP_RECORDED = 10                # status.lastHooks keeps this many results, newest last
ROLLBACK_ACTIONS = ("rollback", "abort")
NOT_EVENTS = ("hook", "render")   # recording a hook's result is not an event that fires hooks again


@dataclass(frozen=True)
class Call:
    """One hook to send: where, how long each attempt may take, how often, what."""

    name: str
    type: str
    url: str
    timeout: float
    retries: int
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bound(self) -> float:
        """Seconds the call takes at most: every attempt and the pauses between them (a gating
        hook's also at most CHECK_BUDGET: its retries happen within that budget)."""
        whole = self.timeout * (self.retries + 1) + RETRY_PAUSE * self.retries * (self.retries + 1) / 2
        return min(whole, CHECK_BUDGET) if self.type in GATING else whole


@dataclass(frozen=True)
class Answer:
    """What one hook answered (the adapter fills it in; its text is redacted already).

    ``status``: the HTTP status code, None when nothing answered (``error`` says
    why: a timeout, a refused connection); ``seconds``: the whole call, retries
    included; ``said``: the first characters of the answer; ``at``: when sent."""

    name: str
    type: str
    url: str                       # as shown: secrets hidden
    status: int | None
    seconds: float
    said: str = ""
    error: str = ""
    attempts: int = 1
    at: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def of(rel: Release, *types: str) -> list[Mapping[str, Any]]:
    """``rel``'s hooks of ``types`` (all when none is given), in spec order."""
    return [h for h in rel.spec.get("hooks") or () if not types or h.get("type") in types]


def gates_first_step(rel: Release) -> bool:
    """Whether step 1 waits for pre-rollout hooks (never skipped; a hotfix with
    ``skipAnalysis`` skips every check, hooks included)."""
    return bool(of(rel, "pre-rollout")) and not rel.spec.get("skipAnalysis")


def pre_rollout_due(rel: Release, canary_ready: bool, now: datetime, interval: float) -> bool:
    """Whether the pre-rollout hooks run now: a mesh rollout at step 0 whose new version
    is ready; at once, then after a failed try once per ``interval`` seconds (the try's
    time is ``status.lastAnalysis.at``, in git, so a restart keeps the cadence)."""
    st = rel.status
    if not (rel.is_mesh and gates_first_step(rel) and canary_ready and st.get("phase") == "Progressing"
            and st.get("canary") and int(st.get("step", 0)) == 0):
        return False
    tried, started = parse_time((st.get("lastAnalysis") or {}).get("at")), parse_time(st.get("stepStartedAt"))
    if tried is None or (started is not None and tried < started):
        return True   # not tried at this step yet
    return (now - tried).total_seconds() >= interval


def gating(rel: Release, step: int, stage_count: int) -> list[Mapping[str, Any]]:
    """The hooks of a check at ``step``: every step hook, and the pre-promotion hooks
    when a pass of this check promotes (the last stage, or while promotion waits)."""
    last = step >= stage_count or rel.status.get("waitingFor") == "promotion"
    return of(rel, "step", "pre-promotion") if last else of(rel, "step")


def fired(rel: Release, event: Event) -> list[Mapping[str, Any]]:
    """The fire-and-record hooks a committed ``event`` calls."""
    if event.action in NOT_EVENTS:
        return []
    types = ["event"]
    if event.action == "promote":
        types.append("post-promotion")
    if event.action in ROLLBACK_ACTIONS:
        types.append("rollback")
    return of(rel, *types)


def timeout_of(hook: Mapping[str, Any]) -> float:
    try:
        seconds = parse_duration(hook.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT   # validation refuses it first
    return min(seconds, MAX_TIMEOUT) if seconds > 0 else DEFAULT_TIMEOUT


def body(rel: Release, hook: Mapping[str, Any], *, steps: int | None, commit: str | None,
         event: Event | None = None, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document POSTed to ``hook`` (docs/hooks.md "The body"): about ``rel`` as
    its ``status`` says (default: the release's), ``steps`` stages in all (null for a
    strategy without steps), and the ``event`` that fired it. A rollback's or an abort's
    ``revisions.new`` is the revision it rolled back (``status.rolledBack``)."""
    st = status if status is not None else rel.status
    canary, stable = st.get("canary") or {}, st.get("stable") or {}
    if not canary and event is not None and event.action in ROLLBACK_ACTIONS:
        canary = st.get("rolledBack") or {}
    out: dict[str, Any] = {
        "apiVersion": API, "hook": hook["name"], "type": hook["type"],
        "release": rel.key, "namespace": rel.namespace, "name": rel.name,
        "phase": st.get("phase"),
        "revisions": {"stable": _revision(stable), "new": _revision(canary) if canary else None},
        "step": st.get("step"), "steps": steps if rel.is_mesh else None, "weight": st.get("weight"),
        "evidence": list((st.get("lastAnalysis") or {}).get("results") or []),
        "metadata": dict(hook.get("metadata") or {}),
        "commit": commit,
    }
    if event is not None:
        out["event"] = {"action": event.action, "summary": event.summary, "reason": event.reason or None}
    return out


def _revision(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    if not entry:
        return None
    return {k: entry[k] for k in ("version", "image", "revision", "hash") if entry.get(k) is not None}


def call(rel: Release, hook: Mapping[str, Any], *, steps: int | None, commit: str | None,
         event: Event | None = None, status: Mapping[str, Any] | None = None) -> Call:
    """``hook`` ready to send, with its body."""
    retries = min(int(hook.get("retries", 0)), MAX_RETRIES)
    return Call(hook["name"], hook["type"], hook["url"], timeout_of(hook), retries,
                body(rel, hook, steps=steps, commit=commit, event=event, status=status))


def _words(answer: Answer) -> str:
    if answer.status is None:
        return answer.error or "no answer"
    said = f": {answer.said}" if answer.said else ""
    return f"answered {answer.status}{said}"


def result(answer: Answer) -> MetricResult:
    """A hook's answer as an analysis result: ok for a 2xx, failed for anything else
    (a non-2xx, a timeout, a refused connection), never ``nodata`` or ``error``, so
    ``onNoData`` and ``onProviderError`` never soften a hook."""
    return MetricResult(answer.name, "ok" if answer.ok else "failed",
                        float(answer.status) if answer.status is not None else None,
                        message="" if answer.ok else _words(answer), provider=PROVIDER,
                        query=f"POST {answer.url}", took=answer.seconds, answer=answer.said)


def recorded(answer: Answer) -> dict[str, Any]:
    """A fire-and-record hook's result as a ``status.lastHooks`` entry (and commit evidence)."""
    return {**result(answer).to_status(), "type": answer.type, "at": answer.at, "attempts": answer.attempts}


def record(status: Mapping[str, Any], answers: list[Answer]) -> dict[str, Any]:
    """``status`` with ``answers`` added to ``lastHooks`` (newest last, at most KEEP_RECORDED)."""
    before = status.get("lastHooks")
    kept = [h for h in before if isinstance(h, Mapping)] if isinstance(before, list) else []   # hand edits: ignored
    kept += [recorded(a) for a in answers]
    return {**status, "lastHooks": kept[-KEEP_RECORDED:]}


def record_event(rel: Release, status: Mapping[str, Any], answers: list[Answer]) -> Event:
    """The commit that records fire-and-record results when nothing else happened to ``rel``."""
    words = ", ".join(f"{a.type} hook {a.name} {a.status if a.status is not None else 'no answer'}" for a in answers)
    return Event(rel.key, "hook", f"record {words}", weight=status.get("weight"), phase=status.get("phase"),
                 reason="results of hooks sent after an earlier commit",
                 evidence=tuple(recorded(a) for a in answers))


# --- validation ------------------------------------------------------------------
def problems(rel: Release, policy: Mapping[str, Any] | None) -> list[tuple[tuple[Any, ...], str, bool]]:
    """What the schema cannot say about ``spec.hooks`` (path, message, at-key): the URL,
    the timeout's maximum, unique names not shared with a metric, gating hooks on a
    strategy without steps, and, under a controller policy, hosts outside the folder's."""
    out: list[tuple[tuple[Any, ...], str, bool]] = []
    seen = {str(m.get("name")) for m in rel.metrics}
    hosts = _allowed_hosts(rel, policy)
    for i, hook in enumerate(rel.spec.get("hooks") or ()):
        at = ("spec", "hooks", i)
        name = hook.get("name")
        if name in seen:
            out.append((at + ("name",), f"hook name {name!r} is used twice (hooks and metrics share the names "
                                        "their results are recorded under)", False))
        seen.add(name)
        url = str(hook.get("url", ""))
        why = analysis.url_problem(url)
        if why is None and any(c.isspace() or not c.isprintable() for c in url):
            why = "has whitespace or a control character in it"
        elif why is None and "@" in (urlsplit(url).netloc or ""):
            why = ("has user info (user:password@): it would be sent as part of the host name; put a token in "
                   "the hook's query or use a receiver that needs none")
        if why:
            out.append((at + ("url",), f"spec.hooks[{i}].url {why}", False))
        elif hosts is not None and not any(fnmatchcase(urlsplit(hook["url"]).hostname or "", g) for g in hosts):
            out.append((at + ("url",), f"spec.hooks[{i}].url: under the controller policy a hook may only call a host "
                        f"the policy grants this folder ({', '.join(hosts) or 'none'}): a repo edit must not "
                        "choose where the controller POSTs from inside the cluster", False))
        if "timeout" in hook:
            why = durations.timeout_problem(hook["timeout"], most=MAX_TIMEOUT, subject="hook")
            if why:
                out.append((at + ("timeout",), f"spec.hooks[{i}].timeout: {why}", False))
        if hook.get("type") in GATING and not rel.is_mesh:
            out.append((at + ("type",), f"a {hook.get('type')} hook gates a step; the {rel.strategy_kind} strategy "
                                        "has no steps (use post-promotion, rollback or event)", False))
    return out


def _allowed_hosts(rel: Release, policy: Mapping[str, Any] | None) -> list[str] | None:
    """Host globs a hook of ``rel`` may call under ``policy``; None: any (no policy)."""
    if policy is None:
        return None
    granted = policies.folders(policy) or {}
    allowance = granted.get(rel.path.split("/")[1]) or {}
    return list(allowance.get("hosts") or [])
