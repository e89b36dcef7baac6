"""The HTTP side every metrics provider shares: auth, TLS, timeout, bounded
answers, and errors that never carry a secret.

Options (the same keys in ``sluice.yaml`` for every HTTP provider): a bearer
token from ``tokenFile`` or basic auth (``username`` + ``passwordFile``),
custom ``headers`` (``X-Scope-OrgID``), ``caFile`` (a PEM bundle the server's
certificate must chain to, in place of the system's), ``timeout``. Secret
files are read at each request: a rotated secret takes effect at once, an
unreadable one is a MetricsError (an ``error`` result, which holds).

Token, password, basic credentials and header values never appear in a
repr, an error or a recorded query, nor does a URL's user info. Redirects
are not followed: urllib would resend the Authorization header to whatever
host a redirect names.
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from reconciler.core.durations import parse_duration
from reconciler.errors import MetricsError

DEFAULT_TIMEOUT = 5.0            # seconds per request; a check must not stall the pass
MAX_ANSWER = 4 << 20             # bytes read of an answer; more is an error, not a truncated parse
_USERINFO = re.compile(r"(https?://)[^/@\s]+@")


def strip_userinfo(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):   # noqa: D401 - urllib's hook
        return None   # urllib then raises HTTPError(3xx): an error result, never a resent credential


class HttpClient:
    """Requests to one provider's server with its configured auth."""

    def __init__(self, kind: str, *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None,
                 token_file: str | None = None, username: str | None = None, password_file: str | None = None,
                 headers: Mapping[str, str] | None = None, ca_file: str | None = None, max_bytes: int = MAX_ANSWER):
        self.kind, self.timeout, self.max_bytes = kind, timeout, max_bytes
        self._token, self._token_file = token, token_file
        self._username, self._password_file = username, password_file
        self._headers = dict(headers or {})
        self._ca_file = ca_file
        self._opener: urllib.request.OpenerDirector | None = None
        self._secrets: set[str] = {token or "", *self._headers.values()}   # what redact() hides

    @property
    def auth(self) -> str | None:
        return "bearer" if (self._token or self._token_file) else "basic" if self._username else None

    def describe(self) -> str:
        """For a repr: what is configured, never a value."""
        return (f"timeout={self.timeout}, auth={self.auth}, headers={sorted(self._headers)}, "
                f"ca={'file' if self._ca_file else 'system'}")

    def redact(self, text: str) -> str:
        for secret in sorted(filter(None, self._secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return strip_userinfo(text)

    def _read_secret(self, path: str, what: str) -> str:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise MetricsError(f"cannot read {what} {path}: {exc.strerror}") from None
        self._secrets.add(value)
        return value

    def _auth_headers(self) -> dict[str, str]:
        out = dict(self._headers)
        token = self._token or (self._read_secret(self._token_file, "tokenFile") if self._token_file else None)
        if token:
            out["Authorization"] = f"Bearer {token}"
        elif self._username:
            password = self._read_secret(self._password_file, "passwordFile") if self._password_file else ""
            basic = base64.b64encode(f"{self._username}:{password}".encode()).decode()
            self._secrets.update((password, basic))
            out["Authorization"] = f"Basic {basic}"
        return out

    def _open(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            handlers: list[Any] = [_NoRedirect()]
            if self._ca_file:
                try:
                    context = ssl.create_default_context(cafile=self._ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise MetricsError(f"cannot read caFile {self._ca_file}: "
                                       f"{getattr(exc, 'strerror', None) or exc}") from None
                handlers.append(urllib.request.HTTPSHandler(context=context))
            self._opener = urllib.request.build_opener(*handlers)
        return self._opener

    def fetch(self, url: str, *, method: str = "GET", body: bytes | None = None,
              content_type: str | None = None, detail: Callable[[bytes], str] | None = None) -> bytes:
        """The body of a 2xx answer to ``method url``; anything else raises a
        MetricsError naming ``where`` and never a secret. ``detail`` picks the
        server's own words out of an error answer."""
        try:
            return self._fetch(url, method, body, content_type, detail)
        except MetricsError as exc:
            message = self.redact(str(exc))
        raise MetricsError(message)   # raised outside the handler: no chained original that may quote a secret

    def _fetch(self, url, method, body, content_type, detail) -> bytes:
        where = f"{self.kind} {origin(url)}"
        req = urllib.request.Request(url, data=body, method=method)
        try:
            headers = self._auth_headers()
        except MetricsError as exc:
            raise MetricsError(f"{where}: {exc}") from None
        for name, value in headers.items():
            req.add_header(name, value)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with self._open().open(req, timeout=self.timeout) as resp:
                data = resp.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            said = ""
            try:
                said = detail(exc.read(65536)) if detail else ""
            except (ValueError, OSError, AttributeError, TypeError):
                pass
            raise MetricsError(f"{where} answered {exc.code}: {said or exc.reason}") from None
        except http.client.HTTPException as exc:   # e.g. InvalidURL, whose text would echo the address
            raise MetricsError(f"{where} unreachable: {type(exc).__name__}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MetricsError(f"{where} unreachable: {getattr(exc, 'reason', exc)}") from None
        if len(data) > self.max_bytes:
            raise MetricsError(f"{where} answered more than {self.max_bytes} bytes")
        return data


def origin(url: str) -> str:
    """``scheme://host:port/path`` of ``url``: no user info, no query string (may hold a key)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def client_from_settings(kind: str, cfg: Mapping[str, Any], *, max_bytes: int = MAX_ANSWER) -> HttpClient:
    """The HttpClient of a provider's ``sluice.yaml`` block (tokenFile, basicAuth, headers, caFile, timeout)."""
    try:
        timeout = parse_duration(cfg.get("timeout", DEFAULT_TIMEOUT)) or DEFAULT_TIMEOUT
    except ValueError:
        timeout = DEFAULT_TIMEOUT   # the schema refuses a bad duration before this runs
    basic = cfg.get("basicAuth") or {}
    return HttpClient(kind, timeout=timeout, token_file=cfg.get("tokenFile"), username=basic.get("username"),
                      password_file=basic.get("passwordFile"), headers=cfg.get("headers"),
                      ca_file=cfg.get("caFile"), max_bytes=max_bytes)
