"""Metrics providers: one small interface, several kinds, each named in settings.

    sluice.yaml providers:                    type         module
      prometheus: {address: ...}          ->  prometheus   metrics/prometheus.py
      mimir: {type: prometheus, ...}      ->  prometheus   (Thanos, Mimir, Cortex, VictoriaMetrics)
      health: {type: web, url: ...}       ->  web          metrics/web.py

A metric (or its metricTemplates entry) names its provider with
``provider:``; one that names none asks the provider named ``prometheus``.
``type`` defaults to ``prometheus``, so a lone ``providers.prometheus``
block works as it always has. Under a controller policy that defines
providers, those replace the repo's (``core.policy.providers``).

The interface (``Provider``) is two methods: ``measure`` asks for one
number (None: no data; MetricsError: could not answer) and ``describe``
says what was asked, secrets redacted, for the record. ``run_checks`` runs
a check's queries through them; whatever fails becomes an ``error`` result
for that metric only, never an exception: a MetricsError with its message,
anything else (a provider's bug, a library's exception on an odd answer)
with its kind only, since its text may quote what was sent. Adding a kind:
one module with a class and ``from_settings``, one line in ``KINDS``
(docs/providers.md).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Protocol

from reconciler.adapters.metrics import prometheus, web
from reconciler.core.analysis import DEFAULT_PROVIDER, MetricCheck, TemplateError, evaluate
from reconciler.core.model import MetricResult
from reconciler.core.trusted import parse_time
from reconciler.errors import MetricsError

log = logging.getLogger(__name__)


class Provider(Protocol):
    """One metrics backend, as a check sees it."""

    kind: str

    def measure(self, query: str | None, variables: Mapping[str, str], at: datetime) -> float | None:
        """One number for ``query`` (a PromQL text, or None for a provider that asks its own
        endpoint) with the check's ``variables``, as of ``at``. None: no data. Raises
        MetricsError (never with a secret in it) when it cannot answer."""

    def describe(self, query: str | None, variables: Mapping[str, str]) -> str:
        """What ``measure`` asks, for status and commits, with secrets redacted."""


# type -> builds a provider from its settings block (already schema-valid)
KINDS: dict[str, Callable[[Mapping[str, Any]], Provider]] = {
    prometheus.KIND: prometheus.from_settings,
    web.KIND: web.from_settings,
}


class Unusable:
    """A provider whose settings could not be built: every query is an error result (holds)."""

    def __init__(self, name: str, why: str):
        self.kind, self.name, self.why = "unusable", name, why

    def measure(self, query, variables, at):
        raise MetricsError(f"provider {self.name}: {self.why}")

    def describe(self, query, variables) -> str:
        return ""

    def __repr__(self) -> str:
        return f"Unusable({self.name!r}, {self.why!r})"


def build(configs: Mapping[str, Mapping[str, Any]], *, override: Provider | None = None) -> dict[str, Provider]:
    """The providers of ``configs`` (name -> settings block) by name; ``override``
    (``sluice run --prometheus URL``) replaces the one named ``prometheus``."""
    out: dict[str, Provider] = {}
    for name, cfg in configs.items():
        kind = (cfg or {}).get("type", prometheus.KIND)
        factory = KINDS.get(kind)
        if factory is None:
            out[name] = Unusable(name, f"unknown provider type {kind!r}")
            continue
        try:
            out[name] = factory(cfg)
        except (ValueError, KeyError, TypeError) as exc:   # validation refuses these first; never crash a pass
            out[name] = Unusable(name, f"invalid settings: {exc}")
    if override is not None:
        out[DEFAULT_PROVIDER] = override
    return out


def run_checks(providers: Mapping[str, Provider] | Provider | None, checks: Iterable[MetricCheck],
               at: datetime) -> tuple[MetricResult, ...]:
    """Run every check; unreachable or failing queries become ``error`` results.
    ``providers`` by name; a lone provider (or None), as callers of the single-
    Prometheus API passed it, is the one named ``prometheus``."""
    if providers is None or hasattr(providers, "measure"):
        providers = {DEFAULT_PROVIDER: providers} if providers is not None else {}
    return tuple(_run(providers.get(check.provider), check, at) for check in checks)


def _run(provider: Provider | None, check: MetricCheck, at: datetime) -> MetricResult:
    if check.error or check.skip:
        return evaluate(check, None)   # nothing to ask: an error or nodata, with the reason
    if provider is None:
        why = ("no metrics provider configured" if check.provider == DEFAULT_PROVIDER
               else f"no metrics provider named {check.provider!r}")
        return evaluate(check, None, error=why)
    asked = ""
    try:
        asked = provider.describe(check.query, check.variables)
        value = provider.measure(check.query, check.variables, at)
        requests = provider.measure(check.requests_query, check.variables, at) if check.requests_query else None
        stable = stable_requests = None
        if check.compares:
            stable_at = (parse_time(check.stable_at) if check.stable_at else None) or at
            stable = provider.measure(check.stable_query, check.stable_variables, stable_at)
            if check.stable_requests_query:
                stable_requests = provider.measure(check.stable_requests_query, check.stable_variables, stable_at)
    except (MetricsError, TemplateError) as exc:
        return evaluate(check, None, error=str(exc), query=asked)
    except Exception as exc:   # noqa: BLE001 - a provider's bug errs this metric, never the release's analysis
        # its text may quote what was sent (a credential): name the kind of failure only
        log.warning("metric=%s provider=%s failed: %s", check.name, check.provider, type(exc).__name__)
        return evaluate(check, None, error=f"provider {check.provider} failed: {type(exc).__name__} "
                                           "(an unexpected answer or setting; see the controller log)",
                        query=asked)
    return evaluate(check, value, stable, requests=requests, stable_requests=stable_requests, query=asked)
