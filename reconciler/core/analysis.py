"""What a check asks of the metrics provider, and how it judges the answers.

Built-in metrics use Istio's standard telemetry scoped to the judged
workload (the Deployment ``<name>-<version>``), as reported by the
destination proxy:

- ``request-success-rate``: % of requests not answered 5xx;
- ``request-duration``: p99 latency in ms.

Custom metrics are PromQL templates, per release (``query``) or repo-wide
(``sluice.yaml`` ``metricTemplates``), with ``{{ variable }}`` placeholders:
namespace, release, service, canary_version, stable_version, workload,
interval. Values are escaped for PromQL label strings.

compareToStable when stable has no traffic (a last canary step of 100%):
stable's value is read from its window that ended when that step began
(``status.stableServedUntil``, kept through a pause), the last moment it served; the comparison is never skipped and never judged on
an empty stable.

Outcomes: ``ok``; ``failed`` (outside min/max, or worse than stable by more
than compareToStable allows); ``nodata`` (empty result, NaN, +-Inf);
``error`` (provider unreachable, query failed). ``verdict`` turns a check's
results into pass/fail/hold using ``onNoData`` (default fail) and
``onProviderError`` (default hold): only an all-ok check passes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.model import DEFAULT_INTERVAL, MetricResult, Release

_SEL = 'reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}"'
BUILTIN = {
    "request-success-rate": (
        f'sum(rate(istio_requests_total{{{_SEL},response_code!~"5.."}}[{{{{ interval }}}}])) / '
        f'sum(rate(istio_requests_total{{{_SEL}}}[{{{{ interval }}}}])) * 100'),
    "request-duration": (
        f'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{_SEL}}}'
        f'[{{{{ interval }}}}])) by (le))'),
}
LOWER_IS_WORSE = {"request-success-rate"}
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A query template names a variable Sluice does not know."""


@dataclass(frozen=True)
class MetricCheck:
    name: str
    query: str                       # for the new version
    stable_query: str | None         # when compareToStable is set
    min: float | None
    max: float | None
    max_increase: float | None = None
    max_increase_percent: float | None = None
    lower_is_worse: bool = False
    window: float = 60.0
    stable_at: str | None = None     # query stable at this time, not now (stable has no traffic now)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render_query(template: str, variables: Mapping[str, str]) -> str:
    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in variables:
            raise TemplateError(f"unknown variable {{{{ {key} }}}} in query (known: {', '.join(sorted(variables))})")
        return _escape(variables[key]) if key != "interval" else variables[key]
    return _VAR.sub(sub, template)


def _prom_duration(seconds: float) -> str:
    return format_duration(seconds)   # 1m30s, 500ms: valid PromQL durations


def plan_checks(rel: Release, settings: Mapping[str, Any], *, canary_version: str,
                stable_version: str) -> list[MetricCheck]:
    """The queries of one check of ``rel``."""
    templates = settings.get("metricTemplates") or {}
    analysis = rel.spec.get("analysis") or {}
    default_window = (analysis.get("interval") or (settings.get("analysis") or {}).get("interval")
                      or rel.strategy.get("interval") or DEFAULT_INTERVAL)
    out = []
    for metric in rel.metrics:
        name = metric["name"]
        tmpl = templates.get(metric.get("template") or name) or {}
        query = metric.get("query") or tmpl.get("query") or BUILTIN.get(name)
        window = parse_duration(metric.get("interval") or default_window)
        base = {"namespace": rel.namespace, "release": rel.name, "service": rel.service_name,
                "canary_version": canary_version, "stable_version": stable_version,
                "interval": _prom_duration(window)}
        canary_q = render_query(query, {**base, "workload": f"{rel.name}-{canary_version}"})
        compare = metric.get("compareToStable") or {}
        stable_at = _stable_window_end(rel) if compare else None
        stable_q = render_query(query, {**base, "workload": f"{rel.name}-{stable_version}"}) if compare else None
        lo = metric.get("min", tmpl.get("min"))
        hi = metric.get("max", tmpl.get("max"))
        out.append(MetricCheck(
            name=name, query=canary_q, stable_query=stable_q, min=lo, max=hi,
            max_increase=compare.get("maxIncrease"), max_increase_percent=compare.get("maxIncreasePercent"),
            lower_is_worse=name in LOWER_IS_WORSE or (lo is not None and hi is None), window=window,
            stable_at=stable_at))
    return out


def _stable_window_end(rel: Release) -> str | None:
    """When stable carries no traffic now (a final canary step of 100%), compare
    with stable's window just before this step began, when it still served:
    the step's ``stepStartedAt``. None: stable serves now, query it now."""
    if int(rel.status.get("weight", 0)) < 100:
        return None
    return rel.status.get("stableServedUntil") or rel.status.get("stepStartedAt")


def _bad(value: float | None) -> bool:
    return value is None or math.isnan(value) or math.isinf(value)


def evaluate(check: MetricCheck, value: float | None, stable_value: float | None = None,
             error: str | None = None) -> MetricResult:
    """Judge one metric's answer."""
    common = {"min": check.min, "max": check.max}
    if error:
        return MetricResult(check.name, "error", None, message=error, **common)
    if _bad(value):
        return MetricResult(check.name, "nodata", None if value is None or math.isnan(value) else value,
                            message="no data (no traffic, or NaN/Inf)", **common)
    if check.min is not None and value < check.min:
        return MetricResult(check.name, "failed", value, message=f"{value:.6g} < min {check.min:g}", **common)
    if check.max is not None and value > check.max:
        return MetricResult(check.name, "failed", value, message=f"{value:.6g} > max {check.max:g}", **common)
    if check.stable_query is not None:
        if _bad(stable_value):
            return MetricResult(check.name, "nodata", value, message="no data for the stable version", **common)
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
    outcomes = {r.outcome for r in results}
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
