"""What a check asks of the metrics providers, and how it judges the answers.

Built-in metrics use Istio's standard telemetry scoped to the judged
workload (the Deployment ``<name>-<version>``), as reported by the
destination proxy:

- ``request-success-rate``: % of requests not answered 5xx;
- ``request-duration``: p99 latency in ms.

Custom metrics are PromQL templates, per release (``query``) or repo-wide
(``sluice.yaml`` ``metricTemplates``), with ``{{ variable }}`` placeholders:
namespace, release, service, canary_version, stable_version, workload,
interval. Values are escaped for PromQL label strings. A metric (or its
template) names its provider (``provider:``, default ``prometheus``); a
``web`` provider asks its own URL, templated with the same variables, and
takes no query. An unknown variable is refused by validation
(``template_problems``); should one reach ``plan_checks``, that metric's
check carries the ``error`` and is never asked, the others are.

Windows: a check is judged on its own step's traffic. The query window
(``{{ interval }}``) is the metric's interval, cut to the time since the
step's weight was applied (``applied_at``, else ``status.stepStartedAt``),
in whole seconds; under ``MIN_WINDOW`` nothing is asked and the result is
``nodata``. The window used is recorded with the result.

compareToStable when stable has no traffic (a last canary step of 100%):
stable's value is read from its window that ended when that step began
(``status.stableServedUntil``, kept through a pause), the last moment it served; the comparison is never skipped and never judged on
an empty stable.

Conditions: ``min``, ``max``, ``range: [lo, hi]`` (both inclusive),
``equals`` or ``notEquals`` with an optional absolute ``tolerance``; every
number finite, and a min never above a max (``condition_problems``,
``merged_condition_problem``).
``minRequests`` (built-ins only): fewer requests to the judged workload in
the window than that is ``nodata``, whatever the value.

Outcomes: ``ok``; ``failed`` (outside its condition, or worse than stable by
more than compareToStable allows); ``nodata`` (empty result, NaN, +-Inf, too
few requests, too short a window); ``error`` (provider unreachable, query
failed). ``verdict`` turns a check's results into pass/fail/hold using
``onNoData`` (default fail) and ``onProviderError`` (default hold): only an
all-ok check passes. ``dryRun`` metrics are measured and recorded, and never
count in the verdict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as parse_jsonpath

from reconciler.core import durations
from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.model import DEFAULT_INTERVAL, MetricResult, Release
from reconciler.core.trusted import parse_time

DEFAULT_PROVIDER = "prometheus"   # the provider of a metric that names none (and of a lone providers.prometheus)
MIN_WINDOW = 1.0                  # seconds: a shorter window since the weight was applied is not asked
QUERY_CHARS = 500                 # a recorded query is cut here: status stays compact
MAX_PROVIDER_TIMEOUT = 60.0      # seconds: a provider's timeout bounds each whole request, at most this
CONDITION_KEYS = ("min", "max", "range", "equals", "notEquals", "tolerance")
VARIABLES = ("namespace", "release", "service", "canary_version", "stable_version", "workload", "interval")

_SEL = 'reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}"'
BUILTIN = {
    "request-success-rate": (
        f'sum(rate(istio_requests_total{{{_SEL},response_code!~"5.."}}[{{{{ interval }}}}])) / '
        f'sum(rate(istio_requests_total{{{_SEL}}}[{{{{ interval }}}}])) * 100'),
    "request-duration": (
        f'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{_SEL}}}'
        f'[{{{{ interval }}}}])) by (le))'),
}
# how many requests the judged workload answered in the window (minRequests)
REQUESTS = f'sum(increase(istio_requests_total{{{_SEL}}}[{{{{ interval }}}}]))'
LOWER_IS_WORSE = {"request-success-rate"}
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A query template names a variable Sluice does not know."""


