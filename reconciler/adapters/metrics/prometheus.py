"""Prometheus' HTTP API (``type: prometheus``): instant PromQL queries.

Also every store that answers the same API at the same paths: Thanos
Query, Mimir and Cortex (with ``headers: {X-Scope-OrgID: ...}``),
VictoriaMetrics, and vendors' Prometheus endpoints.

``flavor: victoriametrics``: VictoriaMetrics answers PromQL in MetricsQL,
whose ``rate``, ``increase`` and ``delta`` also count the increase from the
last sample *before* the window, i.e. traffic from before the step's weight
was applied (and do not extrapolate). Under this flavor the provider asks
with MetricsQL's Prometheus-compatible functions: ``increase`` and ``delta``
become ``increase_prometheus`` and ``delta_prometheus``, and ``rate(x[w])``
becomes ``(increase_prometheus(x[w]) / w)`` (``rate_prometheus`` is not in
every release: 1.79 lacks it), at word boundaries outside strings
(``irate`` and ``idelta`` stay as they are; MetricsQL ignores the case of
names, so does this). VictoriaMetrics also evaluates a query no later than
now minus its ``-search.latencyOffset`` (default 30s), which would judge
the newest window on the previous step's traffic: each query is sent with
``nocache=1`` (which, in 1.79 at least, evaluates an instant query at the
time asked) and ``latency_offset=0s`` (the per-query setting of later
releases), and before it judges anything the provider asks ``time()`` at the
check's time. When the store evaluated earlier than asked by more than
``CLOCK_SLACK`` (a gateway that drops those arguments, a release that
ignores them), every query of the check is an error (holds) saying so.

Results: a scalar, or a vector with exactly one sample, is a float; an
empty vector is None (no data); several series is an error (the query is
ambiguous, and picking one would judge the wrong thing). Failures become
MetricsError, which ``run_checks`` turns into ``error`` results.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from datetime import datetime
from typing import Any, Mapping

from reconciler.adapters.metrics.httpclient import HttpClient, client_from_settings, shown_url
from reconciler.errors import MetricsError

KIND = "prometheus"
FLAVORS = ("prometheus", "victoriametrics")
CLOCK_SLACK = 2.0   # seconds a store may evaluate earlier than asked (clock skew) before it is refused
VICTORIA_ARGS = {"nocache": "1", "latency_offset": "0s"}   # evaluate at the time asked, newest samples included


def _error_text(body: bytes) -> str:
    return str(json.loads(body).get("error", ""))


def _sample(value: Any) -> float:
    """A sample value as the API writes it (a string; a number from some vendors)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(type(value).__name__)
    return float(value)   # OverflowError for an integer beyond any float: malformed


class Prometheus:
    """One Prometheus-compatible server."""

    kind = KIND

    def __init__(self, address: str, *, timeout: float = 5.0, token: str | None = None,
                 token_file: str | None = None, username: str | None = None, password_file: str | None = None,
                 headers: Mapping[str, str] | None = None, ca_file: str | None = None,
                 http: HttpClient | None = None, flavor: str = "prometheus"):
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r} (use {' or '.join(FLAVORS)})")
        self.address, self.flavor = address.rstrip("/"), flavor
        self.http = http or HttpClient(KIND, timeout=timeout, token=token, token_file=token_file, username=username,
                                       password_file=password_file, headers=headers, ca_file=ca_file)
        self._evaluates_at: dict[float, float] = {}   # asked time -> time the store evaluated at (victoriametrics)

    @property
    def timeout(self) -> float:
        return self.http.timeout

    @property
    def shown(self) -> str:
        """The address as errors and reprs show it: no user info, no credential-like parameter."""
        return shown_url(self.address)

    def __repr__(self) -> str:
        flavor = f", flavor={self.flavor}" if self.flavor != "prometheus" else ""
        return f"Prometheus({self.shown!r}, {self.http.describe()}{flavor})"

    def measure(self, query: str | None, variables: Mapping[str, str], at: datetime) -> float | None:
        """The provider interface (see reconciler.adapters.metrics)."""
        if not query:
            raise MetricsError(f"prometheus {self.shown}: the metric has no query")
        if self.flavor == "victoriametrics":
            self._check_evaluation_time(at)
        return self.query(self.translate(query), at)

    def describe(self, query: str | None, variables: Mapping[str, str]) -> str:
        try:
            asked = self.translate(query or "")
        except MetricsError:
            asked = query or ""
        return self.http.redact(asked)

    def translate(self, promql: str) -> str:
        """``promql`` as this store must be asked to answer with Prometheus' semantics."""
        return prometheus_semantics(promql) if self.flavor == "victoriametrics" else promql

    def _check_evaluation_time(self, at: datetime | None) -> None:
        if at is None:
            return
        asked = at.timestamp()
        if asked not in self._evaluates_at:
            got = self.query("time()", at)
            if got is None or not math.isfinite(got):
                raise MetricsError(f"victoriametrics {self.shown}: time() answered no time")
            self._evaluates_at[asked] = got
        behind = asked - self._evaluates_at[asked]
        if behind > CLOCK_SLACK:
            raise MetricsError(
                f"victoriametrics {self.shown} evaluated the query {behind:.0f}s before the time asked: its "
                "-search.latencyOffset hides the newest samples, so a window would judge the previous step's "
                "traffic; let nocache=1 and latency_offset=0s reach it, or run it with -search.latencyOffset=0s")

    def query(self, promql: str, at: datetime | None = None) -> float | None:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        if self.flavor == "victoriametrics":
            params.update(VICTORIA_ARGS)
        data = self.http.fetch(f"{self.address}/api/v1/query?{urllib.parse.urlencode(params)}", detail=_error_text)
        return self._value(data)

    def _value(self, data: bytes) -> float | None:
        where = self.shown
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            raise MetricsError(f"prometheus {where} answered something other than JSON") from None
        if not isinstance(body, dict):
            raise MetricsError(f"prometheus {where} answered something other than a JSON object")
        if body.get("status") != "success":
            raise MetricsError(self.http.redact(f"query failed: {body.get('error', 'unknown error')}"))
        data_ = body.get("data") if isinstance(body.get("data"), dict) else {}
        result, kind = data_.get("result"), data_.get("resultType")
        try:
            if kind == "scalar":
                return _sample(result[1])
            if kind != "vector":
                raise MetricsError(f"query returned a {kind}, expected one number")
            if not result:
                return None
            if len(result) > 1:
                raise MetricsError(f"query returned {len(result)} series, expected one (aggregate it with sum())")
            return _sample(result[0]["value"][1])
        except (TypeError, KeyError, IndexError, ValueError, OverflowError):
            raise MetricsError(f"prometheus {where} answered a malformed {kind}") from None


