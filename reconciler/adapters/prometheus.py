"""Prometheus' HTTP API: instant queries for analysis checks.

The standard library's urllib is enough for one GET with a timeout and a
bearer token, and keeps the controller's dependencies small. Results: a
scalar, or a vector with exactly one sample, is a float; an empty vector is
None (no data); several series is an error (the query is ambiguous, and
picking one would judge the wrong thing). Failures become MetricsError;
``run_checks`` turns them into ``error`` results, never an exception.

Authentication for gateways in front of Prometheus (Thanos, Mimir, Cortex):
a bearer token from ``tokenFile`` or basic auth (``username`` +
``passwordFile``), custom headers (``X-Scope-OrgID``), and ``timeout``, from
``sluice.yaml`` ``providers.prometheus`` (``from_settings``). Secret files
are read at each query (a rotated secret takes effect at once; an unreadable
one is an error result, which holds the rollout). Token, password and header
values never appear in a repr or an error, nor does a URL's user info.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from reconciler.core.analysis import MetricCheck, evaluate
from reconciler.core.model import MetricResult
from reconciler.core.trusted import parse_time
from reconciler.core.durations import parse_duration
from reconciler.errors import MetricsError


class Prometheus:
    def __init__(self, address: str, *, timeout: float = 5.0, token: str | None = None,
                 token_file: str | None = None, username: str | None = None, password_file: str | None = None,
                 headers: Mapping[str, str] | None = None):
        self.address = address.rstrip("/")
        self.timeout = timeout
        self._token, self._token_file = token, token_file
        self._username, self._password_file = username, password_file
        self._headers = dict(headers or {})
        self._secrets: list[str] = [token or "", *self._headers.values()]

    def __repr__(self) -> str:
        auth = "bearer" if (self._token or self._token_file) else "basic" if self._username else None
        return (f"Prometheus({_strip_userinfo(self.address)!r}, timeout={self.timeout}, auth={auth}, "
                f"headers={sorted(self._headers)})")

    @property
    def _where(self) -> str:
        return _strip_userinfo(self.address)

    def _redact(self, text: str) -> str:
        for secret in sorted(filter(None, self._secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return _strip_userinfo(text)

    def _read_secret(self, path: str, what: str) -> str:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise MetricsError(f"prometheus {self._where}: cannot read {what} {path}: {exc.strerror}") from None
        self._secrets.append(value)
        return value

    def _auth_headers(self) -> dict[str, str]:
        out = dict(self._headers)
        token = self._token or (self._read_secret(self._token_file, "tokenFile") if self._token_file else None)
        if token:
            out["Authorization"] = f"Bearer {token}"
        elif self._username:
            password = self._read_secret(self._password_file, "passwordFile") if self._password_file else ""
            basic = base64.b64encode(f"{self._username}:{password}".encode()).decode()
            self._secrets.append(basic)
            out["Authorization"] = f"Basic {basic}"
        return out

    def query(self, promql: str, at: datetime | None = None) -> float | None:
        try:
            return self._query(promql, at)
        except MetricsError as exc:
            message = self._redact(str(exc))
        raise MetricsError(message)   # raised outside the handler: no chained original that may quote a secret

    def _query(self, promql: str, at: datetime | None = None) -> float | None:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        req = urllib.request.Request(f"{self.address}/api/v1/query?{urllib.parse.urlencode(params)}")
        for name, value in self._auth_headers().items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = json.loads(resp.read(4 << 20))
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read(65536)).get("error", "")
            except (ValueError, OSError, AttributeError):
                pass
            raise MetricsError(f"prometheus {self._where} answered {exc.code}: {detail or exc.reason}") from None
        except http.client.HTTPException as exc:   # e.g. InvalidURL, whose text would echo the address
            raise MetricsError(f"prometheus {self._where} unreachable: {type(exc).__name__}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MetricsError(f"prometheus {self._where} unreachable: {getattr(exc, 'reason', exc)}") from None
        if not isinstance(body, dict):
            raise MetricsError(f"prometheus {self._where} answered something other than a JSON object")
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


def _strip_userinfo(text: str) -> str:
    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)


def from_settings(prom: Mapping[str, Any] | None) -> Prometheus | None:
    """The provider ``sluice.yaml`` ``providers.prometheus`` describes (None without one)."""
    if not prom:
        return None
    try:
        timeout = parse_duration(prom.get("timeout", 5.0))
    except ValueError:
        timeout = 5.0   # the schema refuses a bad duration before this runs
    basic = prom.get("basicAuth") or {}
    return Prometheus(prom["address"], timeout=timeout or 5.0, token_file=prom.get("tokenFile"),
                      username=basic.get("username"), password_file=basic.get("passwordFile"),
                      headers=prom.get("headers"))


def run_checks(prom: Prometheus | None, checks: Iterable[MetricCheck], at: datetime) -> tuple[MetricResult, ...]:
    """Run every check; unreachable or failing queries become ``error`` results."""
    out = []
    for check in checks:
        if prom is None:
            out.append(evaluate(check, None, error="no metrics provider configured"))
            continue
        try:
            value = prom.query(check.query, at)
            stable_at = parse_time(check.stable_at) if check.stable_at else None
            stable = prom.query(check.stable_query, stable_at or at) if check.stable_query else None
        except MetricsError as exc:
            out.append(evaluate(check, None, error=str(exc)))
            continue
        out.append(evaluate(check, value, stable))
    return tuple(out)

