"""A web metric (``type: web``): one HTTP GET or POST whose JSON answer holds
the number, like Argo Rollouts' web metric. For a health endpoint, a
synthetic-check service or a vendor API.

``url`` and ``body`` are templates with the same ``{{ variables }}`` as a
PromQL query (values URL-escaped in the URL, JSON-escaped in the body);
``jsonPath`` (jsonpath-ng's extended syntax; ``{$.a.b}`` as Argo writes it
works too) must select exactly one value: a number, a bool (true is 1,
false 0) or a string holding a number. ``null`` is no data. Anything else
(no match, several, an object, a word) is an error result with a message
saying what was found. The answer is read up to ``MAX_ANSWER`` bytes.

A web endpoint answers about now: the check's time is not sent (use the
``{{ interval }}`` variable in the URL when the API takes a window).
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from datetime import datetime
from typing import Any, Mapping

from reconciler.adapters.metrics.httpclient import HttpClient, client_from_settings, shown_url
from reconciler.core.analysis import compile_json_path, render_query
from reconciler.errors import MetricsError

KIND = "web"
MAX_ANSWER = 1 << 20
# a string holding a number, as JSON or Prometheus writes one (not Python's "1_000")
_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def _url_escape(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _json_escape(value: str) -> str:
    return json.dumps(value)[1:-1]


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:   # an integer beyond any float: as 1e400 reads, infinite (no data)
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        if _NUMERIC.fullmatch(value.strip()):
            return float(value.strip())
        # quoted whole or not at all: a cut string could hold part of a secret that redaction misses
        shown = repr(value) if len(value) <= 24 else f"of {len(value)} characters"
        raise MetricsError(f"{where} selected the string {shown}, expected a number")
    raise MetricsError(f"{where} selected a JSON {type(value).__name__}, expected one number")


class Web:
    """One HTTP endpoint answering one number."""

    kind = KIND

    def __init__(self, url: str, *, json_path_text: str, method: str = "GET", body: str | None = None,
                 http: HttpClient | None = None):
        self.url, self.method, self.body = url, method.upper(), body
        self.json_path_text = json_path_text
        self._path = compile_json_path(json_path_text)
        self.http = http or HttpClient(KIND, max_bytes=MAX_ANSWER)

    def __repr__(self) -> str:
        return f"Web({self.method} {self.http.redact(shown_url(self.url))!r}, {self.http.describe()})"

    def measure(self, query: str | None, variables: Mapping[str, str], at: datetime) -> float | None:
        """The provider interface (see reconciler.adapters.metrics). ``query`` is unused."""
        try:
            return self._measure(variables)
        except MetricsError as exc:   # the answer may quote a credential back: redact what we say about it
            message = self.http.redact(str(exc))
        raise MetricsError(message)

    def _measure(self, variables: Mapping[str, str]) -> float | None:
        url = render_query(self.url, variables, escape=_url_escape)
        body = render_query(self.body, variables, escape=_json_escape).encode() if self.body is not None else None
        data = self.http.fetch(url, method=self.method, body=body,
                               content_type="application/json" if body is not None else None)
        where = f"web {_host(url)} jsonPath {self.json_path_text}"
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise MetricsError(f"{where}: the answer is not JSON") from None
        try:
            found = [m.value for m in self._path.find(doc)]
        except Exception as exc:   # jsonpath-ng's filters and sorts raise what Python raises (TypeError...)
            raise MetricsError(f"{where} cannot be applied to this answer ({type(exc).__name__})") from None
        if len(found) != 1:
            raise MetricsError(f"{where} selected {len(found)} values, expected exactly one number")
        return _number(found[0], where)

    def describe(self, query: str | None, variables: Mapping[str, str]) -> str:
        url = render_query(self.url, variables, escape=_url_escape)
        body = f" {render_query(self.body, variables, escape=_json_escape)}" if self.body is not None else ""
        return self.http.redact(f"{self.method} {shown_url(url)}{body} -> {self.json_path_text}")


def _host(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return "(invalid URL)"


def from_settings(cfg: Mapping[str, Any]) -> Web:
    """The provider a ``sluice.yaml`` ``providers.<name>`` block of type web describes."""
    return Web(cfg["url"], json_path_text=cfg["jsonPath"], method=cfg.get("method", "GET"), body=cfg.get("body"),
               http=client_from_settings(KIND, cfg, max_bytes=MAX_ANSWER))