# --- PromQL -> MetricsQL with Prometheus' semantics (flavor: victoriametrics) ---

_RENAMED = {"increase": "increase_prometheus", "delta": "delta_prometheus"}
_CALL = re.compile(r"(rate|increase|delta)\s*\(", re.IGNORECASE)   # MetricsQL's names ignore case
_PROM_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _skip_string(text: str, i: int) -> int:
    """The index after the string literal that starts at ``text[i]``."""
    quote, i = text[i], i + 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" and quote != "`" else 1
    return i + 1


def _close(text: str, i: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``text[i]``."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _skip_string(text, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise MetricsError("cannot ask VictoriaMetrics the Prometheus way: unbalanced parentheses in the query")


def _range_seconds(args: str) -> float:
    """The range of ``rate``'s argument (``x[5m]``, ``x[5m:1m] offset 1m``): its last [...] outside strings."""
    found, i = None, 0
    while i < len(args):
        c = args[i]
        if c in "\"'`":
            i = _skip_string(args, i)
            continue
        if c == "[":
            end = args.find("]", i)
            if end < 0:
                break
            found, i = args[i + 1:end].split(":")[0].strip(), end
        i += 1
    if not found or not _PROM_DURATION.fullmatch(found):
        raise MetricsError("cannot ask VictoriaMetrics the Prometheus way: rate() needs a range like [5m]")
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", found))


def _without_comments(text: str) -> str:
    """``text`` without its ``#`` comments (to the end of a line, outside strings): an
    apostrophe in ``# the canary's errors`` is no string to skip."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            j = _skip_string(text, i)
            out.append(text[i:j])
            i = j
        elif c == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        else:
            out.append(c)
            i += 1
    return "".join(out)


def prometheus_semantics(promql: str) -> str:
    """``promql`` in MetricsQL with Prometheus' window semantics (see the module docstring)."""
    promql = _without_comments(promql)
    out, i = [], 0
    while i < len(promql):
        c = promql[i]
        if c in "\"'`":
            j = _skip_string(promql, i)
            out.append(promql[i:j])
            i = j
            continue
        match = _CALL.match(promql, i) if (c.isalpha() and (i == 0 or not _ident(promql[i - 1]))) else None
        if match is None:
            out.append(c)
            i += 1
            continue
        name, open_at = match.group(1).lower(), match.end() - 1
        close_at = _close(promql, open_at)
        inner = prometheus_semantics(promql[open_at + 1:close_at])
        if name == "rate":
            out.append(f"(increase_prometheus({inner}) / {_range_seconds(inner):g})")
        else:
            out.append(f"{_RENAMED[name]}({inner})")
        i = close_at + 1
    return "".join(out)


def _ident(c: str) -> bool:
    return c.isalnum() or c in "_:."


def from_settings(cfg: Mapping[str, Any] | None) -> Prometheus | None:
    """The provider a ``sluice.yaml`` ``providers.<name>`` block of type prometheus describes."""
    if not cfg:
        return None
    return Prometheus(cfg["address"], http=client_from_settings(KIND, cfg), flavor=cfg.get("flavor", "prometheus"))