@dataclass(frozen=True)
class MetricCheck:
    name: str
    query: str | None                # PromQL for the new version; None: the provider asks its own endpoint
    stable_query: str | None         # when compareToStable is set (PromQL providers)
    min: float | None
    max: float | None
    max_increase: float | None = None
    max_increase_percent: float | None = None
    lower_is_worse: bool = False
    window: float = 60.0             # seconds actually queried
    stable_at: str | None = None     # query stable at this time, not now (stable has no traffic now)
    provider: str = DEFAULT_PROVIDER
    variables: Mapping[str, str] = field(default_factory=dict)          # of the new version
    stable_variables: Mapping[str, str] = field(default_factory=dict)   # of the stable version
    requests_query: str | None = None          # minRequests: requests of the new version in the window
    stable_requests_query: str | None = None
    min_requests: float = 0
    equals: float | None = None
    not_equals: float | None = None
    tolerance: float | None = None
    dry_run: bool = False
    skip: str = ""                   # why nothing is asked (the result is nodata), e.g. a window under MIN_WINDOW
    error: str = ""                  # why it cannot be asked (the result is an error), e.g. an unknown variable

    @property
    def compares(self) -> bool:
        """Whether the new version is judged against stable too."""
        return self.max_increase is not None or self.max_increase_percent is not None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render_query(template: str, variables: Mapping[str, str],
                 escape: Callable[[str], str] = _escape) -> str:
    """``template`` with its ``{{ variables }}`` filled in, each value passed
    through ``escape`` (PromQL label strings by default; a web provider passes
    URL or JSON escaping). ``interval`` is a duration and is never escaped."""
    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in variables:
            raise TemplateError(f"unknown variable {{{{ {key} }}}} in query (known: {', '.join(sorted(variables))})")
        return escape(variables[key]) if key != "interval" else variables[key]
    return _VAR.sub(sub, template)


def template_problems(template: str) -> list[str]:
    """What is wrong with a template's variables (for validation)."""
    try:
        render_query(template, {k: "x" for k in VARIABLES})
    except TemplateError as exc:
        return [str(exc)]
    return []


def compile_json_path(text: str):
    """A web provider's ``jsonPath`` compiled (jsonpath-ng's extended syntax;
    ``{$.x}`` as Argo Rollouts writes it is accepted). ValueError on bad syntax."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    try:
        return parse_jsonpath(text)
    except JSONPathError as exc:
        raise ValueError(f"invalid jsonPath {text!r}: {exc}") from None


def url_problem(url: str, *, base: bool = False) -> str | None:
    """Why ``url`` cannot be asked (None: it can): it must parse, with a host and a
    valid port; a ``base`` URL (a Prometheus address, under which the API's paths
    go) has no query string or fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    if port == 0:
        return "has port 0"
    if base and (parts.query or parts.fragment or "?" in url or "#" in url):
        return "is a base URL (the API's paths are added to it): no query string or fragment"
    return None


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def timeout_problem(value: Any) -> str | None:
    """Why a provider's ``timeout`` is refused (None: it is not)."""
    return durations.timeout_problem(value, most=MAX_PROVIDER_TIMEOUT, subject="provider", zero_ok=True)


def provider_problems(providers: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str, bool]]:
    """What the schema cannot say about ``providers`` blocks (path, message, at-key):
    an address or URL that does not parse, a timeout over the maximum, a web
    provider's jsonPath syntax, its url/body variables, a body sent with GET."""
    out: list[tuple[tuple[Any, ...], str, bool]] = []
    for name, cfg in providers.items():
        if not isinstance(cfg, Mapping):
            continue
        base = ("providers", name)
        if "timeout" in cfg:
            why = timeout_problem(cfg["timeout"])
            if why:
                out.append((base + ("timeout",), f"providers.{name}.timeout: {why}", False))
        for header, value in (cfg.get("headers") or {}).items():
            if isinstance(value, str) and not value.isascii() and not _latin1(value):
                out.append((base + ("headers", header), f"providers.{name}.headers.{header}: a character of "
                            "this value cannot be sent in an HTTP header (Latin-1 only)", False))
        if cfg.get("type") != "web":
            why = url_problem(str(cfg.get("address", "")), base=True) if "address" in cfg else None
            if why:
                out.append((base + ("address",), f"providers.{name}.address {why}", False))
            continue
        if isinstance(cfg.get("url"), str) and not template_problems(cfg["url"]):
            why = url_problem(render_query(cfg["url"], {k: "x" for k in VARIABLES}))
            if why:
                out.append((base + ("url",), f"providers.{name}.url {why}", False))
        try:
            compile_json_path(str(cfg.get("jsonPath", "")))
        except ValueError as exc:
            out.append((base + ("jsonPath",), f"providers.{name}.jsonPath: {exc}", False))
        for key in ("url", "body"):
            if isinstance(cfg.get(key), str):
                out += [(base + (key,), f"providers.{name}.{key}: {p}", False) for p in template_problems(cfg[key])]
        if cfg.get("body") is not None and cfg.get("method", "GET") == "GET":
            out.append((base + ("body",), f"providers.{name}.body: a body is sent with method: POST only", True))
    return out


