"""Prometheus' HTTP API (``type: prometheus``): instant PromQL queries.

Also every store that answers the same API at the same paths: Thanos
Query, Mimir and Cortex (with ``headers: {X-Scope-OrgID: ...}``),
VictoriaMetrics (``/api/v1/query``; its ``-search.latencyOffset``, default
30s, hides the newest samples), and vendors' Prometheus endpoints.

Results: a scalar, or a vector with exactly one sample, is a float; an
empty vector is None (no data); several series is an error (the query is
ambiguous, and picking one would judge the wrong thing). Failures become
MetricsError, which ``run_checks`` turns into ``error`` results.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime
from typing import Any, Mapping

from reconciler.adapters.metrics.httpclient import HttpClient, client_from_settings, strip_userinfo
from reconciler.errors import MetricsError

KIND = "prometheus"


def _error_text(body: bytes) -> str:
    return str(json.loads(body).get("error", ""))


class Prometheus:
    """One Prometheus-compatible server."""

    kind = KIND

    def __init__(self, address: str, *, timeout: float = 5.0, token: str | None = None,
                 token_file: str | None = None, username: str | None = None, password_file: str | None = None,
                 headers: Mapping[str, str] | None = None, ca_file: str | None = None,
                 http: HttpClient | None = None):
        self.address = address.rstrip("/")
        self.http = http or HttpClient(KIND, timeout=timeout, token=token, token_file=token_file, username=username,
                                       password_file=password_file, headers=headers, ca_file=ca_file)

    @property
    def timeout(self) -> float:
        return self.http.timeout

    def __repr__(self) -> str:
        return f"Prometheus({strip_userinfo(self.address)!r}, {self.http.describe()})"

    def measure(self, query: str | None, variables: Mapping[str, str], at: datetime) -> float | None:
        """The provider interface (see reconciler.adapters.metrics)."""
        if not query:
            raise MetricsError(f"prometheus {strip_userinfo(self.address)}: the metric has no query")
        return self.query(query, at)

    def describe(self, query: str | None, variables: Mapping[str, str]) -> str:
        return self.http.redact(query or "")

    def query(self, promql: str, at: datetime | None = None) -> float | None:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = self.http.fetch(f"{self.address}/api/v1/query?{urllib.parse.urlencode(params)}", detail=_error_text)
        return self._value(data)

    def _value(self, data: bytes) -> float | None:
        where = strip_userinfo(self.address)
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            raise MetricsError(f"prometheus {where} answered something other than JSON") from None
        if not isinstance(body, dict):
            raise MetricsError(f"prometheus {where} answered something other than a JSON object")
        if body.get("status") != "success":
            raise MetricsError(self.http.redact(f"query failed: {body.get('error', 'unknown error')}"))
        result = (body.get("data") or {}).get("result")
        kind = (body.get("data") or {}).get("resultType")
        try:
            if kind == "scalar":
                return float(result[1])
            if kind != "vector":
                raise MetricsError(f"query returned a {kind}, expected one number")
            if not result:
                return None
            if len(result) > 1:
                raise MetricsError(f"query returned {len(result)} series, expected one (aggregate it with sum())")
            return float(result[0]["value"][1])
        except (TypeError, KeyError, IndexError, ValueError):
            raise MetricsError(f"prometheus {where} answered a malformed {kind}") from None


def from_settings(cfg: Mapping[str, Any] | None) -> Prometheus | None:
    """The provider a ``sluice.yaml`` ``providers.<name>`` block of type prometheus describes."""
    if not cfg:
        return None
    return Prometheus(cfg["address"], http=client_from_settings(KIND, cfg))
