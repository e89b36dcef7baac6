"""Prometheus' HTTP API: instant queries for analysis checks.

The standard library's urllib is enough for one GET with a timeout and a
bearer token, and keeps the controller's dependencies small. Results: a
scalar, or a vector with exactly one sample, is a float; an empty vector is
None (no data); several series is an error (the query is ambiguous, and
picking one would judge the wrong thing). Failures become MetricsError;
``run_checks`` turns them into ``error`` results, never an exception.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Iterable

from reconciler.core.analysis import MetricCheck, evaluate
from reconciler.core.model import MetricResult
from reconciler.errors import MetricsError


class Prometheus:
    def __init__(self, address: str, *, timeout: float = 5.0, token: str | None = None):
        self.address = address.rstrip("/")
        self.timeout = timeout
        self._token = token

    def __repr__(self) -> str:
        return f"Prometheus({self.address!r})"

    def query(self, promql: str, at: datetime | None = None) -> float | None:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        req = urllib.request.Request(f"{self.address}/api/v1/query?{urllib.parse.urlencode(params)}")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = json.loads(resp.read(4 << 20))
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read(65536)).get("error", "")
            except (ValueError, OSError):
                pass
            raise MetricsError(f"prometheus {self.address} answered {exc.code}: {detail or exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MetricsError(f"prometheus {self.address} unreachable: {getattr(exc, 'reason', exc)}") from exc
        if body.get("status") != "success":
            raise MetricsError(f"query failed: {body.get('error', 'unknown error')}")
        data = body.get("data") or {}
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return float(result[1])
        if data.get("resultType") != "vector":
            raise MetricsError(f"query returned a {data.get('resultType')}, expected one number")
        if not result:
            return None
        if len(result) > 1:
            raise MetricsError(f"query returned {len(result)} series, expected one (aggregate it with sum())")
        value = float(result[0]["value"][1])
        return value


def run_checks(prom: Prometheus | None, checks: Iterable[MetricCheck], at: datetime) -> tuple[MetricResult, ...]:
    """Run every check; unreachable or failing queries become ``error`` results."""
    out = []
    for check in checks:
        if prom is None:
            out.append(evaluate(check, None, error="no metrics provider configured"))
            continue
        try:
            value = prom.query(check.query, at)
            stable = prom.query(check.stable_query, at) if check.stable_query else None
        except MetricsError as exc:
            out.append(evaluate(check, None, error=str(exc)))
            continue
        out.append(evaluate(check, value, stable))
    return tuple(out)