def _prom_duration(seconds: float) -> str:
    return format_duration(seconds)   # 1m30s, 500ms: valid PromQL durations


def _own_condition(block: Mapping[str, Any]) -> dict[str, Any]:
    cond = {k: block[k] for k in CONDITION_KEYS if k in block}
    if isinstance(cond.get("range"), list) and len(cond["range"]) == 2:
        cond["min"], cond["max"] = cond.pop("range")
    return cond


def condition(metric: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """The success condition of a metric: ``min``/``max`` (``range: [lo, hi]``
    is both), or ``equals``/``notEquals`` with ``tolerance``. The metric's own
    keys win over its template's, key by key; a metric that sets bounds drops
    the template's equality and one that sets an equality drops the template's
    bounds, so the two kinds never mix."""
    own, inherited = _own_condition(metric), _own_condition(template)
    if own.keys() & {"min", "max"}:
        inherited = {k: v for k, v in inherited.items() if k in ("min", "max")}
    if own.keys() & {"equals", "notEquals"}:
        inherited = {k: v for k, v in inherited.items() if k == "tolerance"}
    return {**inherited, **own}


def finite(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or math.isfinite(value)


def condition_problems(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for a metric's or template's own condition keys that cannot go
    together, or that no value could ever fail (NaN, an infinite bound or tolerance)."""
    out = []
    for key in CONDITION_KEYS:
        values = block.get(key) if key == "range" and isinstance(block.get(key), list) else [block.get(key)]
        if not all(finite(v) for v in values):
            out.append((key, f"{key}: use a finite number (NaN or infinity makes a condition that can never "
                             "fail, or never pass)"))
    if out:
        return out
    bounds = [k for k in ("min", "max") if k in block]
    kinds = [k for k in ("range", "equals", "notEquals") if k in block]
    if len(kinds) > 1 or (kinds and bounds):
        keys = bounds + kinds
        out.append((keys[-1], f"{', '.join(keys)}: use one condition (min and max together make a range)"))
    rng = block.get("range")
    if isinstance(rng, list) and len(rng) == 2 and rng[0] > rng[1]:
        out.append(("range", f"range [{rng[0]:g}, {rng[1]:g}] is empty: its low end is above its high end"))
    if _numbers(block.get("min"), block.get("max")) and block["min"] > block["max"]:
        out.append(("max", f"min {block['min']:g} is above max {block['max']:g}: no value can pass"))
    return out


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def merged_condition_problem(metric: Mapping[str, Any], template: Mapping[str, Any]) -> str | None:
    """Why the condition a metric ends up with (its own keys over its template's) can
    never pass: a min above a max, one from the template and one from the metric."""
    cond = condition(metric, template)
    lo, hi = cond.get("min"), cond.get("max")
    if _numbers(lo, hi) and lo > hi:
        return f"min {lo:g} is above max {hi:g} (with its template's condition): no value can pass"
    return None


def provider_of(metric: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The name of the provider that answers ``metric``."""
    tmpl = (settings.get("metricTemplates") or {}).get(metric.get("template") or metric.get("name")) or {}
    return metric.get("provider") or tmpl.get("provider") or DEFAULT_PROVIDER


def uses_builtin_query(metric: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether ``metric`` is one of the built-ins, asked with its built-in query."""
    tmpl = (settings.get("metricTemplates") or {}).get(metric.get("template") or metric.get("name")) or {}
    return metric["name"] in BUILTIN and not metric.get("query") and not tmpl.get("query")


def _since_applied(rel: Release, now: datetime | None, applied_at: datetime | None) -> float | None:
    """Seconds since the step's weight was applied; None when not known."""
    if now is None:
        return None
    start = applied_at or parse_time(rel.status.get("stepStartedAt"))
    return None if start is None else (now - start).total_seconds()


def _window(configured: float, since: float | None) -> tuple[float, str]:
    """(window in seconds, why it is not asked) for a metric's configured window."""
    if since is None or since >= configured:
        return configured, ""
    window = float(max(0, math.floor(since)))   # whole seconds: every Prometheus-compatible store parses them
    if since < MIN_WINDOW:
        return window, (f"the step's weight was applied {max(since, 0):.3g}s ago: under the "
                        f"{MIN_WINDOW:g}s minimum window, nothing to judge yet")
    return window, ""


def plan_checks(rel: Release, settings: Mapping[str, Any], *, canary_version: str, stable_version: str,
                now: datetime | None = None, applied_at: datetime | None = None) -> list[MetricCheck]:
    """The queries of one check of ``rel`` at ``now``; each window starts no
    earlier than ``applied_at`` (else ``status.stepStartedAt``) when ``now`` is given."""
    templates = settings.get("metricTemplates") or {}
    defaults = settings.get("analysis") or {}
    analysis = rel.spec.get("analysis") or {}
    default_window = (analysis.get("interval") or defaults.get("interval")
                      or rel.strategy.get("interval") or DEFAULT_INTERVAL)
    default_min_requests = analysis.get("minRequests", defaults.get("minRequests", 0))
    since = _since_applied(rel, now, applied_at)
    out = []
    for metric in rel.metrics:
        name = metric["name"]
        tmpl = templates.get(metric.get("template") or name) or {}
        query = metric.get("query") or tmpl.get("query") or BUILTIN.get(name)
        window, skip = _window(parse_duration(metric.get("interval") or default_window), since)
        base = {"namespace": rel.namespace, "release": rel.name, "service": rel.service_name,
                "canary_version": canary_version, "stable_version": stable_version,
                "interval": _prom_duration(window)}
        canary_vars = {**base, "workload": f"{rel.name}-{canary_version}"}
        stable_vars = {**base, "workload": f"{rel.name}-{stable_version}"}
        compare = metric.get("compareToStable") or {}
        min_requests = metric.get("minRequests", default_min_requests) if uses_builtin_query(metric, settings) else 0
        counted = REQUESTS if min_requests else None
        cond = condition(metric, tmpl)
        lo, hi = cond.get("min"), cond.get("max")
        try:   # an unknown variable errs this metric only, never the whole check
            rendered = render_query(query, canary_vars) if query else None
            stable_rendered = render_query(query, stable_vars) if compare and query else None
            error = ""
        except TemplateError as exc:
            rendered = stable_rendered = None
            error = str(exc)
        out.append(MetricCheck(
            name=name, query=rendered, stable_query=stable_rendered, min=lo, max=hi,
            max_increase=compare.get("maxIncrease"), max_increase_percent=compare.get("maxIncreasePercent"),
            lower_is_worse=name in LOWER_IS_WORSE or (lo is not None and hi is None), window=window,
            stable_at=_stable_window_end(rel) if compare else None, provider=provider_of(metric, settings),
            variables=canary_vars, stable_variables=stable_vars,
            requests_query=render_query(counted, canary_vars) if counted else None,
            stable_requests_query=render_query(counted, stable_vars) if counted and compare else None,
            min_requests=min_requests or 0, equals=cond.get("equals"), not_equals=cond.get("notEquals"),
            tolerance=cond.get("tolerance"), dry_run=bool(metric.get("dryRun", False)), skip=skip, error=error))
    return out


def unplanned(rel: Release, why: str) -> tuple[MetricResult, ...]:
    """An ``error`` result for each metric of ``rel`` when its check could not even be
    planned: the verdict then follows onProviderError (default hold), never "not checked"."""
    return tuple(MetricResult(str(m.get("name", "?")), "error", None, message=why,
                              dry_run=bool(m.get("dryRun", False))) for m in rel.metrics)


def _stable_window_end(rel: Release) -> str | None:
    """When stable carries no traffic now (a final canary step of 100%), compare
    with stable's window just before this step began, when it still served:
    the step's ``stepStartedAt``. None: stable serves now, query it now."""
    if int(rel.status.get("weight", 0)) < 100:
        return None
    return rel.status.get("stableServedUntil") or rel.status.get("stepStartedAt")


def _bad(value: float | None) -> bool:
    return value is None or math.isnan(value) or math.isinf(value)


def _compact(query: str) -> str:
    """A query as recorded: one line, cut at QUERY_CHARS."""
    text = " ".join(query.split())
    return text if len(text) <= QUERY_CHARS else text[:QUERY_CHARS - 3] + "..."


def _outside(check: MetricCheck, value: float) -> str | None:
    """Why ``value`` fails the check's condition; None when it meets it."""
    if check.min is not None and value < check.min:
        return f"{value:.6g} < min {check.min:g}"
    if check.max is not None and value > check.max:
        return f"{value:.6g} > max {check.max:g}"
    tol = check.tolerance or 0.0
    within = f" (tolerance {tol:g})" if tol else ""
    if check.equals is not None and abs(value - check.equals) > tol:
        return f"{value:.6g} != {check.equals:g}{within}"
    if check.not_equals is not None and abs(value - check.not_equals) <= tol:
        return f"{value:.6g} == notEquals {check.not_equals:g}{within}"
    return None


def _too_few(check: MetricCheck, requests: float | None, who: str = "") -> str | None:
    if not check.min_requests:
        return None
    n = requests if requests is not None and math.isfinite(requests) else 0.0
    if n >= check.min_requests:
        return None
    return (f"{n:.0f} requests{who} in the {format_duration(check.window)} window, fewer than "
            f"minRequests {check.min_requests:g}: not enough to judge")


def evaluate(check: MetricCheck, value: float | None, stable_value: float | None = None,
             error: str | None = None, *, requests: float | None = None, stable_requests: float | None = None,
             query: str | None = None) -> MetricResult:
    """Judge one metric's answer. ``requests``: what ``check.requests_query``
    answered (None: no series, i.e. none); ``query``: what was asked, as the
    provider describes it (default ``check.query``)."""
    common = {"min": check.min, "max": check.max, "equals": check.equals, "not_equals": check.not_equals,
              "tolerance": check.tolerance, "provider": check.provider, "window": check.window,
              "query": _compact(query if query is not None else check.query or ""), "dry_run": check.dry_run}
    error = error or check.error
    if error:
        return MetricResult(check.name, "error", None, message=error, **common)
    if check.skip:   # nothing was asked: no query to record
        return MetricResult(check.name, "nodata", None, message=check.skip, **{**common, "query": ""})
    few = _too_few(check, requests)
    if few:
        return MetricResult(check.name, "nodata", None if _bad(value) else value, message=few, **common)
    if _bad(value):
        return MetricResult(check.name, "nodata", None if value is None or math.isnan(value) else value,
                            message="no data (no traffic, or NaN/Inf)", **common)
    outside = _outside(check, value)
    if outside:
        return MetricResult(check.name, "failed", value, message=outside, **common)
    if check.compares:
        if _bad(stable_value):
            return MetricResult(check.name, "nodata", value, message="no data for the stable version", **common)
        few = _too_few(check, stable_requests, " to stable")
        if few:
            return MetricResult(check.name, "nodata", value, stable_value=stable_value, message=few, **common)
        worse = (stable_value - value) if check.lower_is_worse else (value - stable_value)
        pct = 100 * worse / abs(stable_value) if stable_value else (math.inf if worse > 0 else 0)
        if check.max_increase is not None and worse > check.max_increase:
            return MetricResult(check.name, "failed", value, stable_value=stable_value,
                                message=f"{value:.6g} is {worse:.6g} worse than stable {stable_value:.6g} "
                                        f"(allowed {check.max_increase:g})", **common)
        if check.max_increase_percent is not None and pct > check.max_increase_percent:
            return MetricResult(check.name, "failed", value, stable_value=stable_value,
                                message=f"{value:.6g} is {pct:.0f}% worse than stable {stable_value:.6g} "
                                        f"(allowed {check.max_increase_percent:g}%)", **common)
        return MetricResult(check.name, "ok", value, stable_value=stable_value, **common)
    return MetricResult(check.name, "ok", value, **common)


def verdict(results: tuple[MetricResult, ...], rel: Release, settings: Mapping[str, Any]) -> str:
    """pass | fail | hold for one check (see module docstring)."""
    defaults = settings.get("analysis") or {}
    analysis = rel.spec.get("analysis") or {}
    on_nodata = analysis.get("onNoData") or defaults.get("onNoData") or "fail"
    on_error = analysis.get("onProviderError") or defaults.get("onProviderError") or "hold"
    outcomes = {r.outcome for r in results if not r.dry_run}   # a dry run is recorded, never decides
    if "failed" in outcomes:
        return "fail"
    counted = set()
    if "nodata" in outcomes:
        counted.add(on_nodata)
    if "error" in outcomes:
        counted.add(on_error)
    if "fail" in counted:
        return "fail"
    if "hold" in counted:
        return "hold"
    return "pass"
